"""Teacher signals: where a run's teachers come from, and what they say about one batch.

The one place that turns a batch into a teacher signal, for `DistillationTrainer`:
- dense class logits `[batch, n_teachers, n_labels]` from the `teacher_logits` column (sequence classification);
- per-token top-k of causal LMs, a `tokens.TokenSignal`, from the `teacher_topk_ids`/`teacher_topk_logprobs`
  columns (`topk.py`);
- live teachers (`teacher_models=[...]`), run inside the training step on the student's batch (no gradient, eval
  mode, on the student's device): class logits, or full next-token distributions for causal LMs. For users with
  data augmentation or no storage, and to measure what sparse storage loses against dense online KD.
The fusion and the loss then treat stored and live teachers alike. The checks here run when the trainer is built.
"""

from __future__ import annotations

import logging
import math

import datasets
import numpy as np
import pyarrow.compute as pc
import torch
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES, MODEL_FOR_MASKED_LM_MAPPING_NAMES

from .fusion import check_teacher_index, check_teacher_logits, fusion_strategy
from .kd_losses import build_kd_loss
from .labels import check_label_values
from .logits import check_label_names, read_metadata, validate_logit_dataset
from .tokens import TokenSignal, live_log_probs
from .topk import (
    TOPK_IDS_COLUMN,
    TOPK_LOGPROBS_COLUMN,
    read_topk_metadata,
    validate_topk_dataset,
)

logger = logging.getLogger(__name__)

TOPK_COLUMNS = (TOPK_IDS_COLUMN, TOPK_LOGPROBS_COLUMN)


def on_host(tensor: torch.Tensor) -> bool:
    """Whether reading `tensor`'s values costs no host-device synchronisation (it lies in host memory).

    Args:
        tensor: Any tensor.
    """
    return tensor.device.type == "cpu"


def pools_last_token(model) -> bool:
    """Whether a sequence classifier is decoder-only (its architecture has a causal LM and no masked LM): it scores
    the last token, and its first token's state has seen only that token (no [CLS] summary of the input).

    Args:
        model: A transformers sequence classifier.
    """
    model_type = getattr(model.config, "model_type", None)
    return model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and model_type not in MODEL_FOR_MASKED_LM_MAPPING_NAMES


def is_causal_lm(model) -> bool:
    """Whether `model` is a causal LM: one of `AutoModelForCausalLM`'s classes or a subclass of one (a user's own
    model class), PEFT-wrapped ones included.

    Args:
        model: A transformers model, or a PEFT model wrapping one.
    """
    model = getattr(getattr(model, "base_model", model), "model", model) if hasattr(model, "peft_config") else model
    causal = set(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values())
    return any(cls.__name__ in causal for cls in type(model).__mro__)


def model_name(model) -> str:
    """A model's name for error messages: its Hub id or folder where known, else its class.

    Args:
        model: A transformers model.
    """
    return getattr(model, "name_or_path", "") or getattr(model.config, "_name_or_path", "") or type(model).__name__


def context_length(model) -> int | None:
    """The longest sequence `model` accepts (`max_position_embeddings`), or None where its config does not say.

    Args:
        model: A transformers model.
    """
    return getattr(model.config, "max_position_embeddings", None)


