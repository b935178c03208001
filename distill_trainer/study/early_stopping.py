"""Teachers fine-tuned until their validation score stops improving: evaluation and checkpoint steps, resuming
an interrupted run, what the record says about the epochs, and whether a teacher collapsed to one class."""

from __future__ import annotations

import json
import logging
import math
import os

import numpy as np
from transformers import TrainingArguments
from transformers.trainer_utils import get_last_checkpoint

from .args import with_overrides

logger = logging.getLogger(__name__)


CHECKPOINT_EVERY_STEPS = 500  # early-stopped teachers: evaluate and checkpoint at least this often


def evaluations_per_epoch(rows: int, args: TrainingArguments) -> int:
    """How often per epoch an early-stopped teacher is evaluated and checkpointed: once, or more where an epoch
    is long (MPNet on full SST-2: 2,073 steps, about an hour on 2 CPU cores in float32), so an interrupted run
    loses at most CHECKPOINT_EVERY_STEPS steps.

    Args:
        rows: Training rows per epoch.
        args: The teacher's training arguments (per-device batch size, world size, gradient accumulation).
    """
    return max(1, math.ceil(steps_per_epoch(rows, args) / CHECKPOINT_EVERY_STEPS))


def steps_per_epoch(rows: int, args: TrainingArguments) -> int:
    """Optimizer steps per epoch over `rows` training rows, the last partial batch counted.

    Args:
        rows: Training rows per epoch.
        args: The run's training arguments (per-device batch size, world size, gradient accumulation).
    """
    return math.ceil(rows / (args.per_device_train_batch_size * args.world_size * args.gradient_accumulation_steps))


def early_stopping(
    args: TrainingArguments, metric: str, rows: int, evaluations: int, greater_is_better: bool = True
) -> TrainingArguments:
    """`args` that evaluate and checkpoint `evaluations` times per epoch and end on the best weights by `metric`
    (EarlyStoppingCallback's patience counts evaluations: `patience * evaluations` for a patience in epochs);
    `greater_is_better=False` for a loss (a causal teacher's dev NLL).

    Args:
        args: The teacher's training arguments (left unchanged: a copy is returned).
        metric: The evaluation metric that picks the best weights, without the `eval_` prefix.
        rows: Training rows per epoch.
        evaluations: Evaluations (and checkpoints) per epoch (`evaluations_per_epoch`).
        greater_is_better: Whether a higher `metric` is better (False for a loss).
    """
    every = math.ceil(steps_per_epoch(rows, args) / evaluations)
    return with_overrides(
        args,
        eval_strategy="steps",
        save_strategy="steps",
        eval_steps=every,
        save_steps=every,
        load_best_model_at_end=True,
        metric_for_best_model=metric,
        greater_is_better=greater_is_better,
        save_total_limit=1,
    )


def resumable_checkpoint(output_dir: str, args: TrainingArguments) -> str | None:
    """The last checkpoint an interrupted early-stopped run left in `output_dir`, if it was trained with these
    settings (batch size, epochs, evaluation steps); a `ValueError` naming them if not.

    Args:
        output_dir: The teacher's folder, where the Trainer writes its `checkpoint-*` folders.
        args: The run's training arguments (`early_stopping`'s), compared with the checkpoint's state.
    """
    last = get_last_checkpoint(output_dir) if os.path.isdir(output_dir) else None
    if last is None:
        return None
    with open(os.path.join(last, "trainer_state.json")) as handle:
        state = json.load(handle)
    wanted = {"train_batch_size": args.per_device_train_batch_size * max(args.n_gpu, 1), "eval_steps": args.eval_steps}
    wanted["num_train_epochs"] = args.num_train_epochs
    differ = {key: (state.get(key), value) for key, value in wanted.items() if state.get(key) != value}
    if differ:
        raise ValueError(
            f"{last} is from a run with other settings ({differ}: found, wanted); remove the checkpoints of "
            f"{output_dir} or restore the settings to resume it."
        )
    logger.warning("Resuming the teacher's training from %s.", last)
    return last


def epochs_of(state, metric: str, greater_is_better: bool = True) -> dict:
    """Where early stopping ended (`epochs_trained`) and which epoch's weights it kept (`best_epoch`).

    Args:
        state: The finished Trainer's `TrainerState` (its `epoch` and `log_history`).
        metric: The metric early stopping compared, without the `eval_` prefix.
        greater_is_better: Whether a higher `metric` is better (False for a loss).
    """
    evaluations = [log for log in state.log_history if f"eval_{metric}" in log]
    best = (max if greater_is_better else min)(evaluations, key=lambda log: log[f"eval_{metric}"], default={})
    return {"epochs_trained": state.epoch, "best_epoch": best.get("epoch")}


def majority_shares(predictions: np.ndarray, labels) -> dict:
    """How much of the validation split the commonest predicted class and the commonest label cover.

    Args:
        predictions: The teacher's logits, `[rows, n_labels]` (the class is their argmax).
        labels: The gold labels, in row order.
    """
    predicted, labels = np.asarray(predictions).argmax(-1), np.asarray(labels)
    return {
        "majority_prediction_share": float(np.bincount(predicted).max() / len(predicted)),
        "majority_label_share": float(np.bincount(labels).max() / len(labels)),
    }
