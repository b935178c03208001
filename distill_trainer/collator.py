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
    Left-padded causal rows also get `position_ids` counting from each row's first real token (as `generate`
    does): a model with absolute positions (GPT-2) would otherwise read a row at positions shifted by its padding,
    learning and scoring it differently in every batch.

    Args:
        tokenizer: pads the text features (the trainer's `processing_class`).
        teacher_logits_column: the dense teacher column's name (`DistillationConfig.teacher_logits_column`).
        pad_to_multiple_of: as in `DataCollatorWithPadding`.
        token_labels: whether `labels` holds one label per token (a causal LM) rather than one per row (a class, or a
            regression score stored as `[score]`); `DistillationTrainer` passes what its student is. None: per token
            where every row's labels are as long as its `input_ids`.
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase | None = None,
        teacher_logits_column: str = "teacher_logits",
        pad_to_multiple_of: int | None = None,
        token_labels: bool | None = None,
    ):
        self.teacher_logits_column, self.token_labels = teacher_logits_column, token_labels
        self.tokenizer = tokenizer  # as transformers' collators keep it (the trainer's vocabulary check reads it)
        self.text_collator = (
            DataCollatorWithPadding(tokenizer, pad_to_multiple_of=pad_to_multiple_of, return_tensors="pt")
            if tokenizer is not None
            else default_data_collator
        )

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """Collate rows into a batch: padded text, `[batch, n_teachers, n_labels]` teacher logits, per-token columns
        padded.

        Args:
            features: The rows, as the dataset gives them; the teacher column in all of them or in none.
        """
        column = self.teacher_logits_column
        with_teachers = sum(column in feature for feature in features)
        if with_teachers not in (0, len(features)):
            raise ValueError(f"Only {with_teachers} of {len(features)} rows in this batch have a {column!r} value.")
        teacher_rows = [feature[column] for feature in features] if with_teachers else None
        per_token = [key for key in TOKEN_PADDING if key in features[0] and np.ndim(features[0][key]) > 0]
        if "labels" in per_token and not self.labels_per_token(features):
            per_token.remove("labels")  # a row's label(s): the text collator stacks them
        held = {key: [feature[key] for feature in features] for key in per_token}
        batch = self.text_collator(
            [{k: v for k, v in feature.items() if k != column and k not in held} for feature in features]
        )
        if teacher_rows is not None:
            batch[column] = stack_teacher_rows(teacher_rows, column)
        left = getattr(getattr(self.text_collator, "tokenizer", None), "padding_side", "right") == "left"
        for key, rows in held.items():
            dtype = np.float32 if key == TOPK_LOGPROBS_COLUMN else np.int64
            padded = pad_along_sequence(
                [np.asarray(row) for row in rows], batch["input_ids"].shape[1], key, left, dtype
            )
            if key == "labels":  # no position predicts a row's first token
                starts = [(i, padded.shape[1] - len(row) if left else 0) for i, row in enumerate(rows) if len(row)]
                padded[[i for i, _ in starts], [start for _, start in starts]] = -100
            batch[key] = padded
        if left and held and "attention_mask" in batch:
            batch["position_ids"] = (batch["attention_mask"].long().cumsum(-1) - 1).clamp(min=0)
        return batch

    def labels_per_token(self, features: list[dict[str, Any]]) -> bool:
        """Whether the rows' list-valued `labels` are per-token labels, to be padded along the sequence.

        Args:
            features: The batch's rows.
        """
        if self.token_labels is not None:
            return self.token_labels
        return all(len(feature["labels"]) == len(feature.get("input_ids", ())) for feature in features)


def pad_along_sequence(rows: list[np.ndarray], length: int, key: str, left: bool, dtype) -> torch.Tensor:
    """Stack `[seq_i]` or `[n_teachers, seq_i, k]` rows into `[batch, (n_teachers,) length, (k)]` of `dtype`, padding
    the sequence axis with `key`'s padding value on the left or the right, as the tokenizer padded `input_ids`.
    One allocation, each row copied in once.

    Args:
        rows: One array per row, `[seq_i]` (labels) or `[n_teachers, seq_i, k]` (top-k); none longer than `length`.
        length: The padded `input_ids`' length.
        key: The column's name, which picks its padding value in `TOKEN_PADDING`.
        left: Pad on the left (the tokenizer's `padding_side` is left) rather than on the right.
        dtype: The numpy dtype of the result.
    """
    axis = 0 if rows[0].ndim == 1 else 1
    if any(row.shape[axis] > length for row in rows):
        raise ValueError(f"{key!r} has rows longer than their input_ids ({length} tokens after padding).")
    shape = list(rows[0].shape)
    shape[axis] = length
    out = np.full((len(rows), *shape), TOKEN_PADDING[key], dtype=dtype)
    for target, row in zip(out, rows, strict=False):
        span = slice(length - row.shape[axis], length) if left else slice(0, row.shape[axis])
        target[(slice(None),) * axis + (span,)] = row
    return torch.from_numpy(out)