class TeacherSignals:
    """A run's teachers: stored columns, or live models. `from_batch` pops the stored columns off a batch (the
    student's forward never sees them) and returns the signal: None (no teachers in this batch), a dense
    `[batch, n_teachers, n_labels]` tensor, or a `TokenSignal`.

    Args:
        dense_column: the dense column's name (`DistillationConfig.teacher_logits_column`).
        token_level: the student is a causal LM (per-token signals).
        teachers: live teacher models, already prepared by `prepare_live_teachers`; their signal replaces any
            stored column.
    """

    def __init__(self, dense_column: str, token_level: bool, teachers: list | None = None):
        self.dense_column, self.token_level, self.teachers = dense_column, token_level, teachers or []
        self.columns = [dense_column, *TOPK_COLUMNS]

    def from_batch(self, inputs: dict) -> torch.Tensor | TokenSignal | None:
        """Pop the stored teacher columns off `inputs` and return the batch's teacher signal (see the class).

        Args:
            inputs: The collated batch, changed in place: the teacher columns are removed, whether used or not.
        """
        stored = {column: inputs.pop(column, None) for column in self.columns}
        if self.teachers:
            return self.run_teachers(inputs)
        if not self.token_level:
            return stored[self.dense_column]
        if stored[TOPK_IDS_COLUMN] is None or stored[TOPK_LOGPROBS_COLUMN] is None:
            return None
        return TokenSignal(stored[TOPK_LOGPROBS_COLUMN], stored[TOPK_IDS_COLUMN])

    @torch.no_grad()
    def run_teachers(self, inputs: dict) -> torch.Tensor | TokenSignal:
        """Every live teacher on the student's inputs: `[batch, n_teachers, n_labels]` float32 logits, or a
        full-vocabulary `TokenSignal` of float32 log-probabilities at T = 1.

        Args:
            inputs: The student's batch without the teacher columns (the teachers take the same inputs).
        """
        outputs = []
        for teacher in self.teachers:
            teacher.eval()  # the Trainer puts the student in train mode, never a teacher; kept so if a user does
            logits = teacher(**inputs).logits.float()
            outputs.append(live_log_probs(logits) if self.token_level else logits)
        stacked = torch.stack(outputs, dim=1)
        return TokenSignal(stacked) if self.token_level else stacked


def check_token_split(dataset, split: str, student, tokenizer, teachers: list, required: bool) -> int | None:
    """Check a causal-LM split before any work; return its number of stored teachers (None without).

    Refused: no `labels`; a row longer than the student's or a live teacher's context; no position with a
    next-token label (nothing to learn from); and, for stored top-k (required unless teachers are live), what
    `topk.validate_topk_dataset` refuses, against the student's tokenizer and vocabulary.

    Args:
        dataset: The split; one that is not a `datasets.Dataset` (streamed) is not checked.
        split: Its name, for error messages (only `train` must have a scored position).
        student: The student causal LM.
        tokenizer: The student's tokenizer, for the top-k format's vocabulary check; None: not compared.
        teachers: The live teachers, whose contexts the rows must fit; with them, stored top-k is not needed.
        required: The split must carry stored top-k teachers (without live teachers).
    """
    if not isinstance(dataset, datasets.Dataset):  # streamed: checked by the collator and the loss as it goes
        return None
    for column in ("input_ids", "labels"):
        if column not in dataset.column_names:
            raise ValueError(
                f"The {split} dataset has no {column!r} column (columns: {dataset.column_names}); causal-LM "
                "distillation needs input_ids and labels (the input ids, -100 where nothing is learnt)."
            )
    table = dataset.with_format("arrow", columns=["input_ids", "labels"])[:]
    lengths = pc.list_value_length(table.column("input_ids")).to_numpy(zero_copy_only=False)
    for model in [student, *teachers]:
        limit = context_length(model)
        if limit is not None and len(lengths) and lengths.max() > limit:
            raise ValueError(
                f"The {split} dataset has rows of up to {lengths.max()} tokens but {model_name(model)!r} reads at "
                f"most {limit} (max_position_embeddings): truncate the rows, e.g. tokenizer(..., truncation=True, "
                f"max_length={limit})."
            )
    labels = table.column("labels").combine_chunks()
    values = labels.flatten().to_numpy(zero_copy_only=False)
    check_labels_are_input_ids(split, labels, values, table.column("input_ids").combine_chunks(), lengths)
    starts = labels.offsets.to_numpy()[:-1] - labels.offsets.to_numpy()[0]
    scored = values != -100
    scored[starts[starts < len(scored)]] = False  # a row's first label is never predicted
    if split == "train" and not scored.any():
        raise ValueError(
            f"The {split} dataset has no scored position: every next-token label is -100, so there is nothing "
            "to learn from (completion-only masking that masks the completions too?)."
        )
    if teachers or not any(column in dataset.column_names for column in TOPK_COLUMNS):
        if required and not teachers:
            raise ValueError(
                f"The {split} dataset has no {TOPK_COLUMNS} columns (columns: {dataset.column_names}): attach "
                "teachers with distill_trainer.attach_teacher_topk, pass teacher_models, or set alpha=0."
            )
        return None
    return validate_topk_dataset(dataset, tokenizer, student.config.vocab_size)[1].n_teachers


