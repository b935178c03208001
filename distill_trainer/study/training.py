"""Fine-tuning teachers and distilling students on a GLUE task: the training steps of the study."""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
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
from ..logits import input_fingerprint, read_metadata
from ..sampling import LengthGroupedSamplingMixin
from ..trainer import DistillationTrainer
from .args import for_trainer
from .dev_split import DEV_SPLIT_KEY, check_same_dev_split
from .early_stopping import early_stopping, evaluations_per_epoch
from .logit_data import load_logit_dataset
from .output_dirs import check_output_dir, mark_output_dir
from .packaged_models import resolve_model
from .questions import student_question
from .results import student_result
from .runs import LOGITS_FILE_BY_SPLIT, StudentResult, training_settings
from .student_model import (  # noqa: F401 (re-exported: imported from here before they had their own module)
    BUNDLED_LAYERS_FILE,
    check_bundled_layers,
    student_from_layers,
)
from .task_data import TaskData, row_limit_option
from .tasks import (
    GlueTask,
    first_rows,
    get_task,
    metrics_for_trainer,
)
from .teachers import load_classifier


class TaskTrainer(LengthGroupedSamplingMixin, Trainer):
    """The plain `Trainer` for fine-tuning teachers, with the same length grouping as the students."""


def tokenize_task(dataset: datasets.Dataset, tokenizer, task: GlueTask, max_length: int) -> datasets.Dataset:
    """Tokenize the task's text column(s) (pairs as pairs); the other columns stay. A `length` column (tokens
    per row) lets length-grouped sampling read the lengths instead of measuring every row.

    Args:
        dataset: Rows with the task's text columns.
        tokenizer: The model's tokenizer.
        task: The GLUE task (its text columns).
        max_length: Tokens kept per row (longer inputs are truncated).
    """
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

    Args:
        model_name_or_path: A Hub id, a folder or a packaged short name (`resolve_model`).
        task: The GLUE task, whose labels the head gets.
        allow_pickle: Accept checkpoints with pickle weights only.
        trust_remote_code: Run model and tokenizer code from the checkpoint's repo.
        seed: Seed every RNG before the model is built (None: not seeded).
        **kwargs: Passed to `from_pretrained`.
    """
    if seed is not None:
        set_seed(seed)
    path = resolve_model(model_name_or_path)
    model = load_classifier(path, allow_pickle, trust_remote_code, **task.label_config, **kwargs)
    return AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code), model


def evaluate_task(trainer: Trainer, dataset: datasets.Dataset | None = None) -> tuple[dict, np.ndarray]:
    """Metrics (keys as `compute_task_metrics` names them) and logits on `dataset` (default: the trainer's eval
    split), in one pass.

    Args:
        trainer: A trainer whose `compute_metrics` is the task's (`metrics_for_trainer`).
        dataset: Tokenized rows with labels (None: `trainer.eval_dataset`).
    """
    output = trainer.predict(trainer.eval_dataset if dataset is None else dataset, metric_key_prefix="eval")
    return {key.removeprefix("eval_"): value for key, value in output.metrics.items()}, output.predictions


def save_validation_logits(
    run_dir: str, validation: datasets.Dataset, task_name: str, split: str = "validation"
) -> np.ndarray:
    """For a student folder from before students saved their logits: predict its rows with the saved student once,
    into the file the analysis reads and checks the record's score against (`validation_logits.npy`: the first
    `eval_rows` validation rows; `dev_logits.npy`: every dev row, which the record's `dev_score` was measured on).

    Args:
        run_dir: The student's folder (its `eval_results.json` and saved model).
        validation: The task's rows of `split`, untokenized.
        task_name: The GLUE task's name.
        split: "validation" or "dev": which split `validation` is, and so which file is written.
    """
    if split not in LOGITS_FILE_BY_SPLIT:
        raise ValueError(f"split must be one of {sorted(LOGITS_FILE_BY_SPLIT)}, not {split!r}.")
    results, task = StudentResult.load(run_dir), get_task(task_name)
    tokenizer, model = load_for_task(run_dir, task)
    args = TrainingArguments(
        os.path.join(run_dir, "predict-tmp"), report_to="none", per_device_eval_batch_size=64, use_cpu=True
    )
    rows = validation.select(range(results.eval_rows or len(validation))) if split == "validation" else validation
    tokenized = tokenize_task(rows, tokenizer, task, results.max_length or 128)
    scratch_existed = os.path.exists(args.output_dir)
    logits = Trainer(model=model, processing_class=tokenizer, args=args).predict(tokenized).predictions
    if not scratch_existed:  # the Trainer's output folder, never used by predict: not left in the run's folder
        shutil.rmtree(args.output_dir, ignore_errors=True)
    np.save(os.path.join(run_dir, LOGITS_FILE_BY_SPLIT[split]), logits.astype(np.float32))
    return logits


def low_resource(train: datasets.Dataset, labelled_rows: int, with_transfer_set: bool) -> datasets.Dataset:
    """The first `labelled_rows` rows keep their labels; with a transfer set the other rows stay, labelled -100
    (the student learns there from the teachers only), without one they are dropped (the baseline).

    Args:
        train: The training rows, with `label`.
        labelled_rows: How many leading rows keep their labels; fewer than `len(train)`.
        with_transfer_set: Keep the other rows, unlabelled (the students), or drop them (the baseline).
    """
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


def check_split_rows(
    split: str, logit_rows: datasets.Dataset, task_rows: datasets.Dataset, columns: Sequence[str], asked: int | None
) -> None:
    """Refuse logit rows that are not the task's first rows of `split`, in order (every student would learn each
    row from another row's teachers, or be scored on other rows than the data's, silently), and fewer rows than
    a row limit asked for (the student would train or be scored on fewer, with the asked number in its question).

    Args:
        split: "train" or "validation", for the error.
        logit_rows: The logit dataset's rows of that split a student is about to use.
        task_rows: The task's rows of that split (the dev rows taken out of train where carved).
        columns: The input columns the logit metadata fingerprints.
        asked: The row limit given for the split (`--max_train_rows`/`--max_eval_rows`; None: none given).
    """
    option = f"--{row_limit_option(split)}"
    if asked is not None and len(logit_rows) < len(task_rows):
        raise ValueError(
            f"{option} {asked} asks for {len(task_rows)} {split} rows, and this logit dataset has {len(logit_rows)}: "
            f"give a smaller {option}, or re-extract the logits on these rows."
        )
    first = task_rows.select(range(min(len(logit_rows), len(task_rows))))
    if len(logit_rows) > len(task_rows) or input_fingerprint(logit_rows, columns) != input_fingerprint(first, columns):
        raise ValueError(
            f"This logit dataset does not belong to this data: its {len(logit_rows)} {split} rows are not the "
            f"task's first {len(logit_rows)} ({len(task_rows)} given) in {list(columns)} (other rows, another order, "
            "or other text). Re-extract the logits on this data."
        )


def distill_student(
    data: TaskData,
    logit_dataset: str,
    config: DistillationConfig,
    student_model: str,
    student_layers: Sequence[int] | None = None,
    early_stopping_patience: int | None = None,
    check_against_data: bool = True,
) -> StudentResult:
    """Train one student from a logit dataset; save it with `eval_results.json`; return the results.

    Where the logit dataset has a dev split (carved from the training rows at extraction), the student is scored
    on it too (`dev_score`: what a study chooses by) and, with `early_stopping_patience`, trains until its dev
    score stops improving, keeping the best weights; the validation split is scored once, at the end.

    Args:
        data: The task and its rows (`TaskArguments.task_data()`): the logit dataset's training rows must be its
            first training rows, its dev split the same, and `data.labelled_rows` keep their labels.
        logit_dataset: A logit dataset's folder or Hub id (from `extract_to_disk`).
        config: The distillation and training configuration (`output_dir` is the student's folder).
        student_model: The checkpoint the student starts from (Hub id, folder, or a packaged short name).
        student_layers: The encoder layers it keeps (None: all).
        early_stopping_patience: Epochs without a better dev score before stopping (None: every epoch).
        check_against_data: Refuse a logit dataset whose training rows are not `data`'s (off: trust it).
    """
    task = data.task
    check_output_dir(config.output_dir, StudentResult.FILE)
    logit_data = load_logit_dataset(logit_dataset)
    limits = {split: data.options.get(row_limit_option(split)) for split in ("train", "validation")}
    train, validation = (first_rows(logit_data[split], limits[split]) for split in ("train", "validation"))
    dev = logit_data["dev"] if "dev" in logit_data else None
    metadata = read_metadata(logit_data["train"])
    check_same_dev_split(metadata.extra.get(DEV_SPLIT_KEY) if metadata else None, data)
    if early_stopping_patience and dev is None:
        raise ValueError(
            "--early_stopping_patience stops on the dev split, and this logit dataset has none: extract it with "
            "--dev_rows (the validation split is only reported, never chosen on)."
        )
    if check_against_data and metadata is not None:
        if metadata.task not in (None, task.name):
            raise ValueError(f"--task {task.name}: this logit dataset holds {metadata.task}'s teachers and rows.")
        for split, rows, task_rows in (("train", train, data.train), ("validation", validation, data.validation)):
            check_split_rows(split, rows, task_rows, metadata.input_columns, limits[split])
    if data.labelled_rows is not None:
        train = low_resource(train, data.labelled_rows, with_transfer_set=config.fusion != "none")
    check_bundled_layers(student_model, student_layers)
    tokenizer, model = load_for_task(
        student_model, task, seed=config.seed, ignore_mismatched_sizes=True, **data.loading
    )
    if student_layers:
        model = student_from_layers(model, student_layers)
    args, callbacks, patience = for_trainer(config), [], early_stopping_patience
    if patience:
        evaluations = evaluations_per_epoch(len(train), args)
        args = early_stopping(args, task.metric, len(train), evaluations)
        callbacks = [EarlyStoppingCallback(patience * evaluations)]
    existing = set(sort_checkpoints(config.output_dir)) if os.path.isdir(config.output_dir) else set()
    tokenized = {
        split: tokenize_task(rows, tokenizer, task, data.max_length)
        for split, rows in (("dev", dev), ("validation", validation))
        if rows is not None
    }
    trainer = DistillationTrainer(
        model=model,
        args=args,
        processing_class=tokenizer,
        compute_metrics=metrics_for_trainer(task),
        train_dataset=tokenize_task(train, tokenizer, task, data.max_length),
        eval_dataset=tokenized["dev" if dev is not None else "validation"],
        callbacks=callbacks,
    )
    mark_output_dir(config.output_dir, StudentResult.FILE)
    train_output = trainer.train(resume_from_checkpoint=config.resume_from_checkpoint)
    if patience and trainer.is_world_process_zero():
        for folder in set(sort_checkpoints(config.output_dir)) - existing:  # only the ones this training wrote
            shutil.rmtree(folder)
    metrics, validation_logits = evaluate_task(trainer, tokenized["validation"])
    dev_fields, dev_logits = {}, None
    if dev is not None:
        dev_metrics, dev_logits = evaluate_task(trainer, tokenized["dev"])
        dev_fields = {"dev_score": dev_metrics[task.metric], "dev_metrics": dev_metrics}
        dev_fields["dev_split"] = metadata.extra.get(DEV_SPLIT_KEY) if metadata else None
    student = {"student_model": student_model, "student_layers": student_layers}
    asked = {**student, "early_stopping_patience": early_stopping_patience}
    results = student_result(
        trainer,
        config,
        max_length=data.max_length,
        logit_dataset=logit_dataset,
        **student,
        task=task.name,
        metric=task.metric,
        metrics=metrics,
        teachers=[asdict(t) for t in metadata.teachers] if metadata else None,
        train_rows=len(train),
        eval_rows=len(validation),
        train_runtime=train_output.metrics.get("train_runtime"),
        labelled_rows=data.options.get("labelled_rows"),
        training=training_settings(config, data.options, student),
        question=student_question(data, asked, config, logit_data),
        best_step=trainer.state.best_global_step if patience else None,
        **dev_fields,
    )
    trainer.save_model(config.output_dir)
    if trainer.is_world_process_zero():
        # the dev logits are what the record's dev score (and every choice made by it) can be checked with
        for split, logits in (("validation", validation_logits), ("dev", dev_logits)):
            if logits is not None:
                np.save(os.path.join(config.output_dir, LOGITS_FILE_BY_SPLIT[split]), logits.astype(np.float32))
        results.save(config.output_dir)  # last: a folder with its results is a finished run
    return results
