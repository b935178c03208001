"""The study's steps as library functions (teachers -> logit dataset -> students), shared by the recipes.

Recipes in `recipes/` only parse arguments and call these, so a user's own script can run any step
the same way the study does.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Sequence

import datasets
import numpy as np
import yaml
from accelerate import PartialState
from transformers import (
    AutoTokenizer,
    HfArgumentParser,
    PreTrainedModel,
    Trainer,
    TrainingArguments,
)

from .config import DistillationConfig, fast_training_defaults
from .hub import EVAL_RESULTS_FILE, load_logit_dataset_from_hub
from .logits import TeacherInfo, attach_teacher_logits, check_logits_match_inputs, input_fingerprint, read_metadata
from .packaged_models import HUB_IDS, resolve_model
from .tasks import (
    DEFAULT_GLUE,
    GlueTask,
    compute_task_metrics,
    first_rows,
    get_task,
    load_task_split,
    metrics_for_trainer,
    task_texts,
)
from .teachers import TEACHER_INFO_FILE, SklearnTeacher, load_classifier, load_teacher, sharded_logits
from .trainer import DistillationTrainer, LengthGroupedSamplingMixin

logger = logging.getLogger(__name__)
SKLEARN_TEACHER = "sklearn_tfidf"
VALIDATION_LOGITS_FILE = "validation_logits.npy"  # a student's logits on the validation rows, for the analyses


@dataclass
class TaskArguments:
    task: str = field(default="sst2", metadata={"help": "GLUE task: cola, sst2, mrpc, qqp, stsb, mnli, qnli, rte, wnli."})
    data: str = field(default=DEFAULT_GLUE, metadata={
        "help": "Hub dataset id (default nyu-mll/glue) or a folder of <task>/<split>.tsv|csv|parquet|jsonl."})
    max_train_rows: int | None = field(default=None, metadata={"help": "Keep only the first N training rows."})
    max_eval_rows: int | None = field(default=None, metadata={"help": "Keep only the first N validation rows."})
    max_length: int = field(default=128, metadata={"help": "Truncate tokenized inputs to this many tokens."})
    trust_remote_code: bool = field(default=False, metadata={
        "help": "Run model code from the checkpoint's repo (only for checkpoints you trust)."})
    allow_pickle: bool = field(default=False, metadata={
        "help": "Load checkpoints that have only pickle weights (pytorch_model.bin; only ones you trust)."})

    @property
    def loading(self) -> dict:
        """How models are loaded: safetensors only and no remote code, unless the user opted in."""
        return {"allow_pickle": self.allow_pickle, "trust_remote_code": self.trust_remote_code}

    @property
    def glue_task(self) -> GlueTask:
        task = get_task(self.task)
        if task.is_regression:
            raise ValueError(f"{task.name} is a regression task; distill-trainer supports classification tasks only.")
        return task

    def row_limit(self, split: str) -> int | None:
        return self.max_train_rows if split == "train" else self.max_eval_rows

    def load(self, split: str) -> datasets.Dataset:
        return load_task_split(self.glue_task, split, self.data, self.row_limit(split))


class TaskTrainer(LengthGroupedSamplingMixin, Trainer):
    """The plain `Trainer` for fine-tuning teachers, with the same length grouping as the students."""


def parse_recipe_args(dataclass_types: Sequence[type], argv: Sequence[str] | None = None) -> tuple:
    """`HfArgumentParser` over `dataclass_types`, with `--config FILE.yaml` giving defaults that flags override.

    Training options start from `fast_training_defaults()` (length-grouped batches, bf16 where the hardware
    has it), below the config file and the command line: `--train_sampling_strategy random` or
    `--bf16 false` turns them off.
    """
    parser = HfArgumentParser(dataclass_types)
    actions = {action.dest: action for action in parser._actions}
    parser.set_defaults(**{key: value for key, value in fast_training_defaults().items() if key in actions})
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--config" in argv:
        at = argv.index("--config")
        argv_config = argv[at + 1]
        with open(argv_config) as handle:
            values = yaml.safe_load(handle) or {}
        del argv[at:at + 2]
        unused = sorted(set(values) - set(actions))
        if unused:  # one task config serves every recipe: each takes the keys it knows
            logger.warning("%s ignores these keys of %s: %s", parser.prog, argv_config, unused)
        values = {key: value for key, value in values.items() if key in actions}
        for key in values:
            actions[key].required = False
        parser.set_defaults(**values)
    return parser.parse_args_into_dataclasses(args=argv)


def tokenize_task(dataset: datasets.Dataset, tokenizer, task: GlueTask, max_length: int) -> datasets.Dataset:
    """Tokenize the task's text column(s) (pairs as pairs); the other columns stay. A `length` column (tokens
    per row) lets length-grouped sampling read the lengths instead of measuring every row."""
    return dataset.map(lambda batch: tokenizer(*[batch[c] for c in task.text_columns], truncation=True,
                                               max_length=max_length, return_length=True),
                       batched=True, desc="tokenize")


def load_for_task(model_name_or_path: str, task: GlueTask, allow_pickle: bool = False, trust_remote_code: bool = False,
                  **kwargs) -> tuple:
    """Tokenizer and classification model with the task's labels (a fresh head where the labels differ)."""
    path = resolve_model(model_name_or_path)
    model = load_classifier(path, allow_pickle, trust_remote_code, **task.label_config, **kwargs)
    return AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code), model


