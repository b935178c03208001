"""Causal-LM teachers for `train-teacher --task causal_lm`: fine-tuned on a data folder's prompt -> completion (or
text) rows with completion-only loss, early-stopped on the `dev` split's per-token NLL where the folder has one,
saved as a plain `AutoModelForCausalLM` folder with a `TeacherRecord` of their dev and validation NLL."""

from __future__ import annotations

import logging
import os
import shutil
import time

from transformers import EarlyStoppingCallback, TrainingArguments, set_seed
from transformers.trainer_utils import sort_checkpoints

from ..collator import DistillationDataCollator
from ..logits import input_fingerprint
from .args import TaskArguments, for_trainer
from .causal_data import (
    CAUSAL_LM_TASK,
    DEV_SPLIT,
    SMOLLM2,
    SMOLLM2_HUB_ID,
    CausalLMArguments,
    causal_split_names,
    check_context,
    load_causal_lm,
    load_causal_tokenizer_and_config,
    load_text_split,
    tokenize_causal,
)
from .causal_lm import SCORE_METRIC
from .causal_metrics import completion_metrics, split_metrics
from .early_stopping import early_stopping, epochs_of, evaluations_per_epoch, resumable_checkpoint
from .output_dirs import check_output_dir, mark_output_dir
from .runs import TeacherRecord, base_model_name, default_teacher_name, device_name, processor_name
from .training import TaskTrainer

logger = logging.getLogger(__name__)


class CausalTeacherTrainer(TaskTrainer):
    """A `Trainer` whose evaluation is the exact per-token NLL of the eval rows' completions (`completion_metrics`:
    summed over tokens, then divided once), not the Trainer's mean of per-batch means, so early stopping picks
    the epoch by the number the record states."""

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict:
        rows = self.eval_dataset if eval_dataset is None else eval_dataset
        found = completion_metrics(self.model, rows, self.processing_class, self.args.per_device_eval_batch_size)
        metrics = {f"{metric_key_prefix}_{key.removeprefix('eval_')}": value for key, value in found.items()}
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics


