"""The knowledge-distillation loss, as a pure tensor function.

Kept free of any Trainer state so that it can be checked against hand-worked numbers and reused
outside `DistillationTrainer` (e.g. in an online-distillation loop).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def check_kd_hyperparameters(temperature: float, alpha: float) -> None:
    """Refuse hyperparameters that make the loss meaningless, before any work is done."""
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
) -> dict[str, torch.Tensor]:
    """The two terms of `kd_loss`, unweighted, so that each can be logged under its own name.

    A term whose weight is zero is not computed (and not returned), so `alpha=0` needs no teacher
    logits and `alpha=1` needs no labels. Both terms are computed in float32, also under bf16/fp16
    autocast: the KL of two nearly equal softmaxes loses most of its digits in 8-bit mantissas.
    """
    check_kd_hyperparameters(temperature, alpha)
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
            terms["kd"] = soft_target_kl(student_logits, teacher_logits, temperature)
        if alpha < 1:
            if labels is None:
                raise ValueError("labels are required for the cross-entropy term when alpha < 1.")
            # The mean over labelled rows, as reduction="mean" takes it, but 0 (not NaN) for a batch with none:
            # unlabelled rows (-100) still learn from the teachers.
            labelled = (labels != -100).sum().clamp(min=1)
            ce = F.cross_entropy(student_logits, labels.long(), label_smoothing=label_smoothing, reduction="sum")
            terms["ce"] = ce / labelled
    return terms


def combine_kd_terms(terms: dict[str, torch.Tensor], alpha: float) -> torch.Tensor:
    """`alpha * kd + (1 - alpha) * ce` over the terms `kd_loss_terms` returned."""
    loss = 0.0
    if "kd" in terms:
        loss = loss + alpha * terms["kd"]
    if "ce" in terms:
        loss = loss + (1 - alpha) * terms["ce"]
    return loss


def kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor | None,
    labels: torch.Tensor | None,
    temperature: float,
    alpha: float,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """`alpha * KL(softmax(t/T) || softmax(s/T)) * T^2 + (1 - alpha) * CE(s, y)`.

    Args:
        student_logits: `[batch, n_labels]` raw student logits.
        teacher_logits: `[batch, n_labels]` already-fused raw teacher logits (see `fuse_logits`);
            may be `None` only when `alpha == 0`.
        labels: `[batch]` class ids (`-100` is ignored by CE); may be `None` only when `alpha == 1`.
        temperature: softening temperature T > 0 of the soft term.
        alpha: weight of the soft term in [0, 1]; `alpha=0` is plain fine-tuning.
        label_smoothing: applied to the CE term, as `TrainingArguments.label_smoothing_factor` does.
    """
    terms = kd_loss_terms(student_logits, teacher_logits, labels, temperature, alpha, label_smoothing)
    return combine_kd_terms(terms, alpha)