def check_labels_are_input_ids(split: str, labels, values, input_ids, lengths) -> None:
    """Refuse causal-LM labels that are not the input ids (-100 aside): one label per input id, unshifted (the
    loss shifts them, as transformers' causal LMs do). Labels shifted already would train each position on the
    token after next by cross-entropy while the teachers' targets are for the next one.

    Args:
        split: The split's name, for the error message.
        labels: The `labels` column (one Arrow list array); `values`: its values, flat.
        input_ids: The `input_ids` column (one Arrow list array); `lengths`: its rows' lengths.
    """
    if not (pc.list_value_length(labels).to_numpy(zero_copy_only=False) == lengths).all():
        raise ValueError(
            f"The {split} dataset has rows whose labels and input_ids differ in length: one label per id."
        )
    differ = (values != -100) & (values != input_ids.flatten().to_numpy(zero_copy_only=False))
    if differ.any():
        rows = np.unique(np.repeat(np.arange(len(lengths)), lengths)[differ])
        raise ValueError(
            f"The {split} dataset's labels differ from its input_ids in {len(rows)} rows (first rows: "
            f"{rows[:5].tolist()}): labels are the input ids, -100 where nothing is learnt, not shifted (the loss "
            "shifts them, as transformers' causal LMs do)."
        )


def check_strategies(classes, token_level: bool, live: bool, calibrate: bool) -> None:
    """Refuse, before any work, fusion options the run's teachers cannot serve, each with what to use instead.

    Args:
        classes: The `FusionStrategy` classes configured (`fusion`, and `curriculum_fusion` if set).
        token_level: The student is a causal LM (per-token teachers).
        live: The teachers are live models, not stored logits.
        calibrate: `calibrate_teachers` is set.
    """
    for cls in classes:
        if token_level and not cls.supports_tokens:
            raise ValueError(f"fusion={cls.name!r} does not fuse per-token teachers of causal LMs: {cls.tokens_hint}.")
        if live and cls.fits_weights:
            raise ValueError(
                f"fusion={cls.name!r} fits weights on stored validation logits; with live teachers use 'weighted' "
                "with fusion_weights."
            )
    if calibrate and (token_level or live):
        raise ValueError(
            "calibrate_teachers fits temperatures on stored validation class logits: it applies to stored dense "
            "teachers only."
        )


def check_token_options(config, n_teachers: int | None, live: bool) -> None:
    """What `DistillationTrainer` refuses in a causal-LM run's config (fusion, KD loss, `teacher_index`), checked
    before a recipe loads the student or tokenizes any row.

    Args:
        config: The run's `DistillationConfig`.
        n_teachers: The number of teachers (stored or live); None: not known yet, `teacher_index` not checked.
        live: The teachers are live models.
    """
    if not config.uses_teachers:
        return
    strategies = [fusion_strategy(name) for name in (config.fusion, config.curriculum_fusion) if name]
    check_strategies(strategies, token_level=True, live=live, calibrate=config.calibrate_teachers)
    build_kd_loss(config.kd_loss, config.jsd_beta, tokens=True)
    if config.fusion == "single" and n_teachers:
        check_teacher_index(config.teacher_index, n_teachers)


