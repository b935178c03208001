"""GLUE task registry: text columns, label names, validation split, metric; loading from the Hub or a folder.

One table says everything the recipes need to know about a task, so adding a task is one line.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import datasets
import numpy as np
import pandas as pd

DEFAULT_GLUE = "nyu-mll/glue"
LOCAL_FORMATS = ("tsv", "csv", "parquet", "jsonl")


@dataclass(frozen=True)
class GlueTask:
    """What distinguishes one GLUE task from another, as far as training and scoring go.

    Args:
        name: The task's name in GLUE (the Hub config and the local folder), e.g. "sst2".
        text_columns: The input text columns, in the order a model reads them (one, or a pair).
        label_names: The labels in id order; one name ("score") for a regression task.
        validation_split: The split `validation` means (e.g. `validation_matched` for MNLI).
        metric: The study's headline metric: accuracy, f1, matthews_correlation or pearson.
        title: The task's name as the GLUE paper writes it (SST-2), for cards and tables.
    """

    name: str
    text_columns: tuple[str, ...]
    label_names: tuple[str, ...]
    validation_split: str
    metric: str  # the study's headline (primary) metric: accuracy, f1, matthews_correlation or pearson
    title: str = ""  # as the GLUE paper writes it (SST-2), for cards and tables

    def input_columns(self, data: datasets.Dataset) -> list[str]:
        """The columns that identify a row's inputs (`idx` and the texts): what a logit dataset's and a teacher
        record's fingerprints are computed over, so both name the same rows the same way.

        Args:
            data: One split's rows.
        """
        return [column for column in ("idx", *self.text_columns) if column in data.column_names]

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    @property
    def is_regression(self) -> bool:
        """One output (STS-B's similarity score): transformers' and distill-trainer's sign of regression."""
        return self.num_labels == 1

    @property
    def label_config(self) -> dict:
        """`from_pretrained` keyword arguments that give a head this task's labels, in order (one output named
        `score` and MSE for regression)."""
        return {
            "num_labels": self.num_labels,
            "id2label": dict(enumerate(self.label_names)),
            "label2id": {label: i for i, label in enumerate(self.label_names)},
            **({"problem_type": "regression"} if self.is_regression else {}),
        }


TASKS = {
    task.name: task
    for task in (
        GlueTask("cola", ("sentence",), ("unacceptable", "acceptable"), "validation", "matthews_correlation", "CoLA"),
        GlueTask("sst2", ("sentence",), ("negative", "positive"), "validation", "accuracy", "SST-2"),
        GlueTask("mrpc", ("sentence1", "sentence2"), ("not_equivalent", "equivalent"), "validation", "f1", "MRPC"),
        GlueTask("qqp", ("question1", "question2"), ("not_duplicate", "duplicate"), "validation", "f1", "QQP"),
        GlueTask("stsb", ("sentence1", "sentence2"), ("score",), "validation", "pearson", "STS-B"),
        GlueTask(
            "mnli",
            ("premise", "hypothesis"),
            ("entailment", "neutral", "contradiction"),
            "validation_matched",
            "accuracy",
            "MNLI",
        ),
        GlueTask("qnli", ("question", "sentence"), ("entailment", "not_entailment"), "validation", "accuracy", "QNLI"),
        GlueTask("rte", ("sentence1", "sentence2"), ("entailment", "not_entailment"), "validation", "accuracy", "RTE"),
        GlueTask(
            "wnli", ("sentence1", "sentence2"), ("not_entailment", "entailment"), "validation", "accuracy", "WNLI"
        ),
    )
}


def get_task(name: str) -> GlueTask:
    """The task registered under `name` in `TASKS`; a `ValueError` naming the known ones otherwise.

    Args:
        name: A GLUE task's name, e.g. "sst2".
    """
    if name not in TASKS:
        raise ValueError(f"Unknown task {name!r}; known GLUE tasks: {sorted(TASKS)}.")
    return TASKS[name]


def resolve_split(task: GlueTask, split: str) -> str:
    """`validation` means the task's own validation split (e.g. `validation_matched` for MNLI).

    Args:
        task: The GLUE task.
        split: A split name; "validation" is mapped, any other kept.
    """
    return task.validation_split if split == "validation" else split


def load_task_split(
    task: GlueTask, split: str, data: str = DEFAULT_GLUE, max_rows: int | None = None
) -> datasets.Dataset:
    """Load one split from a Hub dataset id (default `nyu-mll/glue`) or a folder `<data>/<task>/<split>.<ext>`.

    Local TSV/CSV files are read with NA parsing off: GLUE text such as MNLI's hypothesis `n/a` must stay text.
    `max_rows` keeps the first rows (file order), so subsets are reproducible.

    Args:
        task: The GLUE task.
        split: The split's name ("validation" means the task's own, `resolve_split`).
        data: A Hub dataset id or a folder holding `<task>/<split>.tsv|csv|parquet|jsonl`.
        max_rows: Keep only the first rows (None: all).
    """
    split = resolve_split(task, split)
    if os.path.isdir(data):
        dataset = _load_local(os.path.join(data, task.name), split)
    else:
        dataset = datasets.load_dataset(data, task.name, split=split)
    missing = [c for c in (*task.text_columns, "label") if c not in dataset.column_names]
    if missing:
        raise ValueError(
            f"{task.name}/{split} from {data!r} lacks the columns {missing} (has {dataset.column_names})."
        )
    return first_rows(dataset, max_rows)


def first_rows(dataset: datasets.Dataset, max_rows: int | None) -> datasets.Dataset:
    """The first `max_rows` rows (all of them for `None`): subsets that are the same on every run.

    Args:
        dataset: The rows.
        max_rows: How many leading rows to keep (None: all).
    """
    if max_rows is not None and max_rows < len(dataset):
        return dataset.select(range(max_rows))
    return dataset


def dev_positions(pool: int, fraction: float, max_rows: int, seed: int) -> np.ndarray:
    """The training rows (positions in file order, sorted) set aside as a dev split: `fraction` of the first `pool`
    rows or `max_rows` of them, whichever is fewer, drawn once by `seed`, so every run of a study carves the same
    rows. What a study chooses or fits (early stopping, teacher weights and temperatures, the "best" method) is
    scored there, never on the validation rows it reports.

    Args:
        pool: How many leading training rows the dev split is drawn from: all of them, or the labelled ones in the
            low-resource regime (a dev row's label is used, so it must be one of the labelled rows).
        fraction: At most this share of the pool.
        max_rows: At most this many rows.
        seed: The draw's seed.
    """
    count = min(max_rows, int(fraction * pool))
    if count < 1 or count >= pool:
        raise ValueError(
            f"A dev split of {count} of {pool} training rows (--dev_rows {max_rows}, --dev_fraction {fraction}) "
            "leaves no dev or no training rows: give a --dev_fraction in (0, 1) and --dev_rows >= 1."
        )
    return np.sort(np.random.default_rng(seed).choice(pool, size=count, replace=False))


def _load_local(folder: str, split: str) -> datasets.Dataset:
    """One split's table from a local folder: the first of `<split>.tsv|csv|parquet|jsonl` that exists, TSV/CSV read
    without NA parsing; a `ValueError` naming the file where it cannot be read or has no rows.

    Args:
        folder: The task's folder, `<data>/<task>`.
        split: The split's file name without extension (e.g. `validation_matched`).
    """
    for extension in LOCAL_FORMATS:
        path = os.path.join(folder, f"{split}.{extension}")
        if not os.path.isfile(path):
            continue
        try:
            if extension in ("tsv", "csv"):
                frame = pd.read_csv(path, sep="\t" if extension == "tsv" else ",", keep_default_na=False, quoting=0)
            elif extension == "parquet":
                frame = pd.read_parquet(path)
            else:
                frame = pd.read_json(path, lines=True)
        except UnicodeDecodeError as error:
            where = f"{error.reason} at byte {error.start}"
            raise ValueError(f"{path} is not UTF-8 text ({where}); save it as UTF-8.") from None
        except (pd.errors.EmptyDataError, ValueError) as error:
            raise ValueError(f"{path} could not be read as a {extension} table: {error}") from None
        if frame.empty:
            raise ValueError(f"{path} has no rows: a split needs at least one (its header alone is not enough).")
        return datasets.Dataset.from_pandas(frame, preserve_index=False)
    raise FileNotFoundError(f"No {split}.{{{','.join(LOCAL_FORMATS)}}} in {folder}.")


def task_texts(task: GlueTask, dataset: datasets.Dataset) -> list[tuple[str, ...]]:
    """Each row's text fields in the task's order (one for single-sentence tasks, two for pairs).

    Args:
        task: The GLUE task.
        dataset: Rows with the task's text columns.
    """
    columns = dataset.select_columns(list(task.text_columns))[:]
    return list(zip(*(columns[column] for column in task.text_columns), strict=False))


def compute_task_metrics(task: GlueTask, predictions: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Accuracy plus the task's headline metric (F1 of the positive class, MCC, or Pearson/Spearman).

    `predictions` may be logits `[n, n_labels]` or class ids `[n]`.

    Args:
        task: The GLUE task.
        predictions: Logits `[n, n_labels]` or class ids `[n]`; for a regression task, scores `[n]` or `[n, 1]`.
        labels: The gold labels `[n]`, in row order.
    """
    from scipy.stats import pearsonr, spearmanr
    from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

    predictions, labels = np.asarray(predictions), np.asarray(labels)
    if task.is_regression:
        scores, labels = predictions.reshape(-1), labels.astype(np.float64)
        return {
            "pearson": float(pearsonr(scores, labels)[0]),
            "spearman": float(spearmanr(scores, labels)[0]),
            "mse": float(np.mean((scores - labels) ** 2)),
        }
    if predictions.ndim == 2:
        predictions = predictions.argmax(-1)
    metrics = {"accuracy": float(accuracy_score(labels, predictions))}
    if task.metric == "f1":
        metrics["f1"] = float(f1_score(labels, predictions))
    if task.metric == "matthews_correlation":
        metrics["matthews_correlation"] = float(matthews_corrcoef(labels, predictions))
    return metrics


def metrics_for_trainer(task: GlueTask):
    """A `compute_metrics` callable for `Trainer` that scores with `compute_task_metrics`.

    Args:
        task: The GLUE task.
    """
    return lambda prediction: compute_task_metrics(task, prediction.predictions, prediction.label_ids)
