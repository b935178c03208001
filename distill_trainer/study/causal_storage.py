"""Sparse storage for the causal study (issue 31): smaller-k top-k datasets cut from one extraction at the largest k,
what each costs on disk, and `fitted` weights for per-token teachers, fitted on the dev split's stored top-k."""

from __future__ import annotations

import json
import os

import datasets
import numpy as np

from ..topk import (
    TOPK_IDS_COLUMN,
    TOPK_LOGPROBS_COLUMN,
    attach_teacher_topk,
    check_topk_columns,
    read_topk_metadata,
)

FIT_ITERATIONS = 200  # EM steps for the mixture weights: the dev likelihood changes by < 1e-9 long before


def topk_arrays(rows: datasets.Dataset) -> tuple[list[np.ndarray], list[np.ndarray], int]:
    """One split's stored top-k as one `[n_teachers, len(row), k]` ids and log-probabilities array per row, and k.

    Args:
        rows: One split of a top-k logit dataset (its top-k columns and metadata).
    """
    metadata = read_topk_metadata(rows)
    read = check_topk_columns(rows, metadata.vocab_size)
    sizes = read.lengths * read.n_teachers * read.k
    shapes = [(read.n_teachers, length, read.k) for length in read.lengths]
    ends = np.cumsum(sizes)[:-1]
    ids = [part.reshape(shape) for part, shape in zip(np.split(read.ids, ends), shapes, strict=True)]
    logprobs = [part.reshape(shape) for part, shape in zip(np.split(read.logprobs, ends), shapes, strict=True)]
    return ids, logprobs, read.k


def truncate_topk(logit_data: datasets.DatasetDict, k: int, tokenizer) -> datasets.DatasetDict:
    """The top-k dataset a teacher extraction at `k` gives, cut from one at a larger k: each position's first `k`
    of the stored ids and log-probabilities. Exact because extraction stores them sorted by log-probability,
    highest first (`torch.topk`), so the study extracts once, at the largest k of its grid.

    Args:
        logit_data: A top-k `DatasetDict` (every split with the top-k columns and metadata).
        k: Tokens kept per position, at most the stored k.
        tokenizer: The teachers' tokenizer (its vocabulary must be the one the metadata records).
    """
    cut = {}
    for split, rows in logit_data.items():
        metadata = read_topk_metadata(rows)
        if not 1 <= k <= metadata.k:
            raise ValueError(f"k={k} must be between 1 and the stored k ({metadata.k}): a top-k cannot grow.")
        ids, logprobs, _ = topk_arrays(rows)
        plain = rows.remove_columns([TOPK_IDS_COLUMN, TOPK_LOGPROBS_COLUMN])
        cut[split] = attach_teacher_topk(
            plain,
            [row[..., :k] for row in ids],
            [row[..., :k] for row in logprobs],
            metadata.teachers,
            tokenizer,
            logprobs_dtype=metadata.logprobs_dtype,
            vocab_size=metadata.vocab_size,
            task=metadata.task,
        )
        fresh = read_topk_metadata(cut[split])
        fresh.tokenizer, fresh.extra = metadata.tokenizer, dict(metadata.extra)  # the extraction's, as recorded
        cut[split].info.description = fresh.to_json()
    return datasets.DatasetDict(cut)


def folder_bytes(folder: str) -> int:
    """The bytes of the files under `folder` (what a stored top-k costs on disk).

    Args:
        folder: The folder to measure (every file below it counts).
    """
    return sum(os.path.getsize(os.path.join(root, name)) for root, _, names in os.walk(folder) for name in names)


def gold_probabilities(rows: datasets.Dataset) -> np.ndarray:
    """`[scored positions, n_teachers]`: each teacher's probability of the next token at every position whose label
    is learnt, from its stored top-k; a token outside the top-k gets the tail's mass spread evenly over the
    `vocab - k` tokens outside it (the assumption the sparse loss makes, `tokens.bucket_log_probs`).

    Args:
        rows: One split of a top-k logit dataset, with `labels`.
    """
    metadata = read_topk_metadata(rows)
    ids, logprobs, k = topk_arrays(rows)
    found = []
    for row_ids, row_logprobs, labels in zip(ids, logprobs, rows["labels"][:], strict=True):
        nxt = np.asarray(labels[1:] + [-100])  # position t predicts token t + 1
        scored = np.flatnonzero(nxt != -100)
        probs = np.exp(row_logprobs[:, scored].astype(np.float64))  # [n, positions, k]
        hit = row_ids[:, scored] == nxt[scored][None, :, None]
        tail = np.clip(1.0 - probs.sum(-1), 1e-12, None) / max(metadata.vocab_size - k, 1)
        found.append(np.where(hit.any(-1), (probs * hit).sum(-1), tail).T)
    return np.concatenate(found)


def fit_mixture_weights(rows: datasets.Dataset, iterations: int = FIT_ITERATIONS) -> list[float]:
    """`fitted` for per-token teachers: the teacher weights (summing to 1) whose mixture of next-token probabilities
    gives the dev rows' completions the highest likelihood, by EM from equal weights. The trainer's own `fitted`
    fits class logits and has no per-token form; the study trains `weighted` with these weights instead.

    Args:
        rows: The logit dataset's dev split (never validation: the final numbers stay unseen by every choice).
        iterations: EM steps.
    """
    probs = gold_probabilities(rows)
    weights = np.full(probs.shape[1], 1.0 / probs.shape[1])
    for _ in range(iterations):
        mixed = probs * weights
        weights = (mixed / mixed.sum(1, keepdims=True)).mean(0)
    return weights.tolist()


def top1_agreement(rows: datasets.Dataset) -> list[list[float]]:
    """`[n_teachers, n_teachers]`: how often two teachers' most probable next tokens agree, over the positions whose
    label is learnt (how much the study's teachers differ; 1 on the diagonal).

    Args:
        rows: One split of a top-k logit dataset, with `labels`.
    """
    ids, _, _ = topk_arrays(rows)
    top1 = []
    for row_ids, labels in zip(ids, rows["labels"][:], strict=True):
        scored = np.flatnonzero(np.asarray(labels[1:] + [-100]) != -100)
        top1.append(row_ids[:, scored, 0])
    top1 = np.concatenate(top1, axis=1)
    return (top1[:, None, :] == top1[None, :, :]).mean(-1).tolist()


def read_record(path: str) -> dict | None:
    """A JSON record (`save_json`'s), or None where there is none.

    Args:
        path: The JSON file.
    """
    if not os.path.isfile(path):
        return None
    with open(path) as handle:
        return json.load(handle)