def check_strategy_inputs(strategies: list, student, token_level: bool, train_dataset, label_names) -> None:
    """Refuse fusion strategies whose inputs this run cannot give them: the first-token hidden state of a
    decoder-only classifier student (its first token has seen only itself, so every example would get the same
    teacher weights), or the gold label of a train set without labels.

    Args:
        strategies: The configured fusion strategies' classes.
        student: The student.
        token_level: The student is a causal LM (per-token fusion reads no hidden state).
        train_dataset: The train set (its columns are checked where it is a `datasets.Dataset`).
        label_names: The trainer's label names.
    """
    readers = [cls.name for cls in strategies if cls.needs_hidden_state]
    if readers and not token_level and pools_last_token(student):
        raise ValueError(
            f"fusion {readers[0]!r} reads the student's first-token hidden state ([CLS] in an encoder), but "
            f"{type(student).__name__} is decoder-only: its first token has seen only itself, so every "
            "example would get the same teacher weights. Use a strategy that reads no hidden state, or an "
            "encoder student."
        )
    needs_labels = [cls.name for cls in strategies if cls.needs_labels]
    if needs_labels and isinstance(train_dataset, datasets.Dataset):
        if not {"label", "labels", *(label_names or [])} & set(train_dataset.column_names):
            raise ValueError(f"fusion {needs_labels[0]!r} weighs teachers by the gold label: the train set has none.")


def check_dense_split(dataset, split: str, column: str, student, label_names, required: bool) -> int | None:
    """Validate a classification split's labels and teacher column up front; return its number of teachers (None
    if absent). `label_names`: the Trainer's label column names.

    Args:
        dataset: The split (a `datasets.Dataset`, a streamed or torch dataset), or None.
        split: Its name, for error messages.
        column: The dense teacher column's name.
        student: The student, whose `num_labels` and `id2label` the labels and logits must match.
        label_names: The Trainer's label column names.
        required: The split must have the teacher column.
    """
    if getattr(student.config, "problem_type", None) == "multi_label_classification":
        raise ValueError(
            f"{model_name(student)} is a multi-label classifier (problem_type='multi_label_classification'): "
            "distillation fuses the teachers' class distributions and trains with cross-entropy, which would read "
            "its label vectors as class distributions. Train it with transformers.Trainer."
        )
    if dataset is None:
        return None
    num_labels = student.config.num_labels
    if isinstance(dataset, datasets.Dataset):
        check_label_values(dataset, num_labels, split, label_names)
        if column not in dataset.column_names:
            if required:
                raise ValueError(
                    f"The {split} dataset has no {column!r} column (columns: {dataset.column_names}). "
                    "Distillation with alpha > 0 needs teacher logits; set alpha=0 for plain fine-tuning."
                )
            return None
        id2label = student.config.id2label
        model_label_names = [id2label[i] for i in range(num_labels)] if id2label else None
        validate_logit_dataset(dataset, column, num_labels, model_label_names)
        return len(dataset[0][column])
    # A streaming dataset's [0] is a column lookup, not a row: read its first row by iterating.
    is_stream = isinstance(dataset, (datasets.IterableDataset, torch.utils.data.IterableDataset))
    first_row = next(iter(dataset)) if is_stream or not hasattr(dataset, "__getitem__") else dataset[0]
    if column not in first_row:
        if required:
            raise ValueError(f"The {split} dataset's rows have no {column!r} key.")
        return None
    first = torch.as_tensor(first_row[column], dtype=torch.float32).unsqueeze(0)
    check_teacher_logits(first, num_labels)
    return first.shape[1]


def check_regression(classes, args) -> None:
    """Refuse fusion options that mean nothing for one-output (regression) students.

    Args:
        classes: The `FusionStrategy` classes configured.
        args: The run's `DistillationConfig` (`calibrate_teachers`, `label_smoothing_factor`).
    """
    for cls in classes:
        if not cls.supports_regression:
            raise ValueError(
                f"fusion={cls.name!r} does not apply to regression (num_labels=1): {cls.regression_hint}."
            )
    if args.calibrate_teachers:
        raise ValueError(
            "calibrate_teachers does not apply to regression (num_labels=1): temperature scaling calibrates "
            "class probabilities. Use fusion='fitted' to weigh the teachers."
        )
    if args.label_smoothing_factor > 0:
        raise ValueError("label_smoothing_factor does not apply to regression (num_labels=1); set it to 0.")


