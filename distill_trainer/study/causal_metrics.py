"""Per-token scores of a causal LM on completion rows: what its record states and what early stopping compares."""

from __future__ import annotations

import math

import datasets
import torch

from ..collator import DistillationDataCollator


def completion_metrics(
    model, rows: datasets.Dataset, tokenizer, batch_size: int = 8, per_row: list | None = None
) -> dict:
    """Per-token NLL and perplexity of the tokens `rows`' labels score, and the student's top-1 agreement with
    each stored teacher's top-1 on them (`top1_agreement`, teacher order), in one pass without gradients.

    Args:
        model: The causal LM to score.
        rows: Tokenized rows with `labels` (and the stored top-k, for the agreement).
        tokenizer: Pads the batches.
        batch_size: Rows per forward pass.
        per_row: Where given, `[summed NLL, scored tokens]` of each row is appended to it in row order, so that a
            report can bootstrap over rows and tokens rather than trust one mean.
    """
    collate = DistillationDataCollator(tokenizer)
    keep = [c for c in ("input_ids", "attention_mask", "labels", "teacher_topk_ids") if c in rows.column_names]
    rows = rows.select_columns(keep)
    device = next(model.parameters()).device
    nll, tokens, agree = 0.0, 0, None
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(rows), batch_size):
            batch = collate([rows[i] for i in range(start, min(start + batch_size, len(rows)))])
            logits = model(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device))
            logits = logits.logits.float()[:, :-1]
            gold = batch["labels"][:, 1:].to(device)
            scored = gold != -100
            token_nll = -torch.log_softmax(logits[scored], -1).gather(-1, gold[scored][:, None])[:, 0]
            nll += token_nll.sum().item()
            tokens += int(scored.sum())
            if per_row is not None:
                row_of = torch.arange(len(gold), device=device)[:, None].expand_as(gold)[scored]
                row_nll = torch.zeros(len(gold), dtype=torch.float64, device=device).index_add_(
                    0, row_of, token_nll.double()
                )
                per_row.extend(zip(row_nll.tolist(), scored.sum(dim=1).tolist(), strict=True))
            if "teacher_topk_ids" in batch:  # [B, n_teachers, S, k]: each teacher's most probable next token
                top1 = batch["teacher_topk_ids"][..., :-1, 0].to(device)
                hits = (top1 == logits.argmax(-1)[:, None]) & scored[:, None]
                agree = hits.sum(dim=(0, 2)) if agree is None else agree + hits.sum(dim=(0, 2))
    mean = nll / tokens
    metrics = {"eval_loss": mean, "perplexity": math.exp(mean), "eval_tokens": tokens}
    if agree is not None:
        metrics["top1_agreement"] = (agree.double() / tokens).tolist()
    return metrics


def split_metrics(model, rows: datasets.Dataset, tokenizer, split: str, batch_size: int) -> dict:
    """`<split>_nll` (per completion token), `_perplexity`, `_token_likelihood` (exp(-NLL), the `weighted`
    fusion's weight), `_tokens` and `_rows` of `model` on one split's tokenized rows (`completion_metrics`).

    Args:
        model: The causal LM to score.
        rows: One split's tokenized rows with `labels`.
        tokenizer: Pads the batches.
        split: The split's name, the keys' prefix.
        batch_size: Rows per forward pass.
    """
    found = completion_metrics(model, rows, tokenizer, batch_size)
    nll = found["eval_loss"]
    return {
        f"{split}_nll": nll,
        f"{split}_perplexity": math.exp(nll),
        f"{split}_token_likelihood": math.exp(-nll),
        f"{split}_tokens": found["eval_tokens"],
        f"{split}_rows": len(rows),
    }
