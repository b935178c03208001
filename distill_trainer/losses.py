"""The knowledge-distillation loss, as a pure tensor function.

Kept free of any Trainer state so that it can be checked against hand-worked numbers and reused
outside `DistillationTrainer` (e.g. in an online-distillation loop). A student with one output
(`num_labels == 1`, as transformers treats it: regression, e.g. STS-B) gets the regression form
`alpha * MSE(student, teacher) + (1 - alpha) * MSE(student, label)`.
"""

from __future__ import annotations

import logging
import math

import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)
DEFAULT_TEMPERATURE = 6.0  # DistillationConfig's default; regression ignores T and warns about any other value
_warned: set[str] = set()


def warn_once(key: str, message: str) -> None:
    """Log `message` the first time `key` is seen in this process (not at every training step).

    Args:
        key: What the warning is about; one warning per key and process.
        message: The warning to log.
    """
    if key not in _warned:
        _warned.add(key)
        logger.warning(message)


def check_kd_hyperparameters(temperature: float, alpha: float) -> None:
    """Refuse hyperparameters that make the loss meaningless, before any work is done.

    Args:
        temperature: T; must be finite and > 0.
        alpha: The soft term's weight; must be in [0, 1].
    """
    if not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature}.")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1] (the weight of the soft-target term), got {alpha}.")


