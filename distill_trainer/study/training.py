"""Fine-tuning teachers and distilling students on a GLUE task: the training steps of the study."""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict

import datasets
import numpy as np
from transformers import (
    AutoTokenizer,
    EarlyStoppingCallback,
    PreTrainedModel,
    Trainer,
    TrainingArguments,
    set_seed,
)
from transformers.trainer_utils import sort_checkpoints

from ..config import DistillationConfig
from ..labels import check_label_values
from ..logits import check_logits_match_inputs, input_fingerprint, read_metadata
from ..sampling import LengthGroupedSamplingMixin
from ..trainer import DistillationTrainer
from .args import StudentArguments, TaskArguments, for_trainer
from .early_stopping import early_stopping, epochs_of, evaluations_per_epoch, majority_shares, resumable_checkpoint
from .logit_data import load_logit_dataset
from .packaged_models import resolve_model
from .questions import student_question
from .results import student_result
from .runs import (
    VALIDATION_LOGITS_FILE,
    StudentResult,
    TeacherRecord,
    base_model_name,
    device_name,
    display_name,
    training_settings,
)
from .tasks import (
    GlueTask,
    compute_task_metrics,
    first_rows,
    get_task,
    load_task_split,
    metrics_for_trainer,
    task_texts,
)
from .teachers import SKLEARN_TEACHER, SklearnTeacher, load_classifier, load_teacher, sharded_logits


class TaskTrainer(LengthGroupedSamplingMixin, Trainer):
    """The plain `Trainer` for fine-tuning teachers, with the same length grouping as the students."""


def tokenize_task(dataset: datasets.Dataset, tokenizer, task: GlueTask, max_length: int) -> datasets.Dataset:
    """Tokenize the task's text column(s) (pairs as pairs); the other columns stay. A `length` column (tokens
    per row) lets length-grouped sampling read the lengths instead of measuring every row."""
    return dataset.map(
        lambda batch: tokenizer(
            *[batch[c] for c in task.text_columns], truncation=True, max_length=max_length, return_length=True
        ),
        batched=True,
        desc="tokenize",
    )


def load_for_task(
    model_name_or_path: str,
    task: GlueTask,
    allow_pickle: bool = False,
    trust_remote_code: bool = False,
    seed: int | None = None,
    **kwargs,
) -> tuple:
    """Tokenizer and classification model with the task's labels (a fresh head where the labels differ).

    With `seed`, every RNG is seeded first: a fresh head is drawn when the model is built, before the Trainer
    seeds anything, so without it two runs with the same `--seed` started from different heads.
    """
    if seed is not None:
        set_seed(seed)
    path = resolve_model(model_name_or_path)
    model = load_classifier(path, allow_pickle, trust_remote_code, **task.label_config, **kwargs)
    return AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code), model


def evaluate_task(trainer: Trainer) -> tuple[dict, np.ndarray]:
    """Metrics (keys as `compute_task_metrics` names them) and logits on the trainer's eval split, in one pass."""
    output = trainer.predict(trainer.eval_dataset, metric_key_prefix="eval")
    return {key.removeprefix("eval_"): value for key, value in output.metrics.items()}, output.predictions


def save_validation_logits(run_dir: str, validation: datasets.Dataset, task_name: str) -> np.ndarray:
    """For a student folder from before students saved their validation logits: predict the first `eval_rows`
    `validation` rows with the saved student once, into `validation_logits.npy` (what the analysis reads)."""
    results, task = StudentResult.load(run_dir), get_task(task_name)
    tokenizer, model = load_for_task(run_dir, task)
    args = TrainingArguments(
        os.path.join(run_dir, "predict-tmp"), report_to="none", per_device_eval_batch_size=64, use_cpu=True
    )
    rows = validation.select(range(results.eval_rows or len(validation)))
    tokenized = tokenize_task(rows, tokenizer, task, results.max_length or 128)
    logits = Trainer(model=model, processing_class=tokenizer, args=args).predict(tokenized).predictions
    np.save(os.path.join(run_dir, VALIDATION_LOGITS_FILE), logits.astype(np.float32))
    return logits


