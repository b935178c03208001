"""Helpers for the causal-LM tests: a tiny random Llama, a 64-token word-level tokenizer, a learnable next-token
problem with prompt masking, and top-k teachers for it."""

from __future__ import annotations

import datasets
import numpy as np
import torch
from helpers import tiny_config
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from distill_trainer import DistillationConfig, attach_teacher_topk, topk_from_logits

VOCAB = 64
PROMPT = 2  # the first PROMPT tokens of every row are a prompt: labels -100 (completion-only training)


def causal_tokenizer(name: str = "tiny-words", swap: bool = False, padding_side: str = "right"):
    """A word-level tokenizer over `<pad>`, `<unk>`, w2..w63; `swap` exchanges two ids (another vocabulary)."""
    vocab = {"<pad>": 0, "<unk>": 1, **{f"w{i}": i for i in range(2, VOCAB)}}
    if swap:
        vocab["w2"], vocab["w3"] = 3, 2
    model = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    model.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(
        tokenizer_object=model, pad_token="<pad>", unk_token="<unk>", name_or_path=name, padding_side=padding_side
    )


def tiny_llama(seed: int = 0, vocab_size: int = VOCAB, context: int = 32) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=context,
        pad_token_id=0,
    )
    return LlamaForCausalLM(config)


def counting_rows(n: int, seed: int = 0) -> list[list[int]]:
    """Rows of 6 to 12 tokens counting up by a per-row step (mod 62, ids 2..63): learnable from the context."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        start, step, length = int(rng.integers(62)), int(rng.integers(1, 4)), int(rng.integers(6, 13))
        rows.append([2 + (start + step * i) % 62 for i in range(length)])
    return rows


def causal_dataset(n: int = 48, seed: int = 0) -> datasets.Dataset:
    rows = counting_rows(n, seed)
    labels = [[-100] * PROMPT + row[PROMPT:] for row in rows]
    return datasets.Dataset.from_dict(
        {"input_ids": rows, "attention_mask": [[1] * len(r) for r in rows], "labels": labels}
    )


def oracle_logits(row: list[int], noise: float, seed: int) -> torch.Tensor:
    """`[len(row), VOCAB]` logits of a teacher that knows the next token (position t: token t + 1), plus noise."""
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(len(row), VOCAB, generator=generator) * noise
    for t in range(len(row) - 1):
        logits[t, row[t + 1]] += 6.0
    return logits


def with_topk(dataset: datasets.Dataset, k: int = 8, n_teachers: int = 2, tokenizer=None, **options):
    """`dataset` with top-k columns of `n_teachers` noisy oracles (teacher j: noise 0.5 + j)."""
    ids, logprobs = [], []
    for index, row in enumerate(dataset["input_ids"]):
        teachers = [topk_from_logits(oracle_logits(row, 0.5 + j, 1000 * j + index), k) for j in range(n_teachers)]
        ids.append(np.stack([t[0].numpy() for t in teachers]))
        logprobs.append(np.stack([t[1].numpy() for t in teachers]))
    names = [f"oracle-{j}" for j in range(n_teachers)]
    return attach_teacher_topk(dataset, ids, logprobs, names, tokenizer or causal_tokenizer(), **options)


def causal_config(tmp_path, **overrides) -> DistillationConfig:
    """`tiny_config` for the tiny causal LM: batches of 8, T = 1, alpha = 0.5; `overrides` on top."""
    return tiny_config(tmp_path, **{"per_device_train_batch_size": 8, "temperature": 1.0, "alpha": 0.5, **overrides})