def evaluate_task(trainer: Trainer) -> tuple[dict, np.ndarray]:
    """Metrics (keys as `compute_task_metrics` names them) and logits on the trainer's eval split, in one pass."""
    output = trainer.predict(trainer.eval_dataset, metric_key_prefix="eval")
    return {key.removeprefix("eval_"): value for key, value in output.metrics.items()}, output.predictions


def save_json(data: dict, path: str) -> None:
    with open(path, "w") as handle:
        json.dump(data, handle, indent=2, sort_keys=True)


def for_trainer(args: TrainingArguments) -> TrainingArguments:
    """`args` without Hub pushing or token: the Trainer would push at every save, without our cards (the
    recipes publish once, after training, through `distill_trainer.hub`), and it pickles its arguments
    into `training_args.bin`, which must never hold a token."""
    return with_overrides(args, push_to_hub=False, hub_token=None) if args.push_to_hub or args.hub_token else args


def display_name(path_or_id: str) -> str:
    """A name for cards and metadata: a Hub id as is, a local folder by its last component (no local paths)."""
    return os.path.basename(os.path.normpath(path_or_id)) if os.path.exists(path_or_id) else path_or_id


def base_model_name(name: str) -> str:
    """What a card's `base_model` should say: the Hub id behind a packaged short name, else `display_name`."""
    return HUB_IDS.get(name) or display_name(name)


# ---- teachers -------------------------------------------------------------------------------------


def train_teacher(task_args: TaskArguments, model_name_or_path: str, training_args: TrainingArguments,
                  teacher_name: str | None = None) -> dict:
    """Fine-tune a teacher on a task (or fit the scikit-learn TF-IDF teacher) and save it with its score."""
    task = task_args.glue_task
    train, validation = task_args.load("train"), task_args.load("validation")
    name = teacher_name or f"{display_name(model_name_or_path)}-{task.name}"
    output_dir = training_args.output_dir
    started = time.perf_counter()
    if model_name_or_path == SKLEARN_TEACHER:
        teacher = SklearnTeacher.fit(task_texts(task, train), train["label"][:], name=name)
        metrics = compute_task_metrics(task, teacher(task_texts(task, validation)), validation["label"][:])
        teacher.save(output_dir)
    else:
        tokenizer, model = load_for_task(model_name_or_path, task, **task_args.loading)
        trainer = TaskTrainer(model=model, args=for_trainer(training_args), processing_class=tokenizer,
                          train_dataset=tokenize_task(train, tokenizer, task, task_args.max_length),
                          eval_dataset=tokenize_task(validation, tokenizer, task, task_args.max_length),
                          compute_metrics=metrics_for_trainer(task))
        trainer.train()
        metrics, _ = evaluate_task(trainer)
        trainer.save_model(output_dir)
    info = {"name": name, "base_model": base_model_name(model_name_or_path), "task": task.name, "metric": task.metric,
            "validation_score": metrics[task.metric], "train_rows": len(train), "metrics": metrics,
            "train_runtime": time.perf_counter() - started}
    save_json(info, os.path.join(output_dir, TEACHER_INFO_FILE))
    return info


