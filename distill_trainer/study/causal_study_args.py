"""What the causal study (issue 31) asks, as `distill-trainer causal-study --config FILE.yaml` reads it, checked
before any work; and its data folder, prepared once and reused only when `prepare-causal` wrote it with the same
options."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field

from .causal_data import SMOLLM2
from .causal_storage import read_record
from .causal_tasks import CAUSAL_SPLITS, CAUSAL_TASK_FILE, DEV_SEED, PAIR_TASKS, prepare_causal_task
from .runs import method_options
from .tasks import DEFAULT_GLUE

STUDY_METHODS = ("none", "single", "average", "weighted", "confidence", "fitted", "min_entropy")
K_GRID_METHODS = ("best_single", "average", "weighted", "confidence")
DENSE_METHODS = ("average", "weighted", "confidence", "min_entropy", "best_single")  # `fitted` is dev-fitted top-k


@dataclass
class CausalStudyArguments:
    task: str = field(default=None, metadata={"help": f"GLUE pair task as prompt -> completion: {list(PAIR_TASKS)}."})
    glue_data: str = field(default=DEFAULT_GLUE, metadata={"help": "GLUE: a Hub id or a folder of <task>/*.tsv."})
    study_dir: str = field(default="runs/causal", metadata={"help": "Runs go to <study_dir>/<task>/ (reused)."})
    max_train_rows: int | None = field(default=None, metadata={"help": "Training pairs kept (after dev is carved)."})
    max_dev_rows: int | None = field(default=None, metadata={"help": "Dev pairs kept (every choice and fit)."})
    max_validation_rows: int | None = field(default=None, metadata={"help": "Validation pairs kept (reported)."})
    max_length: int = field(default=128, metadata={"help": "Tokens kept per row."})
    base_model: str = field(default=SMOLLM2, metadata={"help": "The base teacher, and what task teachers tune."})
    include_base_teacher: bool = field(default=True, metadata={"help": "The base model is teacher 0, as it is."})
    teacher_learning_rates: list[float] = field(
        default_factory=lambda: [5e-5, 2e-4], metadata={"help": "One task teacher per learning rate."}
    )
    teacher_train_fractions: list[float] | None = field(
        default=None, metadata={"help": "Per task teacher: the leading share of training pairs it sees (1 = all)."}
    )
    teacher_epochs: float = field(default=2, metadata={"help": "Task teachers' most epochs (early-stopped on dev)."})
    teacher_patience: int = field(default=1, metadata={"help": "Epochs without a better dev NLL before stopping."})
    teacher_max_steps: int = field(default=-1, metadata={"help": "Task teachers' most steps (-1: epochs decide)."})
    student_layers: list[int] = field(
        default_factory=lambda: [0, 4, 8, 12, 16, 20, 24, 29],
        metadata={"help": "Base model layers the student keeps."},
    )
    methods: list[str] = field(
        default_factory=lambda: ["none", "single", "average", "weighted", "confidence", "fitted"],
        metadata={"help": f"Student methods at the largest k, each seed: {list(STUDY_METHODS)}."},
    )
    k_grid: list[int] = field(
        default_factory=lambda: [8, 32, 128], metadata={"help": "Top-k sizes (largest: extracted)."}
    )
    k_grid_methods: list[str] = field(
        default_factory=lambda: ["best_single", "average"], metadata={"help": f"Methods over k: {K_GRID_METHODS}."}
    )
    dense_methods: list[str] = field(
        default_factory=lambda: ["average"], metadata={"help": f"Live-teacher references: {DENSE_METHODS}."}
    )
    seeds: list[int] = field(default_factory=lambda: [42, 43, 44], metadata={"help": "Student seeds."})
    extract_batch_size: int = field(default=16, metadata={"help": "Rows per teacher forward pass in extraction."})
    logprobs_dtype: str = field(default="float16", metadata={"help": "Stored log-probabilities: float16|float32."})

    def __post_init__(self):  # everything checked before any work
        problems = []
        if self.task not in PAIR_TASKS:
            problems.append(f"task must be one of {list(PAIR_TASKS)}, got {self.task!r}")
        fractions = self.teacher_train_fractions or [1.0] * len(self.teacher_learning_rates or [])
        if not self.teacher_learning_rates or any(not lr > 0 for lr in self.teacher_learning_rates):
            problems.append(f"teacher_learning_rates must be > 0, at least one: {self.teacher_learning_rates}")
        elif len(fractions) != len(self.teacher_learning_rates) or any(not 0 < f <= 1 for f in fractions):
            problems.append(f"teacher_train_fractions must be in (0, 1], one per learning rate: {fractions}")
        for name, given, known in (
            ("methods", self.methods, STUDY_METHODS),
            ("k_grid_methods", self.k_grid_methods, K_GRID_METHODS),
            ("dense_methods", self.dense_methods, DENSE_METHODS),
        ):
            unknown = [method for method in given or [] if method not in known]
            if unknown:
                problems.append(f"{name} {unknown} are not among {list(known)}")
        if not self.k_grid or any(k < 1 for k in self.k_grid):
            problems.append(f"k_grid must hold k >= 1: {self.k_grid}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            problems.append(f"seeds must be distinct, at least one: {self.seeds}")
        if not self.student_layers:
            problems.append("student_layers must name the layers the student keeps")
        if problems:
            raise ValueError("causal study config: " + "; ".join(problems) + ".")
        self.teacher_train_fractions = fractions
        for method in self.methods:
            method_options("weighted" if method == "fitted" else method)

    @property
    def task_root(self) -> str:
        return os.path.join(self.study_dir, self.task)

    @property
    def row_limits(self) -> dict:
        return {"train": self.max_train_rows, "dev": self.max_dev_rows, "validation": self.max_validation_rows}


def prepare_or_reuse(args: CausalStudyArguments) -> str:
    """The study's data folder, `<study_dir>/<task>/data`: written by `prepare_causal_task` where absent; reused
    where its `causal_task.json` says it was made from the same task, GLUE data, dev seed and row limits; refused
    otherwise (another study's rows, or a folder the tool did not write), before any other work.

    Args:
        args: The study's arguments (task, GLUE data, `study_dir`, row limits).
    """
    folder = os.path.join(args.task_root, "data")
    if not os.path.exists(folder):
        prepare_causal_task(args.task, args.glue_data, folder, args.row_limits, DEV_SEED)
        return folder
    record = read_record(os.path.join(folder, CAUSAL_TASK_FILE))
    if record is None:
        raise ValueError(f"{folder} exists but prepare-causal did not write it (no {CAUSAL_TASK_FILE}): remove it.")
    asked = {"task": args.task, "data": args.glue_data, "seed": DEV_SEED}
    asked["rows"] = {
        split: min(record["pairs"][split], limit or record["pairs"][split]) for split, limit in args.row_limits.items()
    }
    differ = {key: (record.get(key), value) for key, value in asked.items() if record.get(key) != value}
    if differ:
        raise ValueError(
            f"{folder} was prepared with other options ({differ}: there, asked); it is not reused for this study. "
            "Use another study_dir, or remove that folder."
        )
    return folder


def data_fingerprint(folder: str) -> str:
    """SHA-256 over the data folder's split files: the rows every teacher and student question names.

    Args:
        folder: The data folder, holding `train.jsonl`, `dev.jsonl` and `validation.jsonl`.
    """
    digest = hashlib.sha256()
    for split in CAUSAL_SPLITS:
        with open(os.path.join(folder, f"{split}.jsonl"), "rb") as handle:
            digest.update(handle.read())
    return digest.hexdigest()