def soft_target_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(softmax(t/T) || softmax(s/T)) * T^2, averaged over the batch.

    The T^2 factor (Hinton et al., 2015) keeps the soft term's gradient magnitude independent of T,
    so that alpha means the same thing at every temperature. Computed in float64 (except on MPS, which
    has none) and returned as float32: at large T both softmaxes are nearly uniform, the KL is of order
    1/T^2, and float32 log-probabilities cancel to noise (at T=1e4 it came out negative).

    Args:
        student_logits: `[batch, n_labels]` raw student logits.
        teacher_logits: `[batch, n_labels]` fused raw teacher logits.
        temperature: T > 0, applied to both.
    """
    precise = torch.float32 if student_logits.device.type == "mps" else torch.float64
    student_log_probs = F.log_softmax(student_logits.to(precise) / temperature, dim=-1)
    teacher_log_probs = F.log_softmax(teacher_logits.to(precise) / temperature, dim=-1)
    kl = F.kl_div(student_log_probs, teacher_log_probs, reduction="batchmean", log_target=True)
    return (kl * temperature**2).float()


def kd_loss_terms(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor | None,
    labels: torch.Tensor | None,
    temperature: float,
    alpha: float,
    label_smoothing: float = 0.0,
    soft_term=soft_target_kl,
) -> dict[str, torch.Tensor]:
    """The two terms of `kd_loss`, unweighted, so that each can be logged under its own name.

    A term whose weight is zero is not computed (and not returned), so `alpha=0` needs no teacher
    logits and `alpha=1` needs no labels. Both terms are computed in float32, also under bf16/fp16
    autocast: the KL of two nearly equal softmaxes loses most of its digits in 8-bit mantissas.
    `soft_term(student, teacher, T)` is the soft-target loss (a registered `KDLoss`'s `dense`; default
    forward KL).

    Args:
        student_logits: `[batch, n_labels]` raw student logits (`[batch, 1]`: regression, see `regression_kd_terms`).
        teacher_logits: `[batch, n_labels]` fused raw teacher logits; may be None only when `alpha == 0`.
        labels: `[batch]` class ids (-100: unlabelled) or float targets; may be None only when `alpha == 1`.
        temperature: T > 0 of the soft term.
        alpha: The soft term's weight in [0, 1]; decides which terms are computed.
        label_smoothing: Applied to the CE term (`TrainingArguments.label_smoothing_factor`).
        soft_term: `soft_term(student, teacher, T)`, the soft-target loss (not used for regression).
    """
    check_kd_hyperparameters(temperature, alpha)
    if student_logits.dim() == 2 and student_logits.shape[-1] == 1:
        return regression_kd_terms(student_logits, teacher_logits, labels, temperature, alpha)
    terms = {}
    with torch.autocast(student_logits.device.type, enabled=False):
        student_logits = student_logits.float()
        if alpha > 0:
            if teacher_logits is None:
                raise ValueError("teacher logits are required for the soft-target term when alpha > 0.")
            if student_logits.shape != teacher_logits.shape:
                raise ValueError(
                    f"Fused teacher logits have shape {tuple(teacher_logits.shape)} but the student's logits have "
                    f"shape {tuple(student_logits.shape)}: teachers and student must share one label space."
                )
            terms["kd"] = soft_term(student_logits, teacher_logits, temperature)
        if alpha < 1:
            if labels is None:
                raise ValueError("labels are required for the cross-entropy term when alpha < 1.")
            # The mean over labelled rows, as reduction="mean" takes it, but 0 (not NaN) for a batch with none:
            # unlabelled rows (-100) still learn from the teachers.
            labelled = (labels != -100).sum().clamp(min=1)
            ce = F.cross_entropy(student_logits, labels.long(), label_smoothing=label_smoothing, reduction="sum")
            terms["ce"] = ce / labelled
    return terms


def regression_kd_terms(
    student: torch.Tensor, teacher: torch.Tensor | None, labels: torch.Tensor | None, temperature: float, alpha: float
) -> dict[str, torch.Tensor]:
    """`kd` = MSE(student, fused teacher) and `mse` = MSE(student, label) for `[batch, 1]` outputs.

    A temperature softens class probabilities; a scalar prediction has none, so T does not apply (a
    non-default T is reported once). Rows labelled -100 or NaN are left out of the label term (0 for a batch
    without any), and still learn from the teachers.

    Args:
        student: `[batch, 1]` student predictions.
        teacher: `[batch, 1]` fused teacher predictions; may be None only when `alpha == 0`.
        labels: `[batch]` (or `[batch, 1]`) float targets, -100 or NaN: unlabelled; may be None only when `alpha == 1`.
        temperature: Not applied; a value other than the default is warned about once.
        alpha: The teacher term's weight in [0, 1]; decides which terms are computed.
    """
    if temperature != DEFAULT_TEMPERATURE:
        warn_once("regression-temperature", f"temperature={temperature} does not apply to regression (num_labels=1).")
    terms = {}
    with torch.autocast(student.device.type, enabled=False):
        student = student.float()[:, 0]
        if alpha > 0:
            if teacher is None or teacher.shape != (len(student), 1):
                shape = None if teacher is None else tuple(teacher.shape)
                raise ValueError(
                    f"Regression needs fused teacher predictions of shape [{len(student)}, 1], got {shape}."
                )
            terms["kd"] = F.mse_loss(student, teacher.float()[:, 0])
        if alpha < 1:
            if labels is None:
                raise ValueError("labels are required for the label term when alpha < 1.")
            labels = labels.float().reshape(-1)
            labelled = (labels != -100) & torch.isfinite(labels)
            squared = (student - labels.nan_to_num(0.0)) ** 2
            terms["mse"] = (squared * labelled).sum() / labelled.sum().clamp(min=1)
    return terms


def combine_kd_terms(terms: dict[str, torch.Tensor], alpha: float) -> torch.Tensor:
    """`alpha * kd + (1 - alpha) * ce` (`mse` for regression) over the terms `kd_loss_terms` returned.

    Args:
        terms: `kd_loss_terms`' (or `token_kd_terms`') dict: `kd`, and `ce` or `mse`, those that were computed.
        alpha: The weight of `kd`; the label term gets 1 - alpha.
    """
    loss = 0.0
    if "kd" in terms:
        loss = loss + alpha * terms["kd"]
    for label_term in ("ce", "mse"):
        if label_term in terms:
            loss = loss + (1 - alpha) * terms[label_term]
    return loss


def kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor | None,
    labels: torch.Tensor | None,
    temperature: float,
    alpha: float,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """`alpha * KL(softmax(t/T) || softmax(s/T)) * T^2 + (1 - alpha) * CE(s, y)`; for `[batch, 1]` outputs
    (regression) `alpha * MSE(s, t) + (1 - alpha) * MSE(s, y)`, where T does not apply (see `regression_kd_terms`).

    Args:
        student_logits: `[batch, n_labels]` raw student logits (`[batch, 1]`: regression predictions).
        teacher_logits: `[batch, n_labels]` already-fused raw teacher logits (see `fuse_logits`);
            may be `None` only when `alpha == 0`.
        labels: `[batch]` class ids (`-100` is ignored by CE), or float targets for regression; may be `None`
            only when `alpha == 1`.
        temperature: softening temperature T > 0 of the soft term.
        alpha: weight of the soft term in [0, 1]; `alpha=0` is plain fine-tuning.
        label_smoothing: applied to the CE term, as `TrainingArguments.label_smoothing_factor` does.
    """
    terms = kd_loss_terms(student_logits, teacher_logits, labels, temperature, alpha, label_smoothing)
    return combine_kd_terms(terms, alpha)
