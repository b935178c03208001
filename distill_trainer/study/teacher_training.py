"""Fine-tuning a study's teachers on a GLUE task (or fitting the TF-IDF teacher), with early stopping on the dev
split, and the record that says what each scored."""

from __future__ import annotations

import os
import shutil
import time

import numpy as np
from transformers import EarlyStoppingCallback, TrainingArguments
from transformers.trainer_utils import sort_checkpoints

from ..labels import check_label_values
from ..logits import input_fingerprint
from .args import for_trainer
from .early_stopping import early_stopping, epochs_of, evaluations_per_epoch, majority_shares, resumable_checkpoint
from .output_dirs import check_output_dir, mark_output_dir
from .runs import TeacherRecord, base_model_name, default_teacher_name, device_name, processor_name
from .task_data import TaskData
from .tasks import compute_task_metrics, first_rows, metrics_for_trainer, task_texts
from .teachers import SKLEARN_TEACHER, SklearnTeacher, load_teacher, sharded_logits
from .training import TaskTrainer, evaluate_task, load_for_task, tokenize_task


def train_teacher(
    data: TaskData,
    model_name_or_path: str,
    training_args: TrainingArguments,
    teacher_name: str | None = None,
    early_stopping_patience: int | None = None,
) -> TeacherRecord:
    """Fine-tune a teacher on a task (or fit the scikit-learn TF-IDF teacher) and save it with its score.

    With `early_stopping_patience`, the teacher is evaluated after every epoch and stops once its score has not
    improved for that many epochs (`num_train_epochs` is then the most it trains); the best epoch's weights are
    kept, and the epochs are recorded. The score is the dev split's where `data` has one (the collapse
    check reads it too), else the validation split's; the record holds both. In the low-resource regime
    (`data.labelled_rows`) the teacher trains on the labelled rows alone.

    Args:
        data: The task and its rows (`TaskArguments.task_data()` builds it from the recipes' options).
        model_name_or_path: A sequence-classification checkpoint, or `sklearn_tfidf`.
        training_args: How to fine-tune it (`output_dir` is the teacher's folder).
        teacher_name: The name recorded (default `<model>-<task>`, without a Hub id's owner).
        early_stopping_patience: Epochs without improvement before stopping (None: train every epoch).
    """
    task, train, validation, dev, choosing = data.task, data.train, data.validation, data.dev, data.choosing
    labelled = data.labelled_rows
    if labelled is not None:  # the low-resource regime: a teacher learns from the labelled rows alone
        train = first_rows(train, labelled)
    source = data.options.get("data", "the rows given")
    for split, rows in (("train", train), ("dev", dev), ("validation", validation)):  # before any teacher trains
        if rows is None:
            continue
        where = f"{task.name} {split} split of {source}"
        check_label_values(rows, task.num_labels, where)
        if not task.is_regression and -100 in set(rows["label"][:]):
            raise ValueError(f"The {where} has unlabelled rows (-100): a teacher trains and is scored on labels only.")
    name = teacher_name or default_teacher_name(model_name_or_path, task.name)
    output_dir = training_args.output_dir
    check_output_dir(output_dir, TeacherRecord.FILE)
    started = time.perf_counter()
    epochs, device = {}, "cpu"
    if model_name_or_path == SKLEARN_TEACHER:
        teacher = SklearnTeacher.fit(
            task_texts(task, train),
            train["label"][:],
            name=name,
            regression=task.is_regression,
            label_names=None if task.is_regression else task.label_names,
        )
        mark_output_dir(output_dir, TeacherRecord.FILE)
        teacher.save(output_dir)
        metrics = {}
    else:
        tokenizer, model = load_for_task(  # a head for another label count is replaced by a fresh one
            model_name_or_path, task, seed=training_args.seed, ignore_mismatched_sizes=True, **data.loading
        )
        args, callbacks, resume = for_trainer(training_args), [], training_args.resume_from_checkpoint
        if early_stopping_patience:
            evaluations = evaluations_per_epoch(len(train), args)
            args = early_stopping(args, task.metric, len(train), evaluations)
            callbacks = [EarlyStoppingCallback(early_stopping_patience * evaluations)]
            resume = resume or resumable_checkpoint(output_dir, args)
        trainer = TaskTrainer(
            model=model,
            args=args,
            processing_class=tokenizer,
            train_dataset=tokenize_task(train, tokenizer, task, data.max_length),
            eval_dataset=tokenize_task(choosing, tokenizer, task, data.max_length),
            compute_metrics=metrics_for_trainer(task),
            callbacks=callbacks,
        )
        # Checkpoints already there are this teacher's (an interrupted run, resumed) or someone else's (kept).
        existing = set(sort_checkpoints(output_dir)) if os.path.isdir(output_dir) and not resume else set()
        mark_output_dir(output_dir, TeacherRecord.FILE)
        trainer.train(resume_from_checkpoint=resume)
        metrics = evaluate_task(trainer)[0] if dev is None else {}
        trainer.save_model(output_dir)
        device = device_name(trainer.args)
        if early_stopping_patience:
            epochs = epochs_of(trainer.state, task.metric)
            for folder in set(sort_checkpoints(output_dir)) - existing:  # only the ones this training wrote
                shutil.rmtree(folder)
    # The score recorded is the saved teacher's, loaded back as extraction loads it (float32, its own tokenizer
    # and batches), so its stored logits can be checked against the record (`check_teacher_reproduces`); the
    # Trainer's evaluation above may have run under bf16 autocast.
    reloaded = load_teacher(output_dir, task.label_names, max_length=data.max_length, **data.loading)
    predictions = {
        split: sharded_logits(reloaded, task_texts(task, rows))
        for split, rows in (("dev", dev), ("validation", validation))
        if rows is not None
    }
    texts = task_texts(task, validation)
    if model_name_or_path == SKLEARN_TEACHER and not np.array_equal(predictions["validation"], teacher(texts)):
        raise RuntimeError(f"{name}: the TF-IDF teacher saved in {output_dir} does not predict what it did.")
    metrics = {**metrics, **compute_task_metrics(task, predictions["validation"], validation["label"][:])}
    dev_fields = {}
    if dev is not None:
        dev_metrics = compute_task_metrics(task, predictions["dev"], dev["label"][:])
        dev_fields = {
            "dev_score": dev_metrics[task.metric],
            "dev_metrics": dev_metrics,
            "dev_split": data.dev_split,
        }
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
        processor=processor_name(),
        validation_fingerprint=input_fingerprint(validation, task.input_columns(validation)),
        validation_rows=len(validation),
        labelled_rows=data.options.get("labelled_rows"),
        max_length=None if model_name_or_path == SKLEARN_TEACHER else data.max_length,
        **dev_fields,
        **epochs,
        **(
            {}
            if task.is_regression
            else majority_shares(predictions["dev" if dev is not None else "validation"], choosing["label"][:])
        ),
    )
    record.save(output_dir)
    return record