def weights_from_metadata(dataset) -> list[float]:
    """`weighted` fusion without explicit weights uses the teachers' scores from the metadata (dense or top-k): on
    the dev split where every teacher has one, else on validation. A score below 0 (MCC, Pearson: worse than
    chance) weighs 0: such a teacher has nothing to teach.

    Args:
        dataset: The train set; its logit metadata (dense or top-k) must score every teacher.
    """
    metadata = (
        (read_metadata(dataset) or read_topk_metadata(dataset)) if isinstance(dataset, datasets.Dataset) else None
    )
    scores = metadata.weighting_scores if metadata else []
    if not scores or any(score is None for score in scores):
        raise ValueError(
            "fusion='weighted' needs fusion_weights (the train dataset's metadata has no "
            "validation score for every teacher)."
        )
    if not all(isinstance(score, (int, float)) and math.isfinite(score) for score in scores):
        raise ValueError(
            f"fusion='weighted': the metadata's teacher scores {scores} (dev_score where every teacher has one, else "
            "validation_score) must be finite numbers; "
            "re-extract the logits or pass fusion_weights."
        )
    if max(scores) <= 0:
        raise ValueError(f"fusion='weighted': no teacher scores above 0 ({scores}); pass fusion_weights.")
    if min(scores) < 0:
        logger.warning("fusion='weighted': teachers with scores below 0 get weight 0 (%s).", scores)
    return [max(score, 0.0) for score in scores]


def check_eval_against_train(eval_set, name: str, eval_teachers, n_teachers, train_set) -> None:
    """Refuse an eval split whose stored teachers are not the train set's in number, names and order, or label
    order (by their metadata, dense or top-k): its `eval_loss` (what early stopping and `load_best_model_at_end`
    read) would measure the student against other targets than those it is trained on, e.g. `single`'s teacher
    or `weighted`'s weights applied to another teacher. Only for runs that read stored teachers (not live ones).

    Args:
        eval_set: The eval split (checked by `check_dense_split` / `check_token_split` already).
        name: Its name, for the error message.
        eval_teachers: Its number of stored teachers (None: no teacher column, nothing to check).
        n_teachers: The train set's number of stored teachers (None: not known).
        train_set: The train set, whose metadata gives the label order.
    """
    if not eval_teachers:
        return
    if n_teachers and eval_teachers != n_teachers:
        raise ValueError(f"The {name} dataset has {eval_teachers} teachers but the train dataset has {n_teachers}.")
    train, evaluated = (stored_metadata(d) if isinstance(d, datasets.Dataset) else None for d in (train_set, eval_set))
    if train is None or evaluated is None:
        return
    teachers = [[teacher.name for teacher in metadata.teachers] for metadata in (train, evaluated)]
    revisions = [[teacher.revision for teacher in metadata.teachers] for metadata in (train, evaluated)]
    other_revision = any(None not in pair and pair[0] != pair[1] for pair in zip(*revisions, strict=False))
    if teachers[0] != teachers[1] or other_revision:
        raise ValueError(
            f"The {name} dataset's stored teachers are {teachers[1]} (revisions {revisions[1]}) but the train "
            f"dataset's are {teachers[0]} ({revisions[0]}), in column order: its eval_loss would score the student "
            "against other teachers. Extract both splits with the same teachers in the same order."
        )
    if hasattr(train, "label_names") and hasattr(evaluated, "label_names"):
        check_label_names(train.label_names, evaluated.label_names, f"the {name} dataset's teacher logits")


def stored_metadata(dataset: datasets.Dataset):
    """A dataset's stored-teacher metadata: the dense format's (`read_metadata`) or the top-k format's
    (`read_topk_metadata`), or None.

    Args:
        dataset: A split with teacher columns.
    """
    return read_metadata(dataset) or read_topk_metadata(dataset)