def train_causal_teacher(
    task_args: TaskArguments,
    columns: CausalLMArguments,
    model_name_or_path: str,
    training_args: TrainingArguments,
    teacher_name: str | None = None,
    early_stopping_patience: int | None = None,
) -> TeacherRecord:
    """Fine-tune a causal LM on `<data>/train` and save it (a plain folder, float32 weights and its tokenizer) with
    `teacher_info.json`: dev and validation NLL, perplexity and token likelihood, measured on the saved teacher
    loaded back as extraction loads it; `validation_score` is the validation token likelihood.

    With a `<data>/dev` file, the teacher is evaluated on it after every epoch (more often on long epochs) and
    stops once its dev NLL has not improved for `early_stopping_patience` epochs (default 1; `num_train_epochs` is
    then the most), keeping the best weights. Without one it trains every epoch and keeps the last (a warning
    says so). Columns, `max_length` against the context and the rows are checked before the weights load.

    Args:
        task_args: `--data` (a folder with train, validation and optionally dev files), row limits
            (`max_eval_rows` limits dev and validation), `max_length`, loading options.
        columns: Which columns hold the text; `gguf_file` for a GGUF model.
        model_name_or_path: A folder, a Hub id, `SmolLM2-135M-Instruct`, or a folder/repo holding `gguf_file`.
        training_args: The Trainer's options (epochs, learning rate, batch sizes, output_dir, seed).
        teacher_name: Name in the record and in logit datasets (default `<model>-causal_lm`).
        early_stopping_patience: Epochs without a better dev NLL before stopping (needs a dev file).
    """
    if not model_name_or_path:
        raise ValueError("--model_name_or_path is required.")
    check_output_dir(training_args.output_dir, TeacherRecord.FILE)
    names = causal_split_names(task_args.data)
    with_dev = DEV_SPLIT in names
    if early_stopping_patience is not None and early_stopping_patience < 1:
        raise ValueError(f"--early_stopping_patience must be at least 1 epoch, got {early_stopping_patience}.")
    if early_stopping_patience is not None and not with_dev:
        raise ValueError(
            f"--early_stopping_patience needs a {DEV_SPLIT} split in --data {task_args.data} (dev.jsonl|json|csv|"
            "parquet): a causal teacher stops early on its dev NLL only (the validation split stays unseen)."
        )
    tokenizer, config = load_causal_tokenizer_and_config(model_name_or_path, columns.gguf_file, **task_args.loading)
    check_context(config, task_args.max_length, f"teacher {model_name_or_path}")
    splits = {
        split: tokenize_causal(
            load_text_split(task_args.data, split, task_args.row_limit(split)),
            tokenizer,
            columns,
            task_args.max_length,
            split,
        )
        for split in names
    }
    if not with_dev:
        logger.warning(
            "--data %s has no %s split: the teacher trains for --num_train_epochs without early stopping and keeps "
            "its last weights (prepare-causal writes one; the validation split is never used to choose).",
            task_args.data,
            DEV_SPLIT,
        )
    output_dir, started = training_args.output_dir, time.perf_counter()
    set_seed(training_args.seed)
    _, model = load_causal_lm(model_name_or_path, columns.gguf_file, **task_args.loading)
    args, callbacks, resume = for_trainer(training_args), [], training_args.resume_from_checkpoint
    if with_dev:
        evaluations = evaluations_per_epoch(len(splits["train"]), args)
        args = early_stopping(args, "loss", len(splits["train"]), evaluations, greater_is_better=False)
        callbacks = [EarlyStoppingCallback((early_stopping_patience or 1) * evaluations)]
        resume = resume or resumable_checkpoint(output_dir, args)
    trainer = CausalTeacherTrainer(
        model=model,
        args=args,
        processing_class=tokenizer,
        data_collator=DistillationDataCollator(tokenizer),
        train_dataset=splits["train"],
        eval_dataset=splits.get(DEV_SPLIT),
        callbacks=callbacks,
    )
    # Checkpoints already there are this teacher's (an interrupted run, resumed) or someone else's (kept).
    existing = set(sort_checkpoints(output_dir)) if os.path.isdir(output_dir) and not resume else set()
    mark_output_dir(output_dir, TeacherRecord.FILE)
    trainer.train(resume_from_checkpoint=resume)
    trainer.save_model(output_dir)
    epochs = epochs_of(trainer.state, "loss", greater_is_better=False) if with_dev else {}
    if trainer.is_world_process_zero():
        tokenizer.save_pretrained(output_dir)
        for folder in set(sort_checkpoints(output_dir)) - existing:  # only the ones this training wrote
            shutil.rmtree(folder)
    trainer.accelerator.wait_for_everyone()
    # Scored as extraction will score it: the saved folder, loaded back in float32 (training may have autocast).
    _, saved = load_causal_lm(output_dir, **task_args.loading)
    saved.to(trainer.args.device)
    metrics = {}
    for split in names[1:]:
        metrics.update(split_metrics(saved, splits[split], tokenizer, split, args.per_device_eval_batch_size))
    record = TeacherRecord(
        name=teacher_name or default_teacher_name(model_name_or_path, CAUSAL_LM_TASK),
        base_model=SMOLLM2_HUB_ID if model_name_or_path == SMOLLM2 else base_model_name(model_name_or_path),
        task=CAUSAL_LM_TASK,
        metric=SCORE_METRIC,
        validation_score=metrics["validation_token_likelihood"],
        metrics=metrics,
        train_rows=len(splits["train"]),
        train_runtime=time.perf_counter() - started,
        learning_rate=training_args.learning_rate,
        device=device_name(trainer.args),
        processor=processor_name(),
        validation_fingerprint=input_fingerprint(splits["validation"], ["input_ids"]),
        dev_score=metrics.get("dev_token_likelihood"),
        **epochs,
    )
    if trainer.is_world_process_zero():
        record.save(output_dir)  # last: a folder with its record is a finished teacher
    return record
