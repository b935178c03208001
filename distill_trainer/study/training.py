"""Fine-tuning teachers and distilling students on a GLUE task: the training steps of the study."""

from __future__ import annotations

import os
import shutil
from dataclasses import asdict

import datasets
import numpy as np
from transformers import (
    AutoTokenizer,
    EarlyStoppingCallback,
    Trainer,
    TrainingArguments,
    set_seed,
)
from transformers.trainer_utils import sort_checkpoints

from ..config import DistillationConfig
from ..logits import check_logits_match_inputs, read_metadata
from ..sampling import LengthGroupedSamplingMixin
from ..trainer import DistillationTrainer
from .args import StudentArguments, TaskArguments, for_trainer
from .dev_split import DEV_SPLIT_KEY, check_same_dev_split
from .early_stopping import early_stopping, evaluations_per_epoch
from .logit_data import load_logit_dataset
from .packaged_models import resolve_model
from .questions import student_question
from .results import student_result
from .runs import (
    VALIDATION_LOGITS_FILE,
    StudentResult,
    training_settings,
)
from .student_model import (  # noqa: F401 (re-exported: imported from here before they had their own module)
    BUNDLED_LAYERS_FILE,
    check_bundled_layers,
    student_from_layers,
)
from .tasks import (
    GlueTask,
    first_rows,
    get_task,
    load_task_split,
    metrics_for_trainer,
)
from .teachers import load_classifier


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


def evaluate_task(trainer: Trainer, dataset: datasets.Dataset | None = None) -> tuple[dict, np.ndarray]:
    """Metrics (keys as `compute_task_metrics` names them) and logits on `dataset` (default: the trainer's eval
    split), in one pass."""
    output = trainer.predict(trainer.eval_dataset if dataset is None else dataset, metric_key_prefix="eval")
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


def distill_student(
    task_args: TaskArguments, student_args: StudentArguments, config: DistillationConfig
) -> StudentResult:
    """Train one student from a logit dataset; save it with `eval_results.json`; return the results.

    Where the logit dataset has a dev split (carved from the training rows at extraction), the student is scored
    on it too (`dev_score`: what a study chooses by) and, with `student_args.early_stopping_patience`, trains until
    its dev score stops improving, keeping the best weights; the validation split is scored once, at the end.

    Args:
        task_args: The task and its data options (the same dev and row options as the extraction's).
        student_args: The logit dataset, the student model and layers, early stopping.
        config: The distillation and training configuration (`output_dir` is the student's folder).
    """
    task = task_args.glue_task
    logit_data = load_logit_dataset(student_args.logit_dataset)
    train, validation = (
        first_rows(logit_data[split], task_args.row_limit(split)) for split in ("train", "validation")
    )
    dev = logit_data["dev"] if "dev" in logit_data else None
    metadata = read_metadata(logit_data["train"])
    check_same_dev_split(metadata.extra.get(DEV_SPLIT_KEY) if metadata else None, task_args)
    if student_args.early_stopping_patience and dev is None:
        raise ValueError(
            "--early_stopping_patience stops on the dev split, and this logit dataset has none: extract it with "
            "--dev_rows (the validation split is only reported, never chosen on)."
        )
    if student_args.check_against_data and metadata is not None:
        rows = (
            load_task_split(task, "train", task_args.data, metadata.num_rows)
            if dev is None
            else task_args.load("train")
        )
        check_logits_match_inputs(metadata, rows)
    if task_args.labelled_rows is not None:
        with_transfer_set = config.fusion != "none"
        train = low_resource(train, task_args.labelled_training_rows(), with_transfer_set=with_transfer_set)
    check_bundled_layers(student_args.student_model, student_args.student_layers)
    tokenizer, model = load_for_task(
        student_args.student_model, task, seed=config.seed, ignore_mismatched_sizes=True, **task_args.loading
    )
    if student_args.student_layers:
        model = student_from_layers(model, student_args.student_layers)
    args, callbacks, patience = for_trainer(config), [], student_args.early_stopping_patience
    if patience:
        evaluations = evaluations_per_epoch(len(train), args)
        args = early_stopping(args, task.metric, len(train), evaluations)
        callbacks = [EarlyStoppingCallback(patience * evaluations)]
    existing = set(sort_checkpoints(config.output_dir)) if os.path.isdir(config.output_dir) else set()
    tokenized = {
        split: tokenize_task(data, tokenizer, task, task_args.max_length)
        for split, data in (("dev", dev), ("validation", validation))
        if data is not None
    }
    trainer = DistillationTrainer(
        model=model,
        args=args,
        processing_class=tokenizer,
        compute_metrics=metrics_for_trainer(task),
        train_dataset=tokenize_task(train, tokenizer, task, task_args.max_length),
        eval_dataset=tokenized["dev" if dev is not None else "validation"],
        callbacks=callbacks,
    )
    train_output = trainer.train()
    if patience and trainer.is_world_process_zero():
        for folder in set(sort_checkpoints(config.output_dir)) - existing:  # only the ones this training wrote
            shutil.rmtree(folder)
    metrics, validation_logits = evaluate_task(trainer, tokenized["validation"])
    dev_fields = {}
    if dev is not None:
        dev_metrics = evaluate_task(trainer, tokenized["dev"])[0]
        dev_fields = {"dev_score": dev_metrics[task.metric], "dev_metrics": dev_metrics}
        dev_fields["dev_split"] = metadata.extra.get(DEV_SPLIT_KEY) if metadata else None
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
        labelled_rows=task_args.labelled_rows,
        training=training_settings(config, task_args, student_args),
        question=student_question(task_args, student_args, config, logit_data),
        best_step=trainer.state.best_global_step if patience else None,
        **dev_fields,
    )
    trainer.save_model(config.output_dir)
    if trainer.is_world_process_zero():
        np.save(os.path.join(config.output_dir, VALIDATION_LOGITS_FILE), validation_logits.astype(np.float32))
        results.save(config.output_dir)  # last: a folder with its results is a finished run
    return results