def train_teacher(
    task_args: TaskArguments,
    model_name_or_path: str,
    training_args: TrainingArguments,
    teacher_name: str | None = None,
    early_stopping_patience: int | None = None,
) -> TeacherRecord:
    """Fine-tune a teacher on a task (or fit the scikit-learn TF-IDF teacher) and save it with its score.

    With `early_stopping_patience`, the teacher is evaluated after every epoch and stops once its validation
    score has not improved for that many epochs (`num_train_epochs` is then the most it trains); the best
    epoch's weights are kept, and the epochs are recorded."""
    task = task_args.glue_task
    train, validation = task_args.load("train"), task_args.load("validation")
    for split, data in (("train", train), ("validation", validation)):  # before any teacher trains
        where = f"{task.name} {split} split of {task_args.data}"
        check_label_values(data, task.num_labels, where)
        if not task.is_regression and -100 in set(data["label"][:]):
            raise ValueError(f"The {where} has unlabelled rows (-100): a teacher trains and is scored on labels only.")
    name = teacher_name or f"{display_name(model_name_or_path)}-{task.name}"
    output_dir = training_args.output_dir
    started = time.perf_counter()
    epochs, device = {}, "cpu"
    if model_name_or_path == SKLEARN_TEACHER:
        teacher = SklearnTeacher.fit(
            task_texts(task, train), train["label"][:], name=name, regression=task.is_regression
        )
        teacher.save(output_dir)
        metrics = {}
    else:
        tokenizer, model = load_for_task(  # a head for another label count is replaced by a fresh one
            model_name_or_path, task, seed=training_args.seed, ignore_mismatched_sizes=True, **task_args.loading
        )
        args, callbacks, resume = for_trainer(training_args), [], None
        if early_stopping_patience:
            evaluations = evaluations_per_epoch(len(train), args)
            args = early_stopping(args, task.metric, len(train), evaluations)
            callbacks = [EarlyStoppingCallback(early_stopping_patience * evaluations)]
            resume = resumable_checkpoint(output_dir, args)
        trainer = TaskTrainer(
            model=model,
            args=args,
            processing_class=tokenizer,
            train_dataset=tokenize_task(train, tokenizer, task, task_args.max_length),
            eval_dataset=tokenize_task(validation, tokenizer, task, task_args.max_length),
            compute_metrics=metrics_for_trainer(task),
            callbacks=callbacks,
        )
        # Checkpoints already there are this teacher's (an interrupted run, resumed) or someone else's (kept).
        existing = set(sort_checkpoints(output_dir)) if os.path.isdir(output_dir) and not resume else set()
        trainer.train(resume_from_checkpoint=resume)
        metrics, _ = evaluate_task(trainer)
        trainer.save_model(output_dir)
        device = device_name(trainer.args)
        if early_stopping_patience:
            epochs = epochs_of(trainer.state, task.metric)
            for folder in set(sort_checkpoints(output_dir)) - existing:  # only the ones this training wrote
                shutil.rmtree(folder)
    # The score recorded is the saved teacher's, loaded back as extraction loads it (float32, its own tokenizer
    # and batches), so its stored logits can be checked against the record (`check_teacher_reproduces`); the
    # Trainer's evaluation above may have run under bf16 autocast.
    texts = task_texts(task, validation)
    reloaded = load_teacher(output_dir, task.label_names, max_length=task_args.max_length, **task_args.loading)
    predictions = sharded_logits(reloaded, texts)
    if model_name_or_path == SKLEARN_TEACHER and not np.array_equal(predictions, teacher(texts)):
        raise RuntimeError(f"{name}: the TF-IDF teacher saved in {output_dir} does not predict what it did.")
    metrics = {**metrics, **compute_task_metrics(task, predictions, validation["label"][:])}
    record = TeacherRecord(
        name=name,
        base_model=base_model_name(model_name_or_path),
        task=task.name,
        metric=task.metric,
        validation_score=metrics[task.metric],
        train_rows=len(train),
        metrics=metrics,
        train_runtime=time.perf_counter() - started,
        learning_rate=None if model_name_or_path == SKLEARN_TEACHER else training_args.learning_rate,
        device=device,
        validation_fingerprint=input_fingerprint(validation, task.input_columns(validation)),
        **epochs,
        **({} if task.is_regression else majority_shares(predictions, validation["label"][:])),
    )
    record.save(output_dir)
    return record


def low_resource(train: datasets.Dataset, labelled_rows: int, with_transfer_set: bool) -> datasets.Dataset:
    """The first `labelled_rows` rows keep their labels; with a transfer set the other rows stay, labelled -100
    (the student learns there from the teachers only), without one they are dropped (the baseline)."""
    if labelled_rows >= len(train):
        raise ValueError(
            f"--labelled_rows {labelled_rows} leaves no unlabelled rows of the {len(train)} training rows."
        )
    if not with_transfer_set:
        return train.select(range(labelled_rows))
    labels = np.asarray(train["label"][:])
    regression = labels.dtype.kind == "f"
    labels = labels.astype(np.float32 if regression else np.int64)
    labels[labelled_rows:] = -100
    feature = datasets.Value("float32" if regression else "int64")  # a ClassLabel has no -100
    return train.remove_columns("label").add_column("label", labels.tolist(), feature=feature)


BUNDLED_LAYERS_FILE = "bundle_kept_layers.json"  # written by recipes/device/bundle_study.py beside zeroed layers


