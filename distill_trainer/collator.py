"""Batch collation that pads the text and carries the teacher columns through as tensors: dense class logits
stacked, per-token top-k and token labels padded like `input_ids` (on the tokenizer's padding side)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from transformers import DataCollatorWithPadding, PreTrainedTokenizerBase, default_data_collator

from .topk import TOPK_IDS_COLUMN, TOPK_LOGPROBS_COLUMN

# Per-token columns: how each is padded along the sequence (an empty top-k slot has log-probability -inf).
TOKEN_PADDING = {"labels": -100, TOPK_IDS_COLUMN: 0, TOPK_LOGPROBS_COLUMN: float("-inf")}


class DistillationDataCollator:
    """Pad text features like `DataCollatorWithPadding` and stack teacher logits into `[batch, T, L]` float32.

    The teacher column is taken out before padding because tokenizers' `pad` only knows sequence
    features; rows without the column (an eval split without teachers) collate as plain text batches.

    Causal-LM rows (token `labels`, top-k `[n_teachers, seq_len, k]`) are padded to the padded `input_ids`' length
    on the tokenizer's padding side: labels with -100, top-k ids with 0 and log-probabilities with -inf, so padded
    positions are never learnt from. Each row's first label becomes -100: no position predicts the first token,
    and so the Trainer's count of learnt positions (`num_items_in_batch`) is the same on either padding side.

    Args:
        tokenizer: pads the text features (the trainer's `processing_class`).
        teacher_logits_column: the dense teacher column's name (`DistillationConfig.teacher_logits_column`).
        pad_to_multiple_of: as in `DataCollatorWithPadding`.
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase | None = None,
        teacher_logits_column: str = "teacher_logits",
        pad_to_multiple_of: int | None = None,
    ):
        self.teacher_logits_column = teacher_logits_column
        self.text_collator = (
            DataCollatorWithPadding(tokenizer, pad_to_multiple_of=pad_to_multiple_of, return_tensors="pt")
            if tokenizer is not None
            else default_data_collator
        )

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        column = self.teacher_logits_column
        with_teachers = sum(column in feature for feature in features)
        if with_teachers not in (0, len(features)):
            raise ValueError(f"Only {with_teachers} of {len(features)} rows in this batch have a {column!r} value.")
        teacher_rows = [feature[column] for feature in features] if with_teachers else None
        per_token = [key for key in TOKEN_PADDING if key in features[0] and np.ndim(features[0][key]) > 0]
        held = {key: [feature[key] for feature in features] for key in per_token}
        batch = self.text_collator(
            [{k: v for k, v in feature.items() if k != column and k not in held} for feature in features]
        )
        if teacher_rows is not None:
            batch[column] = stack_teacher_rows(teacher_rows, column)
        left = getattr(getattr(self.text_collator, "tokenizer", None), "padding_side", "right") == "left"
        for key, rows in held.items():
            rows = [np.array(row, dtype=np.float32 if key == TOPK_LOGPROBS_COLUMN else np.int64) for row in rows]
            if key == "labels":
                for row in rows:
                    row[:1] = -100
            batch[key] = pad_along_sequence(rows, batch["input_ids"].shape[1], TOKEN_PADDING[key], left, key)
        return batch


def pad_along_sequence(rows: list[np.ndarray], length: int, value, left: bool, key: str) -> torch.Tensor:
    """Stack `[seq_i]` or `[n_teachers, seq_i, k]` rows into `[batch, (n_teachers,) length, (k)]`, padding the
    sequence axis with `value` on the left or the right, as the tokenizer padded `input_ids`."""
    axis = 0 if rows[0].ndim == 1 else 1
    if any(row.shape[axis] > length for row in rows):
        raise ValueError(f"{key!r} has rows longer than their input_ids ({length} tokens after padding).")
    padded = []
    for row in rows:
        widths = [(0, 0)] * row.ndim
        widths[axis] = (length - row.shape[axis], 0) if left else (0, length - row.shape[axis])
        padded.append(np.pad(row, widths, constant_values=value))
    return torch.from_numpy(np.stack(padded))


def stack_teacher_rows(rows: list[Any], column: str = "teacher_logits") -> torch.Tensor:
    """Stack per-row `[n_teachers, n_labels]` logits (lists, arrays or tensors) into one float32 tensor."""
    try:
        stacked = np.stack([np.asarray(row, dtype=np.float32) for row in rows])
    except ValueError as error:
        shapes = sorted({np.shape(np.asarray(row, dtype=object)) for row in rows})
        raise ValueError(
            f"Rows of {column!r} have different shapes {shapes}; each must be [n_teachers, n_labels]."
        ) from error
    return torch.from_numpy(stacked)
