"""The recipes' command-line arguments: dataclasses for `HfArgumentParser`, `--config FILE.yaml`, and
copies of `TrainingArguments` with some fields changed."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, fields, replace

import datasets
import numpy as np
from transformers import TrainingArguments

from .parsing import parse_recipe_args  # noqa: F401 (re-exported: the recipes import it from here)
from .results_table import check_results_csv
from .runs import method_options, method_temperatures
from .task_data import DEV_OPTIONS, TaskData, row_limit_option
from .tasks import (
    DEFAULT_GLUE,
    GlueTask,
    dev_positions,
    get_task,
    load_task_split,
)

logger = logging.getLogger(__name__)


@dataclass
class TaskArguments:
    task: str = field(
        default="sst2",
        metadata={
            "help": "GLUE task: cola, sst2, mrpc, qqp, stsb, mnli, qnli, rte, wnli; or causal_lm (token-level, "
            "with --text_column or --prompt_column/--completion_column)."
        },
    )
    data: str = field(
        default=DEFAULT_GLUE,
        metadata={
            "help": "Hub dataset id (default nyu-mll/glue) or a folder of <task>/<split>.tsv|csv|parquet|jsonl."
        },
    )
    max_train_rows: int | None = field(default=None, metadata={"help": "Keep only the first N training rows."})
    max_eval_rows: int | None = field(default=None, metadata={"help": "Keep only the first N validation rows."})
    max_length: int = field(default=128, metadata={"help": "Truncate tokenized inputs to this many tokens."})
    trust_remote_code: bool = field(
        default=False, metadata={"help": "Run model code from the checkpoint's repo (only for checkpoints you trust)."}
    )
    allow_pickle: bool = field(
        default=False,
        metadata={"help": "Load checkpoints that have only pickle weights (pytorch_model.bin; only ones you trust)."},
    )
    labelled_rows: int | None = field(
        default=None,
        metadata={
            "help": "Low-resource regime: only the first N training rows keep their labels (teachers train on them "
            "alone; a dev split is carved from them); the others are an unlabelled transfer set the students learn "
            "from through the teachers' logits alone. With --fusion none (the baseline) a student trains on the "
            "labelled rows only."
        },
    )
    dev_rows: int | None = field(
        default=None,
        metadata={
            "help": "Carve a dev split from the training rows: at most this many, and at most --dev_fraction of them "
            "(of the --labelled_rows when given), drawn by --dev_seed. No teacher or student trains on it; early "
            "stopping, `weighted`'s scores, fitted weights and temperatures are scored or fitted there, so the "
            "validation split is only reported. Default: no dev split (all of those use validation)."
        },
    )
    dev_fraction: float = field(default=0.1, metadata={"help": "The dev split's most share of the training rows."})
    dev_seed: int = field(default=0, metadata={"help": "The seed that draws the dev split's rows."})

    def __post_init__(self):
        for option in ("labelled_rows", "max_train_rows", "max_eval_rows"):
            if getattr(self, option) is not None and getattr(self, option) < 1:
                raise ValueError(f"--{option} must be at least 1, got {getattr(self, option)}.")
        if self.dev_rows is not None and not (self.dev_rows >= 1 and 0 < self.dev_fraction < 1):
            raise ValueError(
                f"--dev_rows must be >= 1 and --dev_fraction in (0, 1), got {self.dev_rows}, {self.dev_fraction}."
            )

    @property
    def dev_options(self) -> dict:
        """The dev split's settings, recorded with every teacher, logit dataset and student (empty without one)."""
        return {} if self.dev_rows is None else {name: getattr(self, name) for name in DEV_OPTIONS}

    def dev_positions(self, train_rows: int) -> np.ndarray | None:
        """The dev split's rows among the first `train_rows` training rows (None without a dev split); refuses
        `labelled_rows` that leave no unlabelled row (the dev rows are drawn from the labelled ones).

        Args:
            train_rows: How many training rows were read (after `max_train_rows`); the dev rows are drawn from the
                first `labelled_rows` of them where that is given.
        """
        if self.labelled_rows is not None and self.labelled_rows >= train_rows:
            raise ValueError(
                f"--labelled_rows {self.labelled_rows} leaves no unlabelled rows of the {train_rows} training rows "
                f"of {self.task} (--max_train_rows {self.max_train_rows}); give fewer than {train_rows}."
            )
        if self.dev_rows is None:
            return None
        return dev_positions(self.labelled_rows or train_rows, self.dev_fraction, self.dev_rows, self.dev_seed)

    def task_data(self) -> TaskData:
        """The task's rows as the study's functions take them, loaded once: train without the dev rows, the dev
        split where `dev_rows` carves one, validation; with what a run records of them."""
        rows, dev, splits = self.carved_training_rows()
        splits["validation"] = self.load("validation")
        dev_split = None
        if dev is not None:
            dev_split = {
                **self.dev_options,
                "labelled_rows": self.labelled_rows,
                "max_train_rows": self.max_train_rows,
            }
            dev_split["positions"] = dev.tolist()
        names = ("task", "data", "max_train_rows", "max_eval_rows", "max_length", "labelled_rows", *self.dev_options)
        return TaskData(
            task=self.glue_task,
            splits=splits,
            max_length=self.max_length,
            labelled_rows=self.labelled_training_rows(len(rows)),
            dev_split=dev_split,
            options={name: getattr(self, name) for name in names},
            loading=self.loading,
        )

    def labelled_training_rows(self, train_rows: int | None = None) -> int | None:
        """How many of the training rows `load("train")` returns keep their labels (the leading ones): the
        `labelled_rows` less the dev rows carved from them; None outside the low-resource regime. Refuses
        `labelled_rows` that leave no unlabelled row (`dev_positions` does).

        Args:
            train_rows: The training rows before the dev split is carved (None: counted from the data).
        """
        if self.labelled_rows is None:
            return None
        if train_rows is None:
            train_rows = len(load_task_split(self.glue_task, "train", self.data, self.max_train_rows))
        dev = self.dev_positions(train_rows)
        return self.labelled_rows - (0 if dev is None else len(dev))

    @property
    def loading(self) -> dict:
        """How models are loaded: safetensors only and no remote code, unless the user opted in."""
        return {"allow_pickle": self.allow_pickle, "trust_remote_code": self.trust_remote_code}

    @property
    def glue_task(self) -> GlueTask:
        return get_task(self.task)

    def row_limit(self, split: str) -> int | None:
        """The row limit of a split: `max_train_rows` for "train", `max_eval_rows` for the others (None: every row).

        Args:
            split: The split's name ("train", "validation", ...).
        """
        return getattr(self, row_limit_option(split))

    def carved_training_rows(self) -> tuple[datasets.Dataset, np.ndarray | None, dict[str, datasets.Dataset]]:
        """The training rows as read, the dev split's positions among them (None without one), and the splits
        they make: "train" (without the dev rows, in file order) and, where carved, "dev"."""
        rows = load_task_split(self.glue_task, "train", self.data, self.max_train_rows)
        dev = self.dev_positions(len(rows))
        if dev is None:
            return rows, None, {"train": rows}
        return rows, dev, {"train": rows.select(np.setdiff1d(np.arange(len(rows)), dev)), "dev": rows.select(dev)}

    def load(self, split: str) -> datasets.Dataset:
        """One split of the task: "train" (without the dev rows, in file order), "dev" (the rows carved from
        train, see `dev_positions`) or "validation" (the task's own).

        Args:
            split: "train", "dev" or one of the task's own splits ("validation").
        """
        if split not in ("train", "dev"):
            return load_task_split(self.glue_task, split, self.data, self.row_limit(split))
        splits = self.carved_training_rows()[2]
        if split not in splits:
            raise ValueError(f"{self.task} has no dev split: give --dev_rows to carve one from the training rows.")
        return splits[split]