# ---- the logit dataset ----------------------------------------------------------------------------


def build_logit_dataset(task_args: TaskArguments, teacher_paths: Sequence[str], batch_size: int = 64,
                        cache_dir: str | None = None) -> datasets.DatasetDict:
    """Run every teacher over train and validation; one `DatasetDict` with a `teacher_logits` column per split.

    Teachers are loaded one at a time. Under `accelerate launch` each process runs a contiguous share of
    the rows and all processes get every row back in order. With `cache_dir`, each finished teacher's
    logits are kept there (written atomically), so an interrupted extraction resumes at the first
    unfinished teacher. Each teacher's validation score (the `weighted` fusion's weight) is measured on
    the same validation rows, so the scores in the metadata are comparable across teachers.
    """
    task = task_args.glue_task
    splits = {split: task_args.load(split) for split in ("train", "validation")}
    input_columns = [c for c in ("idx", *task.text_columns) if c in splits["train"].column_names]
    fingerprints = {split: input_fingerprint(data, input_columns) for split, data in splits.items()}
    logits, infos = {split: [] for split in splits}, []
    for index, path in enumerate(teacher_paths):
        key = {"teacher": path, "max_length": task_args.max_length, "inputs": fingerprints}
        found = read_teacher_cache(cache_dir, index, key)
        if found is None:
            teacher = load_teacher(path, task.label_names, batch_size=batch_size, max_length=task_args.max_length,
                                   **task_args.loading)
            found = {"name": display_name(teacher.name), "revision": teacher.revision,
                     "logits": {split: sharded_logits(teacher, task_texts(task, data)) for split, data in splits.items()}}
            write_teacher_cache(cache_dir, index, key, found)
        else:
            logger.warning("Teacher %d (%s): reusing its logits from %s.", index, found["name"], cache_dir)
        for split in splits:
            logits[split].append(found["logits"][split])
        score = compute_task_metrics(task, found["logits"]["validation"], splits["validation"]["label"][:])[task.metric]
        infos.append(TeacherInfo(name=found["name"], revision=found["revision"], metric=task.metric, validation_score=score))
    return datasets.DatasetDict({
        split: attach_teacher_logits(data, np.stack(logits[split], axis=1), infos, task.label_names, input_columns,
                                     task=task.name)
        for split, data in splits.items()
    })


def teacher_cache_path(cache_dir: str, index: int) -> str:
    return os.path.join(cache_dir, f"teacher-{index}.npz")


def read_teacher_cache(cache_dir: str | None, index: int, key: dict) -> dict | None:
    """A finished teacher's logits, if cached for exactly this teacher, max_length and input rows."""
    if cache_dir is None or not os.path.isfile(teacher_cache_path(cache_dir, index)):
        return None
    with np.load(teacher_cache_path(cache_dir, index)) as cached:
        info = json.loads(str(cached["info"]))
        if info["key"] != json.loads(json.dumps(key)):
            logger.warning("Teacher %d: the cached logits in %s are for other inputs or settings; recomputing.", index, cache_dir)
            return None
        return {"name": info["name"], "revision": info["revision"],
                "logits": {split: cached[split] for split in key["inputs"]}}


def write_teacher_cache(cache_dir: str | None, index: int, key: dict, found: dict) -> None:
    """Main process only; written under a temporary name and renamed, so a cache file is always whole."""
    state = PartialState()
    if cache_dir is not None and state.is_main_process:
        os.makedirs(cache_dir, exist_ok=True)
        partial = teacher_cache_path(cache_dir, index) + f".partial-{os.getpid()}.npz"
        info = json.dumps({"key": key, "name": found["name"], "revision": found["revision"]})
        np.savez(partial, info=np.array(info), **found["logits"])
        os.replace(partial, teacher_cache_path(cache_dir, index))
    state.wait_for_everyone()


