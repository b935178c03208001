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
import pyarrow.compute as pc
import torch
from transformers import AutoTokenizer
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES, MODEL_FOR_MASKED_LM_MAPPING_NAMES

from .fusion import check_teacher_logits
from .labels import check_label_values
from .logits import check_label_names, read_metadata, validate_logit_dataset
from .tokens import TokenSignal, live_log_probs
from .topk import (
    TOPK_IDS_COLUMN,
    TOPK_LOGPROBS_COLUMN,
    TokenizerInfo,
    check_same_vocabulary,
    read_topk_metadata,
    tokenizer_info,
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
    """Whether `model` is a causal LM (`AutoModelForCausalLM`'s classes, PEFT-wrapped ones included).

    Args:
        model: A transformers model, or a PEFT model wrapping one.
    """
    model = getattr(getattr(model, "base_model", model), "model", model) if hasattr(model, "peft_config") else model
    return type(model).__name__ in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values()


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


def prepare_live_teachers(teachers, student, device, token_level: bool, tokenizer=None) -> list:
    """Move live teachers to the student's device, in eval mode without gradients, after refusing teachers that
    cannot teach this student: another vocabulary (causal LMs) or another label space (classification).

    A causal teacher reads the student's input ids, so one of another vocabulary of the same size would read other
    tokens without any error: where the tokenizer saved with the teacher can be found without a download (its
    folder, or the Hub cache), its vocabulary must be the student's tokenizer's; otherwise only the sizes are
    compared.

    Args:
        teachers: The live teacher models (`teacher_models`), or None.
        student: The student, whose vocabulary or label count the teachers must share.
        device: The device to move them to (the student's).
        token_level: The student is a causal LM; the teachers must then be causal LMs too.
        tokenizer: The student's tokenizer (the trainer's `processing_class`); None: the one saved with the student.
    """
    teachers = list(teachers or [])
    if token_level and teachers:  # the student's vocabulary, read once for every teacher
        tokenizer = tokenizer if hasattr(tokenizer, "get_vocab") else saved_tokenizer(student)
        student_vocabulary = tokenizer_info(tokenizer) if tokenizer is not None else None
    for teacher in teachers:
        if is_causal_lm(teacher) != token_level:
            kind = "causal LMs" if token_level else "sequence classifiers"
            raise ValueError(f"Live teacher {model_name(teacher)!r} does not match the student: both must be {kind}.")
        vocabularies = [getattr(m.config.get_text_config(), "vocab_size", None) for m in (teacher, student)]
        if None not in vocabularies and vocabularies[0] != vocabularies[1]:
            raise ValueError(
                f"Live teacher {model_name(teacher)!r} has a vocabulary of {vocabularies[0]} tokens but the student "
                f"{model_name(student)!r} has {vocabularies[1]}: a live teacher reads the student's input ids, so "
                "they must share one tokenizer (cross-tokenizer distillation is not supported)."
            )
        if token_level:
            check_saved_vocabulary(teacher, student_vocabulary)
        if not token_level and teacher.config.num_labels != student.config.num_labels:
            raise ValueError(
                f"Live teacher {model_name(teacher)!r} has {teacher.config.num_labels} labels but the student has "
                f"{student.config.num_labels}."
            )
        names = [named_labels(m) for m in (teacher, student)]
        if not token_level and None not in names and [n.lower() for n in names[0]] != [n.lower() for n in names[1]]:
            raise ValueError(
                f"Live teacher {model_name(teacher)!r} has labels {names[0]} but the student's id2label has "
                f"{names[1]}: its logits would be read in the student's label order. Fix either model's id2label."
            )
        teacher.to(device).eval().requires_grad_(False)
    return teachers


def check_saved_vocabulary(teacher, student_vocabulary: TokenizerInfo | None) -> None:
    """Refuse a live causal teacher whose saved tokenizer's vocabulary is not the student's tokenizer's (a check
    of what can be found without a download; see `prepare_live_teachers`).

    Args:
        teacher: The live teacher.
        student_vocabulary: The student's tokenizer's `tokenizer_info`; None: not known, nothing is compared.
    """
    teacher_tokenizer = saved_tokenizer(teacher) if student_vocabulary is not None else None
    if teacher_tokenizer is not None:
        owner = f"Live teacher {model_name(teacher)!r}"
        check_same_vocabulary(tokenizer_info(teacher_tokenizer), student_vocabulary, "the student", owner)


def saved_tokenizer(model):
    """The tokenizer saved with a model, from its folder or the Hub cache (never downloaded), or None.

    Args:
        model: A transformers model; its `name_or_path` says where it was loaded from.
    """
    path = getattr(model, "name_or_path", "") or ""
    try:
        return AutoTokenizer.from_pretrained(path, local_files_only=True, trust_remote_code=False) if path else None
    except (OSError, ValueError):  # none saved there (or not cached): there is nothing to compare
        return None


def named_labels(model) -> list[str] | None:
    """A classifier's label names in id order, or None where they are all transformers' placeholders `LABEL_i`
    (which say nothing about the classes, so no order can be checked).

    Args:
        model: A sequence classifier.
    """
    names = [model.config.id2label[i] for i in range(model.config.num_labels)]
    return None if all(name == f"LABEL_{i}" for i, name in enumerate(names)) else names


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
    """Refuse an eval split whose stored teachers are not the train set's in number or label order (by their
    metadata): its `eval_loss` would measure the student against other targets than those it is trained on. Only
    for runs that read stored teachers (not live ones).

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
    train, evaluated = (read_metadata(d) if isinstance(d, datasets.Dataset) else None for d in (train_set, eval_set))
    if train is not None and evaluated is not None:
        check_label_names(train.label_names, evaluated.label_names, f"the {name} dataset's teacher logits")