def stack_teacher_rows(rows: list[Any], column: str = "teacher_logits") -> torch.Tensor:
    """Stack per-row `[n_teachers, n_labels]` logits (lists, arrays or tensors) into one float32 tensor.

    Args:
        rows: One `[n_teachers, n_labels]` value per row, all of one shape.
        column: The column's name, for the error message.
    """
    try:
        stacked = np.stack([np.asarray(row, dtype=np.float32) for row in rows])
    except ValueError as error:
        shapes = sorted({np.shape(np.asarray(row, dtype=object)) for row in rows})
        raise ValueError(
            f"Rows of {column!r} have different shapes {shapes}; each must be [n_teachers, n_labels]."
        ) from error
    return torch.from_numpy(stacked)


class ArrowRows(torch.utils.data.Dataset):
    """A `datasets.Dataset`'s rows for a `DataLoader`, read a batch at a time from Arrow: the top-k teacher columns
    as `[n_teachers, seq_len, k]` numpy arrays cut from Arrow's buffers, not as the nested Python lists `datasets`
    builds (those cost about 20 times as long per batch: on a GPU, more than a small student's step), the other
    columns as the Python values `datasets` gives. Column reads (`rows["input_ids"]`, `column_names`) go to the
    dataset, so length-grouped samplers work on it as on the dataset.

    Args:
        dataset: Rows with `teacher_topk_ids` and `teacher_topk_logprobs` (any order, `select`, `shuffle`).
    """

    def __init__(self, dataset):
        self.dataset, self.arrow = dataset, dataset.with_format("arrow")
        self.column_names = dataset.column_names

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index):
        return self.dataset[index] if isinstance(index, str) else self.__getitems__([index])[0]

    def __getitems__(self, indices) -> list[dict[str, Any]]:
        table = self.arrow[list(indices)]
        columns = {
            name: nested_arrays(table.column(name)) if name in TOPK_COLUMNS else table.column(name).to_pylist()
            for name in table.column_names
        }
        return [{name: values[i] for name, values in columns.items()} for i in range(table.num_rows)]


TOPK_COLUMNS = (TOPK_IDS_COLUMN, TOPK_LOGPROBS_COLUMN)


def nested_arrays(column) -> list[np.ndarray]:
    """`list<list<list<value>>>` rows -> one `[n_teachers, seq_len_i, k]` array per row (views of one buffer).

    Args:
        column: A pyarrow (chunked) array of a top-k column, `list<list<list<value>>>`.
    """
    rows = column.combine_chunks()
    teachers = rows.value_lengths().to_numpy()
    per_teacher = rows.flatten()
    positions = per_teacher.value_lengths().to_numpy()
    inner = per_teacher.flatten()
    k = inner.value_lengths()[0].as_py() if len(inner) else 0
    values = inner.flatten().to_numpy(zero_copy_only=False)
    lengths = positions[np.concatenate([[0], np.cumsum(teachers)[:-1]])] if len(teachers) else positions
    lengths = np.where(teachers > 0, lengths, 0)
    pieces = np.split(values, np.cumsum(teachers * lengths * k)[:-1])
    return [piece.reshape(n, length, k) for piece, n, length in zip(pieces, teachers, lengths, strict=False)]


class ArrowRowsMixin:
    """For a `Trainer` subclass: once `remove_unused_columns` has kept the columns a batch needs, rows with top-k
    teacher columns are read through `ArrowRows` (arrays from Arrow's buffers) by the training and eval loaders."""

    def _remove_unused_columns(self, dataset, description: str | None = None):
        """The parent's column removal, then the dataset wrapped in `ArrowRows` when it has top-k teacher columns.

        Args:
            dataset: The split being prepared for a data loader.
            description: The split's description, passed on to the parent.
        """
        dataset = super()._remove_unused_columns(dataset, description)
        return ArrowRows(dataset) if TOPK_IDS_COLUMN in getattr(dataset, "column_names", ()) else dataset