def extract_to_disk(task_args: TaskArguments, teacher_paths: Sequence[str], output_dir: str,
                    batch_size: int = 64) -> datasets.DatasetDict:
    """`build_logit_dataset` with a resumable per-teacher cache beside `output_dir`, written atomically by
    the main process; the cache is removed once the dataset is in place."""
    cache_dir = f"{os.path.normpath(output_dir)}.teacher-cache"
    logit_dataset = build_logit_dataset(task_args, teacher_paths, batch_size, cache_dir)
    state = PartialState()
    if state.is_main_process:
        save_dataset_atomically(logit_dataset, output_dir)
        shutil.rmtree(cache_dir, ignore_errors=True)
    state.wait_for_everyone()
    return logit_dataset


def save_dataset_atomically(dataset: datasets.DatasetDict, output_dir: str) -> None:
    """Write next to `output_dir`, then rename: a crash never leaves a half-written dataset in its place."""
    partial = f"{os.path.normpath(output_dir)}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    dataset.save_to_disk(partial)
    if os.path.exists(output_dir):
        shutil.rmtree(output_dir)
    os.replace(partial, output_dir)


def load_logit_dataset(path_or_id: str) -> datasets.DatasetDict:
    """A logit dataset from `save_to_disk` (folder) or published by `publish_logit_dataset` (Hub dataset id)."""
    if os.path.isdir(path_or_id):
        return datasets.load_from_disk(path_or_id)
    return load_logit_dataset_from_hub(path_or_id)


# ---- students -------------------------------------------------------------------------------------


def student_from_layers(model: PreTrainedModel, layers: Sequence[int]) -> PreTrainedModel:
    """Keep only `layers` of the encoder (DistilBERT's initialisation: a student cut from a teacher)."""
    encoder = getattr(model.base_model, "encoder", None)
    blocks = getattr(encoder, "layer", None)
    if blocks is None:
        raise ValueError(f"{type(model).__name__} has no base_model.encoder.layer to cut layers from.")
    if not layers or any(not 0 <= i < len(blocks) for i in layers):
        raise ValueError(f"student_layers {list(layers)} must be indices in [0, {len(blocks)}).")
    encoder.layer = type(blocks)([blocks[i] for i in layers])
    model.config.num_hidden_layers = len(layers)
    return model


@dataclass
class StudentArguments:
    logit_dataset: str = field(default=None, metadata={"help": "Logit dataset: a folder from extract_logits.py or a Hub dataset id."})
    student_model: str = field(default=None, metadata={"help": "Student checkpoint (Hub id or folder), or the teacher to cut layers from."})
    student_layers: str | None = field(default=None, metadata={"help": "Comma-separated encoder layers to keep, e.g. 0,2,4."})
    check_against_data: bool = field(default=True, metadata={
        "help": "Refuse a logit dataset whose training rows are not the task's (--data) first rows, in order."})


