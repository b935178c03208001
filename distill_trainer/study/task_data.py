"""A GLUE task's rows as the study's steps use them: the domain object that fine-tuning teachers, extracting their
logits and distilling students take, so that they can be called from Python on any rows, not only through the
recipes' command-line options (`TaskArguments.task_data()` builds one from those)."""

from __future__ import annotations

from dataclasses import dataclass, field

import datasets

from .tasks import GlueTask

# The options of `TaskData.options` a student's question holds; the dev split's options are added where one is
# carved, so that the questions of runs from before it existed are unchanged.
QUESTION_TASK_OPTIONS = ("task", "max_train_rows", "max_eval_rows", "max_length")
DEV_OPTIONS = ("dev_rows", "dev_fraction", "dev_seed")


def row_limit_option(split: str) -> str:
    """The option that limits a split's rows, for the rows a run reads and the errors that name it.

    Args:
        split: The split's name: "train" is limited by `max_train_rows`, every other split by `max_eval_rows`.
    """
    return "max_train_rows" if split == "train" else "max_eval_rows"


@dataclass(frozen=True)
class TaskData:
    """A task and its rows: train (without the dev rows), the dev split where one is carved from train, validation.

    Args:
        task: The GLUE task (text columns, labels, metric).
        splits: "train", "validation" and, where carved, "dev" rows, each with the task's text columns and `label`.
        max_length: Tokens kept per input.
        labelled_rows: In the low-resource regime, how many leading rows of `splits["train"]` keep their labels
            (the dev rows already taken out); None: every row.
        dev_split: What a run records of the dev split (`TaskArguments.task_data`: the options that carved it and its
            rows' positions in the training file); None without one.
        options: How the rows were chosen (data source, row limits, dev options, `labelled_rows`): recorded with the
            runs and part of their questions, so a finished run is reused only for the same rows.
        loading: How models are loaded (`allow_pickle`, `trust_remote_code`).
    """

    task: GlueTask
    splits: dict[str, datasets.Dataset]
    max_length: int = 128
    labelled_rows: int | None = None
    dev_split: dict | None = None
    options: dict = field(default_factory=dict)
    loading: dict = field(default_factory=dict)

    def __post_init__(self):
        missing = [split for split in ("train", "validation") if split not in self.splits]
        if missing:
            raise ValueError(f"TaskData for {self.task.name} needs the splits {missing} (has {sorted(self.splits)}).")

    @property
    def train(self) -> datasets.Dataset:
        return self.splits["train"]

    @property
    def validation(self) -> datasets.Dataset:
        return self.splits["validation"]

    @property
    def dev(self) -> datasets.Dataset | None:
        """The dev split, where one is carved: what chooses and fits (None: validation does, as before v3)."""
        return self.splits.get("dev")

    @property
    def choosing(self) -> datasets.Dataset:
        """The rows early stopping and every choice are scored on: dev where there is one, else validation."""
        return self.validation if self.dev is None else self.dev

    @property
    def dev_options(self) -> dict:
        return {key: self.options[key] for key in DEV_OPTIONS if self.options.get(key) is not None}

    @property
    def question_options(self) -> dict:
        """The task section of a student's question (`questions.student_question`)."""
        return {key: self.options.get(key) for key in QUESTION_TASK_OPTIONS} | self.dev_options
