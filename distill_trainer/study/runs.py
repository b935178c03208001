"""What a run leaves on disk, with one definition each, and how the study names runs.

A teacher folder holds a `TeacherRecord` (`teacher_info.json`), a student folder a `StudentResult`
(`eval_results.json`). Every writer and reader (recipes, study runner, cards, analysis) goes through these
dataclasses, so a renamed or missing field fails loudly, naming the file and the field, instead of a
`KeyError` somewhere downstream. Files carry a `format_version`; files from before it are version 1.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import ClassVar

from ..config import DistillationConfig, native_bf16_instructions
from ..fusion import FUSION_REGISTRY
from .packaged_models import HUB_IDS

VALIDATION_LOGITS_FILE = "validation_logits.npy"  # a student's logits on the validation rows, for the analyses
DEV_LOGITS_FILE = "dev_logits.npy"  # and on the dev rows: the dev score that choices rest on, checkable from them
LOGITS_FILE_BY_SPLIT = {"validation": VALIDATION_LOGITS_FILE, "dev": DEV_LOGITS_FILE}  # written and checked alike
VALIDATION_NLL_FILE = "validation_nll.npy"  # a causal student's [summed NLL, tokens] per validation row
TEACHER_INFO_FILE = "teacher_info.json"
EVAL_RESULTS_FILE = "eval_results.json"
RECORD_FORMAT_VERSION = 1


def write_atomically(path: str, write: Callable[[str], None]) -> None:
    """`write(partial_path)`, then rename into `path`: a crash or a kill never leaves a half-written file (or
    folder) under the final name, and readers see the old version or the new one, never a mix.

    Args:
        path: The final file or folder name.
        write: Writes the file or folder at the temporary path it is given.
    """
    partial = f"{os.path.normpath(path)}.partial-{os.getpid()}"
    write(partial)
    os.replace(partial, path)


def save_json(data: dict, path: str) -> None:
    """Write `data` as indented JSON with sorted keys to `path`, atomically (`write_atomically`).

    Args:
        data: JSON-serializable values.
        path: The file to write.
    """

    def write(partial: str) -> None:
        with open(partial, "w") as handle:
            json.dump(data, handle, indent=2, sort_keys=True)

    write_atomically(path, write)


@dataclass
class RunRecord:
    """A JSON record in a run folder: `save(folder)` writes it atomically, `load(folder_or_file)` reads it back."""

    FILE: ClassVar[str]

    def save(self, folder: str) -> str:
        """Write the record (with `format_version`) as `<folder>/<FILE>`, atomically; returns its path.

        Args:
            folder: The run's folder (it must exist).
        """
        path = os.path.join(folder, self.FILE)
        save_json({"format_version": RECORD_FORMAT_VERSION, **asdict(self)}, path)
        return path

    @classmethod
    def load(cls, folder_or_file: str):
        """The record in a run folder (or the JSON file itself); a `FileNotFoundError` or `ValueError` naming the file
        where it is missing, from a newer version, or has unknown or missing fields.

        Args:
            folder_or_file: The run's folder (its `FILE` is read) or the record's file.
        """
        path = folder_or_file if os.path.isfile(folder_or_file) else os.path.join(folder_or_file, cls.FILE)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path} not found: not a folder written by the recipes (they write {cls.FILE}).")
        with open(path) as handle:
            data = json.load(handle)
        if not isinstance(data, dict):
            raise ValueError(f"{path} is not a {cls.__name__}: it holds a JSON {type(data).__name__}, not an object.")
        version = data.pop("format_version", 1)
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise ValueError(f"{path} has format_version {version!r}: it must be a whole number >= 1.")
        if version > RECORD_FORMAT_VERSION:
            raise ValueError(
                f"{path} has format_version {version}; this distill-trainer reads up to "
                f"{RECORD_FORMAT_VERSION}: upgrade it."
            )
        known = {f.name for f in fields(cls)}
        required = {f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING}
        unknown, missing = sorted(set(data) - known), sorted(required - set(data))
        if unknown or missing:
            raise ValueError(
                f"{path} is not a {cls.__name__}: "
                + "; ".join(
                    part
                    for part in (
                        f"unknown fields {unknown}" if unknown else "",
                        f"missing fields {missing}" if missing else "",
                    )
                    if part
                )
            )
        return cls(**data)


def device_name(args) -> str:
    """What trained a run, from its `TrainingArguments`: 'cpu' or the accelerator's name (e.g. 'NVIDIA H200'),
    with ' with bf16 autocast' (or fp16) where training ran under it: the machine and precision behind a run's
    training time, and behind its numbers.

    Args:
        args: The run's `TrainingArguments` (`device`, `bf16`, `fp16`).
    """
    import torch

    name = torch.cuda.get_device_name(args.device) if args.device.type == "cuda" else args.device.type
    precision = "bf16" if args.bf16 else "fp16" if args.fp16 else None
    return f"{name} with {precision} autocast" if precision else name


def processor_name(cpuinfo: str = "/proc/cpuinfo") -> str | None:
    """The CPU's model name, with its native bf16 instructions (' (avx512_bf16)' or ' (amx_bf16)', as
    `config.native_bf16_instructions` reads them) where it has them: sessions may land on different machines,
    and a run's record says which one trained it, so that an audit can check that the runs of one comparison
    shared a machine type (float32 results move at rounding level between CPUs, bf16 speed a lot). None where
    `/proc/cpuinfo` cannot be read.

    Args:
        cpuinfo: The file to read (the tests pass their own).
    """
    try:
        with open(cpuinfo) as handle:
            text = handle.read()
    except OSError:
        return None
    model = re.search(r"^model name\s*:\s*(.+)$", text, re.MULTILINE)
    name = model.group(1).strip() if model else "unknown CPU"
    instructions = native_bf16_instructions(text)
    return f"{name} ({instructions})" if instructions else name


TRAINING_KEYS = (
    "num_train_epochs",
    "max_steps",
    "learning_rate",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "weight_decay",
    "lr_scheduler_type",
)


def training_settings(config, task_options: dict, student: dict) -> dict:
    """The settings besides method, T, alpha and seed that make a student what it is (its data, model, schedule),
    recorded with it so that a finished run is not reused under others. Precision and device are left out:
    a study may go on on another machine (both are recorded in `device`).

    Args:
        config: The run's `DistillationConfig`.
        task_options: How its rows were chosen (`TaskData.options`: `max_train_rows`, `max_length`).
        student: Its `student_model` and `student_layers`.
    """
    return {
        **{key: getattr(config, key) for key in TRAINING_KEYS},
        "max_train_rows": task_options.get("max_train_rows"),
        "max_length": task_options["max_length"],
        "student_model": student["student_model"],
        "student_layers": student["student_layers"],
    }


def settings_that_differ(recorded: dict | None, asked: dict) -> dict:
    """The recorded settings (as the JSON record holds them) that differ from `asked`: why a finished run or
    teacher is not reused. A record from before settings were kept has none to compare.

    Args:
        recorded: The settings a record holds (None: a record from before settings were kept).
        asked: The settings of the run about to be made (`training_settings`, `runner.teacher_settings`).
    """
    asked = json.loads(json.dumps(asked))
    return {key: value for key, value in (recorded or {}).items() if key in asked and asked[key] != value}


def is_collapsed(majority_prediction_share: float, majority_label_share: float) -> bool:
    """Predicts nearly one class (>= 95% of validation rows) although the labels are not that skewed (the
    commonest label under 80%): a fine-tuning failure (e.g. too high a learning rate), not a teacher.

    Args:
        majority_prediction_share: Share of validation rows predicted as the commonest predicted class, 0 to 1.
        majority_label_share: Share of validation rows whose label is the commonest label, 0 to 1.
    """
    return majority_prediction_share >= 0.95 and majority_label_share < 0.8


def display_name(path_or_id: str) -> str:
    """A name for cards and metadata: a Hub id as is, a local folder by its last component (no local paths).

    Args:
        path_or_id: A local folder or file, or a Hub id.
    """
    return os.path.basename(os.path.normpath(path_or_id)) if os.path.exists(path_or_id) else path_or_id


def default_teacher_name(model_name_or_path: str, task: str) -> str:
    """A trained teacher's name where none is given: `<model>-<task>`, without a Hub id's owner (cards link a name
    shaped like a Hub id, and `owner/model-task` is no repo).

    Args:
        model_name_or_path: What the teacher was fine-tuned from (Hub id, folder or short name).
        task: The task's name.
    """
    return f"{display_name(model_name_or_path).split('/')[-1]}-{task}"


def base_model_name(name: str) -> str:
    """What a card's `base_model` should say: the Hub id behind a packaged short name, else `display_name`.

    Args:
        name: The model as the study names it: a short name, a Hub id or a folder.
    """
    return HUB_IDS.get(name) or display_name(name)


def short_teacher_name(name: str, task: str) -> str:
    """A teacher's name without the `-<task>` suffix `train_teacher` gives it, so that the study's methods
    ("single: all-mpnet-base-v2") line up across tasks in tables and plots.

    Args:
        name: The teacher's recorded name, e.g. "all-mpnet-base-v2-sst2".
        task: The task whose suffix is removed.
    """
    return name.removesuffix(f"-{task}")


@dataclass
class TeacherRecord(RunRecord):
    """What `train_teacher` leaves beside a teacher: its name, base model and validation score."""

    FILE: ClassVar[str] = TEACHER_INFO_FILE
    name: str
    base_model: str
    task: str
    metric: str
    validation_score: float
    metrics: dict = field(default_factory=dict)
    train_rows: int | None = None
    train_runtime: float | None = None
    learning_rate: float | None = None
    epochs_trained: float | None = None  # with early stopping: where training stopped
    best_epoch: float | None = None  # with early stopping: the epoch whose weights were kept
    majority_prediction_share: float | None = None  # share of validation rows predicted as the commonest class
    majority_label_share: float | None = None  # share of validation rows whose label is the commonest label
    collapsed_learning_rates: list[float] | None = None  # earlier attempts that collapsed (see `run_study`)
    device: str | None = None  # what trained it (`device_name`): train_runtime means little without it
    processor: str | None = None  # the CPU of the machine that trained it (`processor_name`)
    training: dict | None = None  # what the study asked (`runner.teacher_settings`); reused only where it matches
    question: dict | None = None  # `run_question`: the whole configuration and inputs; reused only for the same

    validation_fingerprint: str | None = None  # the validation rows `validation_score` was measured on
    validation_rows: int | None = None  # how many (a card enters GLUE's model-index only for its whole split)
    labelled_rows: int | None = None  # low-resource regime: it learnt from these leading training rows alone
    max_length: int | None = None  # the tokens per input it was trained and scored at (None: TF-IDF, or unrecorded)
    dev_score: float | None = None  # on the dev split carved from training rows: what chooses among teachers
    dev_metrics: dict | None = None
    dev_split: dict | None = None  # its options and rows (`TaskArguments.task_data`)

    @property
    def collapsed(self) -> bool:
        """See `is_collapsed`; a record without the shares (a regression teacher) never is."""
        if self.majority_prediction_share is None or self.majority_label_share is None:
            return False
        return is_collapsed(self.majority_prediction_share, self.majority_label_share)

    @property
    def method(self) -> str:
        """The teacher's row name in the study's tables."""
        return f"teacher: {short_teacher_name(self.name, self.task)}"


@dataclass
class StudentResult(RunRecord):
    """What `distill_student` leaves beside a student: how it was trained and what it scored."""

    FILE: ClassVar[str] = EVAL_RESULTS_FILE
    task: str
    metric: str
    score: float
    fusion: str
    temperature: float
    alpha: float
    seed: int
    metrics: dict = field(default_factory=dict)
    alpha_schedule: str = "constant"  # with *_end: alpha / temperature moved over training (DistillationConfig)
    alpha_end: float | None = None
    temperature_schedule: str = "constant"
    temperature_end: float | None = None
    teacher_index: int | None = None
    fusion_weights: list[float] | None = None  # as used: given, from the metadata, or fitted ('fitted')
    teacher_temperatures: list[float] | None = None  # calibrate_teachers: each teacher's fitted T
    curriculum_fusion: str | None = None
    calibrate_teachers: bool = False
    fitted_weights: list[float] | None = None  # weights a strategy with fits_weights used (e.g. 'fitted')
    labelled_rows: int | None = None  # low-resource regime: training rows whose labels were used
    teachers: list[dict] | None = None  # the logit dataset's teachers, as `TeacherInfo` fields
    logit_dataset: str | None = None
    train_rows: int | None = None
    student_model: str | None = None
    student_layers: str | None = None
    num_parameters: int | None = None
    eval_rows: int | None = None
    max_length: int | None = None
    train_runtime: float | None = None
    device: str | None = None  # what trained it (`device_name`)
    processor: str | None = None  # the CPU of the machine that trained it (`processor_name`)
    training: dict | None = None  # `training_settings` (records from before `question` was kept)
    question: dict | None = None  # `run_question`: a finished run is reused only for the same question
    dev_score: float | None = None  # on the logit dataset's dev split (carved from training rows): for choosing
    dev_metrics: dict | None = None
    dev_split: dict | None = None  # its options and rows (`TaskArguments.task_data`)
    best_step: int | None = None  # with early stopping on dev: the step whose weights were kept

    @property
    def method(self) -> tuple[str, str]:
        """The run's method name and type (baseline / single / multi), as the study's tables name them."""
        if self.fusion == "none":
            return "none", "baseline"
        name = method_name(self.fusion, self.curriculum_fusion, self.calibrate_teachers)
        if "single" in (self.fusion, self.curriculum_fusion):
            teacher = short_teacher_name(self.teachers[self.teacher_index]["name"], self.task)
            name = name.replace("single", f"single: {teacher}", 1)
        return name, "single" if self.fusion == "single" and not self.curriculum_fusion else "multi"


CURRICULUM_SEPARATOR, CALIBRATED_SUFFIX = "_to_", "+calibrated"


def method_name(fusion: str, curriculum_fusion: str | None = None, calibrate_teachers: bool = False) -> str:
    """How the study names a method: the fusion, `_to_<curriculum_fusion>`, `+calibrated`.

    Args:
        fusion: The fusion strategy ("none" for the baseline).
        curriculum_fusion: The fusion a curriculum moves to (None: no curriculum).
        calibrate_teachers: Whether the teachers are calibrated.
    """
    name = fusion + (f"{CURRICULUM_SEPARATOR}{curriculum_fusion}" if curriculum_fusion else "")
    return name + (CALIBRATED_SUFFIX if calibrate_teachers else "")


def method_options(method: str) -> dict:
    """The `DistillationConfig` options of a study method named as `method_name` names them, e.g.
    'average_to_confidence+calibrated', or 'single-<i>' for one teacher's single run (the name of its folder; plain
    'single' runs once per teacher); a `ValueError` naming the method when its fusions are unknown.

    Args:
        method: The study method's name, e.g. "gating", "average_to_confidence", "weighted+calibrated" or "single-1".
    """
    one_teacher = re.fullmatch(r"single-(\d+)", method)
    if one_teacher:
        return {**method_options("single"), "teacher_index": int(one_teacher[1])}
    calibrate = method.endswith(CALIBRATED_SUFFIX)
    fusion, _, curriculum = method.removesuffix(CALIBRATED_SUFFIX).partition(CURRICULUM_SEPARATOR)
    known = ["none", *FUSION_REGISTRY]
    for name in filter(None, (fusion, curriculum)):
        if name not in known:
            raise ValueError(
                f"Unknown method {method!r}: {name!r} is not a fusion strategy ({known}); methods are "
                f"'<fusion>', '<fusion>{CURRICULUM_SEPARATOR}<fusion>' (curriculum) and '...{CALIBRATED_SUFFIX}'."
            )
    if (calibrate or curriculum) and fusion == "none":
        raise ValueError(
            f"Method {method!r}: 'none' trains without teachers, so it takes no curriculum or calibration."
        )
    DistillationConfig.check_curriculum(fusion, curriculum or None)
    return {"fusion": fusion, "curriculum_fusion": curriculum or None, "calibrate_teachers": calibrate}


def method_temperatures(pairs: list[str], methods: list[str]) -> dict[str, float]:
    """`['gating=3', 'average=9']` -> `{'gating': 3.0, 'average': 9.0}`: a temperature per study method, refused
    unless each names one of `methods` with a temperature > 0. Every method of `methods` is checked too
    (`method_options`), so one call validates a study's methods before any work.

    Args:
        pairs: `--method_temperatures` values, `METHOD=T` each.
        methods: The study's methods (`--methods`).
    """
    for method in methods:
        method_options(method)
    found = {}
    for pair in pairs:
        method, _, value = pair.partition("=")
        try:
            temperature = float(value)
        except ValueError:
            temperature = float("nan")
        if method not in methods or not temperature > 0:
            raise ValueError(
                f"--method_temperatures {pair!r}: give METHOD=T with METHOD one of --methods {methods} and T > 0."
            )
        found[method] = temperature
    return found