@dataclass
class StudentArguments:
    logit_dataset: str = field(
        default=None, metadata={"help": "Logit dataset: an extract_logits.py folder, or a Hub id (owner/name[@rev])."}
    )
    student_model: str = field(
        default=None, metadata={"help": "Student checkpoint (Hub id or folder), or the teacher to cut layers from."}
    )
    student_layers: list[int] | None = field(
        default=None, metadata={"help": "Encoder layers to keep: 0 2 4 or 0,2,4 (default: all)."}
    )
    early_stopping_patience: int | None = field(
        default=None,
        metadata={
            "help": "Evaluate on the logit dataset's dev split and stop once the score has not improved for this "
            "many epochs (--num_train_epochs is then the most), keeping the best weights (needs a dev split)."
        },
    )
    check_against_data: bool = field(
        default=True,
        metadata={
            "help": "Refuse a logit dataset whose training rows are not the task's (--data) first rows, in order."
        },
    )

    @property
    def options(self) -> dict:
        """`distill_student`'s keyword arguments."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def __post_init__(self):
        missing = [f"--{name}" for name in ("logit_dataset", "student_model") if not getattr(self, name)]
        if missing:
            raise ValueError(f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} required.")


@dataclass
class StudyArguments:
    teachers: list[str] = field(
        default_factory=lambda: ["all-MiniLM-L6-v2", "sklearn_tfidf"],
        metadata={"help": "Teachers to fine-tune on the task (Hub ids, folders, or sklearn_tfidf), spaces or commas."},
    )
    teacher_epochs: float = field(
        default=1.0,
        metadata={"help": "Fine-tuning epochs of each transformer teacher (the most, with --teacher_patience)."},
    )
    teacher_patience: int | None = field(
        default=None,
        metadata={
            "help": "Early stopping: evaluate each teacher after every epoch and stop once its dev score (validation "
            "without a dev split) has not improved for this many epochs, keeping the best (in teacher_info.json)."
        },
    )
    teacher_collapse_retries: int = field(
        default=2,
        metadata={
            "help": "A transformer teacher that predicts one class on >= 95%% of validation rows (while the labels "
            "are less skewed) is fine-tuned again at a third of the learning rate, up to this many times."
        },
    )
    teacher_learning_rate: float | None = field(
        default=None,
        metadata={"help": "Learning rate of the transformer teachers (default: --learning_rate, the students' rate)."},
    )
    student_model: str = field(
        default="all-MiniLM-L6-v2", metadata={"help": "Pretrained model the student is cut from."}
    )
    student_layers: list[int] | None = field(
        default_factory=lambda: [0, 2, 4], metadata={"help": "Encoder layers the student keeps."}
    )
    methods: list[str] = field(
        default_factory=lambda: ["none", "single", "average", "weighted", "min_entropy", "gating"],
        metadata={
            "help": "Student methods: a fusion ('single' runs once per teacher; 'none' is the baseline), "
            "'<fusion>_to_<fusion>' for a curriculum (e.g. average_to_confidence), '+calibrated' to calibrate the "
            "teachers (e.g. average+calibrated)."
        },
    )
    method_temperatures: list[str] = field(
        default_factory=list,
        metadata={
            "help": "A temperature per method, as METHOD=T (e.g. gating=3 average=9); other methods use "
            "--temperature. The reference study's fifth idea: each fusion may want its own T."
        },
    )
    seeds: list[int] = field(
        default_factory=lambda: [42], metadata={"help": "Seeds for every student: 42 43 or 42,43."}
    )
    student_patience: int | None = field(
        default=None,
        metadata={
            "help": "Early stopping for every student on the dev split (see distill.py's --early_stopping_patience; "
            "needs --dev_rows)."
        },
    )
    teachers_from: str | None = field(
        default=None,
        metadata={
            "help": "Take the teachers and logit dataset from this other study folder (trained there if missing; "
            "a logit dataset of other teachers or rows there is refused, never replaced) and link them into "
            "--study_dir: e.g. a student of another size on the same teachers and logits."
        },
    )
    study_dir: str = field(default="runs/study", metadata={"help": "Teachers, logits and students go here."})
    results_csv: str = field(default="results/master_results.csv", metadata={"help": "The results table."})

    def __post_init__(self):  # every method, seed and the results table checked before any teacher trains
        method_temperatures(self.method_temperatures, self.methods)
        bad_seeds = [seed for seed in self.seeds if not 0 <= seed < 2**32]
        if bad_seeds or not self.seeds:
            raise ValueError(f"--seeds must be one or more integers in [0, 2**32), got {self.seeds}.")
        check_results_csv(self.results_csv)
        for method in self.methods:
            if method_options(method).get("teacher_index", -1) >= len(self.teachers):  # 'single-<i>' names one
                raise ValueError(f"--methods {method}: there are {len(self.teachers)} --teachers (counted from 0).")


def with_overrides(args: TrainingArguments, cls: type = None, **overrides) -> TrainingArguments:
    """A copy of `args` (as `cls`, default its own class) with some fields changed, validated again.

    Args:
        args: The training arguments to copy.
        cls: The class of the copy (e.g. plain `TrainingArguments` for a teacher, from the students'
            `DistillationConfig`): it takes the fields of `args` that it has; None: the class of `args`.
        **overrides: The fields to change, by name.
    """

    if cls is None or cls is type(args):
        return replace(args, **overrides)
    values = {f.name: getattr(args, f.name) for f in fields(cls) if f.init and hasattr(args, f.name)}
    values.update(overrides)
    return cls(**values)


def for_trainer(args: TrainingArguments) -> TrainingArguments:
    """`args` without Hub pushing or token: the Trainer would push at every save, without our cards (the
    recipes publish once, after training, through `distill_trainer.study.hub`), and it pickles its arguments
    into `training_args.bin`, which must never hold a token.

    Args:
        args: The recipe's training arguments (left unchanged).
    """
    return with_overrides(args, push_to_hub=False, hub_token=None) if args.push_to_hub or args.hub_token else args
