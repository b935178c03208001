"""The logit-dataset format: a `datasets.Dataset` whose `teacher_logits` column holds raw teacher logits.

Each row keeps the task's own columns (text, `label`, `idx`) and gains `teacher_logits` of shape `[n_teachers,
n_labels]` (temperature 1, in the *dataset's* label order). Metadata travels with the dataset in
`dataset.info.description` (as JSON), which survives `map`, `select`, `shuffle`, `save_to_disk` and `load_from_disk`,
so a logit dataset can always say which teachers made it, in what order, with which label names, on which inputs.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence

import datasets
import numpy as np

from .logit_metadata import (  # noqa: F401 (re-exported: imported from here by users)
    METADATA_KEY,
    LogitDatasetMetadata,
    TeacherInfo,
    read_metadata,
    write_metadata,
)

logger = logging.getLogger(__name__)


def input_fingerprint(dataset: datasets.Dataset, input_columns: Sequence[str]) -> str:
    """Order-sensitive SHA-256 of the given columns of every row (respects `select`/`shuffle` indices).

    Args:
        dataset: The rows, in their current order.
        input_columns: The columns to hash, in this order; a missing one is refused.
    """
    missing = [column for column in input_columns if column not in dataset.column_names]
    if missing:
        raise ValueError(
            f"Cannot fingerprint inputs: columns {missing} are not in the dataset {dataset.column_names}."
        )
    table = dataset.with_format("arrow", columns=list(input_columns))[:]
    digest = hashlib.sha256()
    for column in input_columns:
        digest.update(column.encode())
        for value in table.column(column).to_pylist():
            digest.update(repr(value).encode())
            digest.update(b"\x1f")
    return digest.hexdigest()


def row_keys(dataset: datasets.Dataset, input_columns: Sequence[str]) -> list[bytes]:
    """A short hash of each row's input columns: what a row's logits belong to.

    Args:
        dataset: The rows.
        input_columns: The input columns that identify a row.
    """
    table = dataset.with_format("arrow", columns=list(input_columns))[:]
    values = zip(*(table.column(column).to_pylist() for column in input_columns), strict=False)
    return [hashlib.blake2b(repr(row).encode(), digest_size=16).digest() for row in values]


def teacher_fingerprints(logits: np.ndarray, keys: Sequence[bytes] | None = None) -> list[str]:
    """One SHA-256 per teacher column. With `keys` (`row_keys`, format 2): over the sorted hashes of (row's
    inputs, that row's logits in label order), so shuffling or selecting whole rows keeps it, but logits moved
    to another row or another label, or edited, change it. Without (format 1): over the sorted values, which
    catches swapped teacher columns and edited values but not values moved between rows or labels.

    Args:
        logits: `[rows, n_teachers, n_labels]` teacher logits.
        keys: One `row_keys` key per row (format 2), or None (format 1).
    """
    logits = np.asarray(logits, dtype=np.float32)
    if keys is None:
        return [
            hashlib.sha256(np.sort(logits[:, t].reshape(-1)).tobytes()).hexdigest() for t in range(logits.shape[1])
        ]
    fingerprints = []
    for t in range(logits.shape[1]):
        rows = zip(keys, logits[:, t], strict=False)
        pairs = sorted(hashlib.blake2b(key + row.tobytes(), digest_size=16).digest() for key, row in rows)
        fingerprints.append(hashlib.sha256(b"".join(pairs)).hexdigest())
    return fingerprints


def check_teacher_columns(metadata: LogitDatasetMetadata, logits: np.ndarray, dataset: datasets.Dataset) -> None:
    """Refuse teacher columns that are not, in order, the ones the metadata describes (full datasets only; a
    subset is logged as unchecked).

    Args:
        metadata: The dataset's logit metadata; without `teacher_fingerprints` nothing is checked.
        logits: The dataset's `[rows, n_teachers, n_labels]` teacher logits; a row count other than the metadata's
            (a subset) is not checked.
        dataset: The rows, for their `row_keys` (format 2).
    """
    if not metadata.teacher_fingerprints:
        return
    if len(logits) != metadata.num_rows:
        logger.warning(
            "%d of the %d rows the teacher logits were extracted for: a subset's teacher columns cannot be checked "
            "against the metadata's fingerprints (swapped or edited columns); validate the whole dataset before "
            "selecting from it (validate_logit_dataset).",
            len(logits),
            metadata.num_rows,
        )
        return
    missing = [column for column in metadata.input_columns if column not in dataset.column_names]
    if metadata.format_version >= 2 and missing:  # the keys bind each row's logits to these inputs
        raise ValueError(
            f"The dataset lacks the input columns {missing} that its teacher logits are bound to (the metadata's "
            f"input_columns: {metadata.input_columns}), so which row each logit belongs to cannot be checked. Keep "
            "them: the Trainer leaves columns the model does not take out of its batches (remove_unused_columns)."
        )
    keys = row_keys(dataset, metadata.input_columns) if metadata.format_version >= 2 else None
    found = teacher_fingerprints(logits, keys)
    if found == metadata.teacher_fingerprints:
        return
    names = [teacher.name for teacher in metadata.teachers]
    if sorted(found) == sorted(metadata.teacher_fingerprints):
        order = [names[metadata.teacher_fingerprints.index(f)] for f in found]
        raise ValueError(
            f"The teacher columns are in the order {order} but the metadata lists {names}: fusion weights, "
            "teacher_index and cards would go to the wrong teacher. Re-extract or restore the order."
        )
    raise ValueError(
        f"The teacher logits differ from the ones extracted (teachers {names}): the column was edited after "
        "extraction (values changed, or moved to other rows or labels). Re-extract the logits."
    )


def teacher_logits_array(dataset: datasets.Dataset, column: str = "teacher_logits") -> np.ndarray:
    """The whole teacher column as a float32 `[rows, n_teachers, n_labels]` array, or a clear `ValueError`.

    Args:
        dataset: The logit dataset (one split).
        column: The teacher column's name.
    """
    if column not in dataset.column_names:
        raise ValueError(
            f"The dataset has no {column!r} column (columns: {dataset.column_names}). Attach teacher logits with "
            "distill_trainer.attach_teacher_logits, or set teacher_logits_column to the right name."
        )
    values = dataset.with_format("numpy", columns=[column])[:][column]
    if values.dtype == object or values.ndim != 3:
        shapes = sorted({np.shape(np.asarray(row, dtype=object)) for row in values[:1000]}) if len(values) else []
        raise ValueError(
            f"Column {column!r} must hold one [n_teachers, n_labels] array per row, all of the same shape; found "
            f"rows of shapes {shapes[:5]} (array shape {values.shape})."
        )
    return values.astype(np.float32, copy=False)


def check_logits_array(logits: np.ndarray, column: str = "teacher_logits") -> None:
    """Refuse NaN or infinite logits, naming the first offending rows.

    Args:
        logits: `[rows, n_teachers, n_labels]` teacher logits.
        column: The column's name, for the error message.
    """
    finite_rows = np.isfinite(logits).reshape(len(logits), -1).all(axis=1)
    if not finite_rows.all():
        bad = np.flatnonzero(~finite_rows)
        raise ValueError(
            f"Column {column!r} has NaN or infinite logits in {len(bad)} rows (first rows: {bad[:5].tolist()})."
        )


def attach_teacher_logits(
    dataset: datasets.Dataset,
    logits: np.ndarray,
    teachers: Sequence[TeacherInfo | str],
    label_names: Sequence[str],
    input_columns: Sequence[str],
    column: str = "teacher_logits",
    task: str | None = None,
    fitted: dict | None = None,
    fit_split: str = "validation",
) -> datasets.Dataset:
    """Return `dataset` with a `[n_teachers, n_labels]` logit column and the metadata that identifies it, so that
    every student reading the column can refuse logits of other rows, other text or other labels.

    Args:
        dataset: the rows the teachers ran on, in that order.
        logits: `[rows, n_teachers, n_labels]` raw logits at T = 1, in the dataset's row and label order
            (regression: `[rows, n_teachers, 1]` predictions).
        teachers: one `TeacherInfo` or name per teacher, in the logits' order (names, never local paths).
        label_names: the label order of the last dimension; students must share it.
        input_columns: the columns fingerprinted (e.g. `["sentence"]`), so the logits can later be checked
            against the data they are used with.
        column: the new column's name.
        task: the task's name, for cards and tables.
        fitted: fits on a labelled split to store with the metadata (`fitting.validation_fits`).
        fit_split: which split `fitted` comes from ("dev": carved from training rows; "validation").
    """
    logits = np.asarray(logits, dtype=np.float32)
    teachers = [teacher if isinstance(teacher, TeacherInfo) else TeacherInfo(name=teacher) for teacher in teachers]
    if logits.ndim != 3:
        raise ValueError(f"logits must be [rows, n_teachers, n_labels], got shape {logits.shape}.")
    if logits.shape[0] != len(dataset):
        raise ValueError(f"logits have {logits.shape[0]} rows but the dataset has {len(dataset)}.")
    if logits.shape[1] != len(teachers):
        raise ValueError(f"logits hold {logits.shape[1]} teachers but {len(teachers)} teachers were named.")
    if logits.shape[2] != len(label_names):
        raise ValueError(f"logits have {logits.shape[2]} labels but label_names has {len(label_names)}.")
    check_logits_array(logits, column)
    if column in dataset.column_names:
        dataset = dataset.remove_columns(column)
    feature = datasets.Array2D(shape=logits.shape[1:], dtype="float32")
    dataset = dataset.add_column(column, logits.tolist(), feature=feature)
    metadata = LogitDatasetMetadata(
        teachers=teachers,
        label_names=list(label_names),
        input_columns=list(input_columns),
        num_rows=len(dataset),
        input_fingerprint=input_fingerprint(dataset, input_columns),
        column=column,
        task=task,
        teacher_fingerprints=teacher_fingerprints(logits, row_keys(dataset, input_columns)),
        fitted=fitted,
        fit_split=fit_split,
    )
    warn_repeated_teachers(metadata.teachers, metadata.teacher_fingerprints)
    return write_metadata(dataset, metadata)


def warn_repeated_teachers(teachers: list[TeacherInfo], fingerprints: list[str]) -> None:
    """Log teachers that are given twice (one name, or the same values in two columns): fusion would count one
    teacher twice (`average` weighs it 2/3 of three), which is rarely what was meant.

    Args:
        teachers: The teachers in column order.
        fingerprints: Their columns' fingerprints, in the same order.
    """
    names = [teacher.name for teacher in teachers]
    for kind, values in (("name", names), ("values", fingerprints)):
        repeated = sorted({names[i] for i, value in enumerate(values) if values.count(value) > 1})
        if repeated:
            logger.warning("Teachers given twice (the same %s): %s; fusion counts each column.", kind, repeated)


def _is_default_label_name(index: int, name: str) -> bool:
    """Whether `name` is transformers' placeholder `LABEL_<index>`, which says nothing about the label.

    Args:
        index: The label's id.
        name: Its name in `id2label`.
    """
    return name == f"LABEL_{index}"


def check_label_names(expected: Sequence[str], found: Sequence[str], where: str) -> None:
    """Refuse two label spaces that differ in size or (case-insensitively) in names or order.

    Args:
        expected: The logit dataset's label names, in order.
        found: The other label space's names, in order.
        where: What the other label space is, for the error message.
    """
    if [name.lower() for name in expected] != [name.lower() for name in found]:
        raise ValueError(
            f"Label spaces differ: the logit dataset has labels {list(expected)} but {where} has {list(found)}. "
            "Re-extract the logits in this label order, or fix the model's id2label."
        )


def validate_logit_dataset(
    dataset: datasets.Dataset,
    column: str = "teacher_logits",
    num_labels: int | None = None,
    model_label_names: Sequence[str] | None = None,
    reference: datasets.Dataset | None = None,
) -> LogitDatasetMetadata | None:
    """Check a logit dataset before any training step is spent on it; returns its metadata, if any.

    Checks: one `[n_teachers, n_labels]` shape, finite values, the student's `num_labels` and `id2label` (unless
    `LABEL_i`), the metadata's shape and teacher-column order, and `reference`'s inputs in order when given.

    Args:
        dataset: the logit dataset (one split).
        column: the teacher column's name.
        num_labels: the student's `num_labels`, when known.
        model_label_names: the student's labels in id order (`id2label`), when known.
        reference: the task's data the logits must have been computed on (same rows, order and text).

    Raises:
        ValueError: naming the first problem found, so bad logits fail before the first step.
    """
    logits = teacher_logits_array(dataset, column)
    check_logits_array(logits, column)
    n_teachers, n_labels = logits.shape[1:]
    if num_labels is not None and n_labels != num_labels:
        raise ValueError(
            f"Column {column!r} has {n_labels} labels per teacher but the student has num_labels={num_labels}."
        )
    metadata = read_metadata(dataset)
    if metadata is None:
        if reference is not None:
            raise ValueError("The logit dataset carries no metadata, so it cannot be checked against the data.")
        return None
    if len(metadata.teachers) != n_teachers or len(metadata.label_names) != n_labels:
        raise ValueError(
            f"Column {column!r} holds {n_teachers} teachers x {n_labels} labels but its metadata lists "
            f"{len(metadata.teachers)} teachers x {len(metadata.label_names)} labels: the column was changed "
            "after extraction."
        )
    if model_label_names is not None and not all(
        _is_default_label_name(i, name) for i, name in enumerate(model_label_names)
    ):
        check_label_names(metadata.label_names, model_label_names, "the student's config.id2label")
    label_feature = dataset.features.get("label")
    if isinstance(label_feature, datasets.ClassLabel):  # the dataset's own label ids must mean the same classes
        check_label_names(metadata.label_names, label_feature.names, "the dataset's own ClassLabel 'label' feature")
    check_teacher_columns(metadata, logits, dataset)
    if reference is not None:
        check_logits_match_inputs(metadata, reference)
    return metadata


def check_logits_match_inputs(metadata: LogitDatasetMetadata, data: datasets.Dataset) -> None:
    """Refuse a logit dataset whose fingerprinted inputs are not exactly `data`'s rows, in order.

    Args:
        metadata: The logit dataset's metadata (row count, input columns and their fingerprint).
        data: The task's rows the logits must have been computed on.
    """
    if len(data) != metadata.num_rows:
        raise ValueError(
            f"This logit dataset was computed on {metadata.num_rows} rows but the data has {len(data)}: "
            "it belongs to another split or subset."
        )
    if input_fingerprint(data, metadata.input_columns) != metadata.input_fingerprint:
        raise ValueError(
            f"This logit dataset does not belong to this data: the columns {metadata.input_columns} differ "
            "(other rows, another order, or other text). Re-extract the logits on this data."
        )
