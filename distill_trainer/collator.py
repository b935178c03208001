"""Batch collation that pads the text and carries the teacher-logit column through as one tensor."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from transformers import DataCollatorWithPadding, PreTrainedTokenizerBase, default_data_collator


class DistillationDataCollator:
    """Pad text features like `DataCollatorWithPadding` and stack teacher logits into `[batch, T, L]` float32.

    The teacher column is taken out before padding because tokenizers' `pad` only knows sequence
    features; rows without the column (an eval split without teachers) collate as plain text batches.
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
        batch = self.text_collator([{k: v for k, v in feature.items() if k != column} for feature in features])
        if teacher_rows is not None:
            batch[column] = stack_teacher_rows(teacher_rows, column)
        return batch


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