def distill_student(task_args: TaskArguments, student_args: StudentArguments, config: DistillationConfig) -> dict:
    """Train one student from a logit dataset; save it with `eval_results.json`; return the results."""
    task = task_args.glue_task
    logit_data = load_logit_dataset(student_args.logit_dataset)
    train, validation = (first_rows(logit_data[split], task_args.row_limit(split)) for split in ("train", "validation"))
    metadata = read_metadata(logit_data["train"])
    if student_args.check_against_data and metadata is not None:
        check_logits_match_inputs(metadata, load_task_split(task, "train", task_args.data, metadata.num_rows))
    tokenizer, model = load_for_task(student_args.student_model, task, ignore_mismatched_sizes=True, **task_args.loading)
    if student_args.student_layers:
        model = student_from_layers(model, [int(i) for i in student_args.student_layers.split(",")])
    trainer = DistillationTrainer(
        model=model, args=for_trainer(config), processing_class=tokenizer, compute_metrics=metrics_for_trainer(task),
        train_dataset=tokenize_task(train, tokenizer, task, task_args.max_length),
        eval_dataset=tokenize_task(validation, tokenizer, task, task_args.max_length))
    train_output = trainer.train()
    metrics, validation_logits = evaluate_task(trainer)
    results = {
        "task": task.name, "metric": task.metric, "score": metrics[task.metric], "metrics": metrics,
        "fusion": config.fusion, "temperature": config.temperature, "alpha": config.alpha, "seed": config.seed,
        "teacher_index": config.teacher_index, "fusion_weights": config.fusion_weights,
        "teachers": [asdict(t) for t in metadata.teachers] if metadata else None,
        "logit_dataset": display_name(student_args.logit_dataset), "train_rows": len(train),
        "student_model": base_model_name(student_args.student_model), "student_layers": student_args.student_layers,
        "num_parameters": model.num_parameters(), "eval_rows": len(validation), "max_length": task_args.max_length,
        "train_runtime": train_output.metrics.get("train_runtime"),
    }
    trainer.save_model(config.output_dir)
    if trainer.is_world_process_zero():
        save_json(results, os.path.join(config.output_dir, EVAL_RESULTS_FILE))
        np.save(os.path.join(config.output_dir, VALIDATION_LOGITS_FILE), validation_logits.astype(np.float32))
    return results


def short_teacher_name(name: str, task: str) -> str:
    """A teacher's name without the `-<task>` suffix `train_teacher` gives it, so that the study's methods
    ("single: all-mpnet-base-v2") line up across tasks in tables and plots."""
    return name.removesuffix(f"-{task}")


def teacher_method(info: dict) -> str:
    """A teacher's row name in the study's tables, from its `teacher_info.json`."""
    return f"teacher: {short_teacher_name(info['name'], info['task'])}"


def student_method(results: dict) -> tuple[str, str]:
    """A student run's method name and type (baseline / single / multi), as the study's tables name them."""
    if results["fusion"] == "none":
        return "none", "baseline"
    if results["fusion"] == "single":
        teacher = results["teachers"][results["teacher_index"]]["name"]
        return f"single: {short_teacher_name(teacher, results['task'])}", "single"
    return results["fusion"], "multi"


def distill_or_reuse(task_args: TaskArguments, student_args: StudentArguments, config: DistillationConfig) -> dict:
    """`distill_student`, unless `config.output_dir` already holds its results (so a study can resume)."""
    results_path = os.path.join(config.output_dir, EVAL_RESULTS_FILE)
    if not os.path.isfile(results_path):
        distill_student(task_args, student_args, config)
    with open(results_path) as handle:
        return json.load(handle)


# ---- the study ------------------------------------------------------------------------------------

def with_overrides(args: TrainingArguments, cls: type = None, **overrides) -> TrainingArguments:
    """A copy of `args` (as `cls`, default its own class) with some fields changed, validated again."""
    from dataclasses import fields

    cls = cls or type(args)
    values = {f.name: getattr(args, f.name) for f in fields(cls) if f.init and hasattr(args, f.name)}
    values.update(overrides)
    return cls(**values)


@dataclass
class StudyArguments:
    teachers: str = field(default="all-MiniLM-L6-v2,sklearn_tfidf", metadata={
        "help": "Comma-separated teachers to fine-tune on the task: Hub ids, folders, or sklearn_tfidf."})
    teacher_epochs: float = field(default=1.0, metadata={"help": "Fine-tuning epochs of each transformer teacher."})
    teacher_learning_rate: float | None = field(default=None, metadata={
        "help": "Learning rate of the transformer teachers (default: --learning_rate, the students' rate)."})
    student_model: str = field(default="all-MiniLM-L6-v2", metadata={"help": "Pretrained model the student is cut from."})
    student_layers: str | None = field(default="0,2,4", metadata={"help": "Encoder layers the student keeps."})
    methods: str = field(default="none,single,average,weighted,min_entropy,gating", metadata={
        "help": "Student methods; 'single' runs once per teacher."})
    seeds: str = field(default="42", metadata={"help": "Comma-separated seeds for every student."})
    study_dir: str = field(default="runs/study", metadata={"help": "Teachers, logits and students go here."})
    results_csv: str = field(default="results/master_results.csv", metadata={"help": "The results table."})


