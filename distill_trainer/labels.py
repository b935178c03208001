"""Label checks shared by the trainer and the logit-dataset format: label values against the student's label space."""

from __future__ import annotations

from collections.abc import Sequence

import datasets
import numpy as np


def check_label_values(
    dataset: datasets.Dataset, num_labels: int, split: str, label_names: Sequence[str] = ()
) -> None:
    """Labels must be class ids or -100 (unlabelled): -1 or >= num_labels would fail inside torch at the
    first step, or worse, train on the wrong class. Regression labels (`num_labels == 1`) must be finite.

    Args:
        dataset: The split; without a `label`, `labels` or `label_names` column there is nothing to check.
        num_labels: The student's number of labels (1: regression).
        split: The split's name, for the error message.
        label_names: The Trainer's `label_names`, further label columns to look for.
    """
    columns = [name for name in ("label", "labels", *label_names) if name in dataset.column_names]
    if not columns:
        return
    labels = np.asarray(dataset[columns[0]][:])
    if num_labels == 1:
        bad = np.flatnonzero(~np.isfinite(labels.astype(np.float64)))
        if len(bad):
            raise ValueError(
                f"The {split} dataset's {columns[0]!r} has non-finite regression targets in rows {bad[:5].tolist()}."
            )
        return
    bad = np.flatnonzero((labels != -100) & ((labels < 0) | (labels >= num_labels)))
    if len(bad):
        raise ValueError(
            f"The {split} dataset's {columns[0]!r} has values outside [0, {num_labels}) and not -100 (unlabelled), "
            f"e.g. {labels[bad[0]]} in rows {bad[:5].tolist()} (GLUE's test splits use -1: predict on them, "
            "do not train or evaluate)."
        )