def check_bundled_layers(student_model: str, student_layers: Sequence[int] | None) -> None:
    """Refuse a student that would start from encoder layers a device bundle zeroed: `bundle_study.py` keeps only
    the layers of the `--student_layers` it was made for (the others are zeros, to travel small), so a student
    cut with other layers, or the whole model, would silently start from zeros.

    Args:
        student_model: The student's model name or folder (resolved like `load_for_task` does).
        student_layers: The layers asked for (None: the whole model).
    """
    marker = os.path.join(resolve_model(student_model), BUNDLED_LAYERS_FILE)
    if not os.path.isfile(marker):
        return
    with open(marker) as handle:
        kept = json.load(handle)["kept_layers"]
    if student_layers is None or not set(student_layers) <= set(kept):
        asked = "all of its layers" if student_layers is None else f"--student_layers {list(student_layers)}"
        raise ValueError(
            f"{student_model} comes from a device bundle that kept only encoder layers {kept} (the others are "
            f"zeros): a student with {asked} would start from zeroed layers. Make the bundle with these "
            "--student_layers, or use those layers."
        )


def student_from_layers(model: PreTrainedModel, layers: Sequence[int]) -> PreTrainedModel:
    """Keep only `layers` of the encoder, or of a causal LM's decoder (DistilBERT's initialisation: a student cut
    from a teacher). A kept decoder layer is renumbered, so its key/value cache slot is its new position."""
    encoder = getattr(model.base_model, "encoder", None)
    holder, attribute = (encoder, "layer") if hasattr(encoder, "layer") else (model.base_model, "layers")
    blocks = getattr(holder, attribute, None)
    if blocks is None:
        raise ValueError(f"{type(model).__name__} has no encoder or decoder layers to cut layers from.")
    if not layers or any(not 0 <= i < len(blocks) for i in layers):
        raise ValueError(f"student_layers {list(layers)} must be indices in [0, {len(blocks)}).")
    if len(set(layers)) != len(layers):  # a repeated block shares its weights: the student could not be saved
        raise ValueError(f"student_layers {list(layers)} repeats a layer; each kept layer must be distinct.")
    setattr(holder, attribute, type(blocks)([blocks[i] for i in layers]))
    for position, block in enumerate(getattr(holder, attribute)):
        if hasattr(getattr(block, "self_attn", None), "layer_idx"):
            block.self_attn.layer_idx = position
    if getattr(model.config, "layer_types", None):
        model.config.layer_types = [model.config.layer_types[i] for i in layers]
    model.config.num_hidden_layers = len(layers)
    return model


def distill_student(
    task_args: TaskArguments, student_args: StudentArguments, config: DistillationConfig
) -> StudentResult:
    """Train one student from a logit dataset; save it with `eval_results.json`; return the results."""
    task = task_args.glue_task
    logit_data = load_logit_dataset(student_args.logit_dataset)
    train, validation = (
        first_rows(logit_data[split], task_args.row_limit(split)) for split in ("train", "validation")
    )
    metadata = read_metadata(logit_data["train"])
    if student_args.check_against_data and metadata is not None:
        check_logits_match_inputs(metadata, load_task_split(task, "train", task_args.data, metadata.num_rows))
    if student_args.labelled_rows is not None:
        train = low_resource(train, student_args.labelled_rows, with_transfer_set=config.fusion != "none")
    check_bundled_layers(student_args.student_model, student_args.student_layers)
    tokenizer, model = load_for_task(
        student_args.student_model, task, seed=config.seed, ignore_mismatched_sizes=True, **task_args.loading
    )
    if student_args.student_layers:
        model = student_from_layers(model, student_args.student_layers)
    trainer = DistillationTrainer(
        model=model,
        args=for_trainer(config),
        processing_class=tokenizer,
        compute_metrics=metrics_for_trainer(task),
        train_dataset=tokenize_task(train, tokenizer, task, task_args.max_length),
        eval_dataset=tokenize_task(validation, tokenizer, task, task_args.max_length),
    )
    train_output = trainer.train()
    metrics, validation_logits = evaluate_task(trainer)
    results = student_result(
        trainer,
        config,
        task_args,
        student_args,
        task=task.name,
        metric=task.metric,
        metrics=metrics,
        teachers=[asdict(t) for t in metadata.teachers] if metadata else None,
        train_rows=len(train),
        eval_rows=len(validation),
        train_runtime=train_output.metrics.get("train_runtime"),
        labelled_rows=student_args.labelled_rows,
        training=training_settings(config, task_args, student_args),
        question=student_question(task_args, student_args, config, logit_data),
    )
    trainer.save_model(config.output_dir)
    if trainer.is_world_process_zero():
        np.save(os.path.join(config.output_dir, VALIDATION_LOGITS_FILE), validation_logits.astype(np.float32))
        results.save(config.output_dir)  # last: a folder with its results is a finished run
    return results