def run_study(task_args: TaskArguments, study: StudyArguments, config: DistillationConfig):
    """Teachers -> logit dataset -> every student method x seed; returns the results as a DataFrame.

    Finished runs (an `eval_results.json` / `teacher_info.json` in their folder) are reused, so an
    interrupted study picks up where it stopped.
    """
    import pandas as pd

    task = task_args.glue_task
    root = os.path.join(study.study_dir, task.name)
    teacher_dirs, rows = [], []
    for teacher in study.teachers.split(","):
        folder = os.path.join(root, f"teacher-{display_name(teacher)}")
        info_path = os.path.join(folder, TEACHER_INFO_FILE)
        if not os.path.isfile(info_path):
            teacher_args = with_overrides(config, TrainingArguments, output_dir=folder, num_train_epochs=study.teacher_epochs,
                                          learning_rate=study.teacher_learning_rate or config.learning_rate)
            train_teacher(task_args, teacher, teacher_args)
        info = json.load(open(info_path))
        teacher_dirs.append(folder)
        rows.append({"method": teacher_method(info), "type": "teacher", "seed": None, "score": info["validation_score"]})
    logits_dir = os.path.join(root, "logits")
    if not os.path.isdir(logits_dir):
        extract_to_disk(task_args, teacher_dirs, logits_dir)
    runs = []
    for method in study.methods.split(","):
        if method == "single":
            runs += [(f"single-{i}", {"fusion": "single", "teacher_index": i}) for i in range(len(teacher_dirs))]
        else:
            runs.append((method, {"fusion": method}))
    student_args = StudentArguments(logit_dataset=logits_dir, student_model=study.student_model,
                                    student_layers=study.student_layers)
    for seed in [int(s) for s in study.seeds.split(",")]:
        for name, options in runs:
            folder = os.path.join(root, f"student-{name}-seed{seed}")
            results = distill_or_reuse(task_args, student_args, with_overrides(config, output_dir=folder, seed=seed, **options))
            method, kind = student_method(results)
            rows.append({"method": method, "type": kind, "seed": seed, "score": results["score"]})
    table = pd.DataFrame(rows).assign(task=task.name, metric=task.metric, temperature=config.temperature,
                                      alpha=config.alpha, train_rows=task_args.max_train_rows)
    os.makedirs(os.path.dirname(study.results_csv) or ".", exist_ok=True)
    if os.path.isfile(study.results_csv):  # keep other tasks' rows, replace this task's
        previous = pd.read_csv(study.results_csv)
        table = pd.concat([previous[previous.task != task.name], table], ignore_index=True)
    table.to_csv(study.results_csv, index=False)
    return table


def sweep_grid(task_args: TaskArguments, student_args: StudentArguments, config: DistillationConfig,
               temperatures: Sequence[float], alphas: Sequence[float], grid_csv: str | None = None):
    """Train one student per (T, alpha) with `config`'s fusion and seed; the scores as a long DataFrame.

    Each cell is a run folder under `config.output_dir`; finished cells are reused.
    """
    import pandas as pd

    rows = []
    for temperature in temperatures:
        for alpha in alphas:
            folder = os.path.join(config.output_dir, f"T{temperature:g}-alpha{alpha:g}")
            results = distill_or_reuse(task_args, student_args,
                                       with_overrides(config, output_dir=folder, temperature=temperature, alpha=alpha))
            rows.append({**{key: results.get(key) for key in ("task", "fusion", "teacher_index", "seed", "temperature",
                                                              "alpha", "metric", "score", "train_rows", "train_runtime")},
                         "run": os.path.basename(folder)})
    grid = pd.DataFrame(rows)
    grid.to_csv(grid_csv or os.path.join(config.output_dir, "grid.csv"), index=False)
    return grid
