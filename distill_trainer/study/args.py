"""The recipes' command-line arguments: dataclasses for `HfArgumentParser`, `--config FILE.yaml`, and
copies of `TrainingArguments` with some fields changed."""

from __future__ import annotations

import argparse
import logging
import sys
import types
import typing
from collections.abc import Container, Sequence
from dataclasses import dataclass, field, fields, replace

import datasets
import yaml
from transformers import HfArgumentParser, TrainingArguments

from ..config import fast_training_defaults
from .runs import method_options, method_temperatures
from .tasks import (
    DEFAULT_GLUE,
    GlueTask,
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

    @property
    def loading(self) -> dict:
        """How models are loaded: safetensors only and no remote code, unless the user opted in."""
        return {"allow_pickle": self.allow_pickle, "trust_remote_code": self.trust_remote_code}

    @property
    def glue_task(self) -> GlueTask:
        return get_task(self.task)

    def row_limit(self, split: str) -> int | None:
        return self.max_train_rows if split == "train" else self.max_eval_rows

    def load(self, split: str) -> datasets.Dataset:
        return load_task_split(self.glue_task, split, self.data, self.row_limit(split))


@dataclass
class StudentArguments:
    logit_dataset: str = field(
        default=None, metadata={"help": "Logit dataset: a folder from extract_logits.py or a Hub dataset id."}
    )
    student_model: str = field(
        default=None, metadata={"help": "Student checkpoint (Hub id or folder), or the teacher to cut layers from."}
    )
    student_layers: list[int] | None = field(
        default=None, metadata={"help": "Encoder layers to keep: 0 2 4 or 0,2,4 (default: all)."}
    )
    labelled_rows: int | None = field(
        default=None,
        metadata={
            "help": "Low-resource regime: only the first N training rows keep their labels; the others are an "
            "unlabelled transfer set the student learns from through the teachers' logits alone. With --fusion "
            "none (the baseline) the student trains on the N labelled rows only."
        },
    )
    check_against_data: bool = field(
        default=True,
        metadata={
            "help": "Refuse a logit dataset whose training rows are not the task's (--data) first rows, in order."
        },
    )

    def __post_init__(self):
        missing = [f"--{name}" for name in ("logit_dataset", "student_model") if not getattr(self, name)]
        if missing:
            raise ValueError(f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} required.")
        check_labelled_rows(self.labelled_rows)


def check_labelled_rows(labelled_rows: int | None) -> None:
    if labelled_rows is not None and labelled_rows < 1:
        raise ValueError(f"--labelled_rows must be at least 1, got {labelled_rows}.")


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
            "help": "Early stopping: evaluate each teacher after every epoch and stop once its validation score "
            "has not improved for this many epochs, keeping the best epoch (recorded in teacher_info.json)."
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
    labelled_rows: int | None = field(
        default=None,
        metadata={"help": "Low-resource regime for every student (see distill.py's --labelled_rows)."},
    )
    teachers_from: str | None = field(
        default=None,
        metadata={
            "help": "Take the teachers and logit dataset from this other study folder (trained there if missing) "
            "and link them into --study_dir: e.g. a low-resource study on the main study's teachers."
        },
    )
    study_dir: str = field(default="runs/study", metadata={"help": "Teachers, logits and students go here."})
    results_csv: str = field(default="results/master_results.csv", metadata={"help": "The results table."})

    def __post_init__(self):  # every method checked before any teacher trains
        method_temperatures(self.method_temperatures, self.methods)
        for method in self.methods:
            if method_options(method).get("teacher_index", -1) >= len(self.teachers):  # 'single-<i>' names one
                raise ValueError(f"--methods {method}: there are {len(self.teachers)} --teachers (counted from 0).")
        check_labelled_rows(self.labelled_rows)


def parse_recipe_args(
    dataclass_types: Sequence[type],
    argv: Sequence[str] | None = None,
    prog: str | None = None,
    description: str | None = None,
) -> tuple:
    """`HfArgumentParser` over `dataclass_types`, with `--config FILE.yaml` giving defaults that flags override.

    Training options start from `fast_training_defaults()` (length-grouped batches, bf16 where the hardware
    has it), below the config file and the command line: `--train_sampling_strategy random` or
    `--bf16 false` turns them off. The file's keys are the options' names (without --); one task config serves
    every recipe, so a key that this command has no option for is ignored with a warning naming it and the file.
    `prog` and `description` are what `--help` shows (default: the script's name, nothing).
    """
    parser = HfArgumentParser(dataclass_types, prog=prog, description=description, formatter_class=HelpFormatter)
    parser.add_argument(  # read below, before parsing; here so that --help shows it
        "--config",
        default=argparse.SUPPRESS,
        metavar="FILE.yaml",
        help="YAML file of option values (keys as the flags, without --); flags on the command line win.",
    )
    options = option_names(dataclass_types)
    lists = list_item_types(dataclass_types)
    parser.set_defaults(**{key: value for key, value in fast_training_defaults().items() if key in options})
    config_reader = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    config_reader.add_argument("--config")
    known, argv = config_reader.parse_known_args(list(sys.argv[1:] if argv is None else argv))
    if known.config is not None:
        parser.set_defaults(**config_values(known.config, options, lists, parser.prog))
    return parser.parse_args_into_dataclasses(args=split_list_values(argv, lists))


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """`--help` with each option's default (as `HfArgumentParser` shows them) and the description as written."""


def option_names(dataclass_types: Sequence[type]) -> set[str]:
    """The options `HfArgumentParser` makes of `dataclass_types`: one per field that `__init__` takes."""
    return {f.name for dtype in dataclass_types for f in fields(dtype) if f.init}


def list_item_types(dataclass_types: Sequence[type]) -> dict[str, type]:
    """The list-valued options and their item type: the fields typed `list[X]` (or `list[X] | None`), which
    `HfArgumentParser` gives `nargs="+"` and `type=X`."""
    items = {}
    for dtype in dataclass_types:
        hints = typing.get_type_hints(dtype)
        for f in fields(dtype):
            hint = hints[f.name]
            if typing.get_origin(hint) in (typing.Union, types.UnionType):
                members = [arg for arg in typing.get_args(hint) if arg not in (type(None), str)]
                hint = members[0] if len(members) == 1 else hint
            if f.init and typing.get_origin(hint) is list:
                items[f.name] = typing.get_args(hint)[0]
    return items


def config_values(path: str, options: set[str], lists: dict[str, type], prog: str) -> dict:
    """The option values of a YAML config file, list options as lists of their item type (argparse converts a
    string default through the option's type, but not a list, nor a comma-separated string into one)."""
    with open(path) as handle:
        values = yaml.safe_load(handle) or {}
    if not isinstance(values, dict):
        raise ValueError(f"{path} must be a mapping of option names to values, got {type(values).__name__}.")
    unused = sorted(set(values) - options)
    if unused:  # one task config serves every recipe: each takes the keys it knows
        logger.warning("%s ignores these keys of %s: %s", prog, path, unused)
    values = {key: value for key, value in values.items() if key in options}
    for key, item_type in lists.items():
        if values.get(key) is not None:
            value = values[key]
            items = value.split(",") if isinstance(value, str) else value if isinstance(value, list) else [value]
            values[key] = [item_type(item) for item in items]
    return values


def split_list_values(argv: list[str], lists: Container[str]) -> list[str]:
    """`--seeds 42,43,44` (the comma form users and configs know) as `--seeds 42 43 44`, which argparse
    gives list-valued options."""
    out, in_list = [], False
    for token in argv:
        if token.startswith("--"):
            name, _, value = token[2:].partition("=")
            in_list = name in lists
            out += [f"--{name}", *value.split(",")] if in_list and value else [token]
        else:
            out += token.split(",") if in_list else [token]
    return out


def with_overrides(args: TrainingArguments, cls: type = None, **overrides) -> TrainingArguments:
    """A copy of `args` (as `cls`, default its own class) with some fields changed, validated again."""

    if cls is None or cls is type(args):
        return replace(args, **overrides)
    values = {f.name: getattr(args, f.name) for f in fields(cls) if f.init and hasattr(args, f.name)}
    values.update(overrides)
    return cls(**values)


def for_trainer(args: TrainingArguments) -> TrainingArguments:
    """`args` without Hub pushing or token: the Trainer would push at every save, without our cards (the
    recipes publish once, after training, through `distill_trainer.study.hub`), and it pickles its arguments
    into `training_args.bin`, which must never hold a token."""
    return with_overrides(args, push_to_hub=False, hub_token=None) if args.push_to_hub or args.hub_token else args
