"""The soft-target losses, behind one registered interface like the fusion strategies.

`DistillationConfig.kd_loss` names one: `forward_kl` (KL(teacher || student), Hinton et al.; the default),
`reverse_kl` (KL(student || teacher), mode-seeking, as in MiniLLM), `jsd` (the generalized Jensen-Shannon
divergence of GKD, weighted by `jsd_beta`) or `mse` (matching raw logits). Each declares what it supports: dense
class logits, per-token teacher distributions of causal LMs (`tokens`: stored top-k or live teachers), and
one-output regression students; the trainer refuses an unsupported combination with the class's `hint` before any
work. Register your own with `@register_kd_loss("name")`.

Divergences work on log-probabilities over the last dimension (classes, the vocabulary, or a top-k's k + 1
buckets, see `tokens.token_log_probs`), so one definition serves every signal.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
import torch.nn.functional as F

from .losses import soft_target_kl


def precise_dtype(device: torch.device) -> torch.dtype:
    """float64 where the device has it (not MPS): at large T the divergences are of order 1/T^2 and float32
    log-probabilities cancel to noise (see `losses.soft_target_kl`).

    Args:
        device: The device the loss is computed on.
    """
    return torch.float32 if device.type == "mps" else torch.float64


def forward_kl(teacher_log_probs: torch.Tensor, student_log_probs: torch.Tensor) -> torch.Tensor:
    """KL(teacher || student) summed over the last dimension.

    Args:
        teacher_log_probs: The teacher's log-probabilities.
        student_log_probs: The student's, of the same shape.
    """
    return (teacher_log_probs.exp() * (teacher_log_probs - student_log_probs)).sum(-1)


class KDLoss:
    """Base class of soft-target losses: implement `divergence` (or `dense`) and declare what is supported.

    - `supports_dense`: fused class logits `[batch, n_labels]` (sequence classification).
    - `supports_tokens`: per-token teacher distributions of causal LMs (top-k with a tail bucket, or full
      vocabularies from live teachers).
    - `supports_regression`: one-output students, whose soft term is then the MSE to the teachers' predictions.
    - `hint`: what to use instead where something is not supported.
    - `formula`, `formula_note`: the soft term in the student's card (`card.loss_text`), in the student's logits
      `s`, the fused teachers `t` and T, and what to add about it (`{beta}` becomes `jsd_beta`). Empty: the card
      names the loss.

    Args:
        jsd_beta: The teacher's weight in `jsd`'s mixture; kept for every loss, used by `jsd` only.
    """

    name: ClassVar[str] = ""
    formula: ClassVar[str] = ""
    formula_note: ClassVar[str] = ""
    supports_dense: ClassVar[bool] = True
    supports_tokens: ClassVar[bool] = True
    supports_regression: ClassVar[bool] = False
    hint: ClassVar[str] = ""

    def __init__(self, jsd_beta: float = 0.5):
        self.jsd_beta = jsd_beta

    def divergence(self, teacher_log_probs: torch.Tensor, student_log_probs: torch.Tensor) -> torch.Tensor:
        """Per row, summed over the last dimension, of two log-probability tensors of one shape.

        Args:
            teacher_log_probs: The target distribution's log-probabilities.
            student_log_probs: The student's, of the same shape.
        """
        raise NotImplementedError

    def dense(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
        """The batch mean of `divergence` between softmax(t/T) and softmax(s/T), times T^2 (float32 result): T^2
        keeps the soft term's gradients on the scale of the hard term's as T grows (Hinton et al.).

        Args:
            student_logits: `[batch, n_labels]` student logits.
            teacher_logits: `[batch, n_labels]` fused teacher logits.
            temperature: T, applied to both.
        """
        precise = precise_dtype(student_logits.device)
        student = F.log_softmax(student_logits.to(precise) / temperature, dim=-1)
        teacher = F.log_softmax(teacher_logits.to(precise) / temperature, dim=-1)
        return (self.divergence(teacher, student).mean() * temperature**2).float()


KD_LOSS_REGISTRY: dict[str, type[KDLoss]] = {}


def register_kd_loss(name: str):
    """Class decorator: make a `KDLoss` subclass available as `kd_loss=name` (config and recipes' `--kd_loss`).

    Args:
        name: the name to register; one already taken is refused, so a typo cannot shadow a built-in loss.

    Raises:
        TypeError: the decorated object is not a `KDLoss` subclass.
        ValueError: the name is taken.
    """

    def register(cls: type[KDLoss]) -> type[KDLoss]:
        if not (isinstance(cls, type) and issubclass(cls, KDLoss)):
            raise TypeError(f"register_kd_loss({name!r}) needs a KDLoss subclass, got {cls!r}.")
        if name in KD_LOSS_REGISTRY and KD_LOSS_REGISTRY[name] is not cls:
            raise ValueError(f"A KD loss named {name!r} already exists; choose another name.")
        cls.name = name
        KD_LOSS_REGISTRY[name] = cls
        return cls

    return register


def kd_loss_class(name: str) -> type[KDLoss]:
    """The registered loss named `name`, or a `ValueError` listing the registered names.

    Args:
        name: A name given to `register_kd_loss` (built-in: see `KD_LOSSES`).
    """
    if name not in KD_LOSS_REGISTRY:
        raise ValueError(f"Unknown kd_loss {name!r}; choose one of {tuple(KD_LOSS_REGISTRY)}.")
    return KD_LOSS_REGISTRY[name]


def check_jsd_beta(beta: float) -> None:
    """Refuse a `jsd_beta` outside (0, 1), where the generalized JSD vanishes and nothing would be learnt.

    Args:
        beta: The teacher's weight in `jsd`'s mixture.
    """
    if not (isinstance(beta, (int, float)) and 0.0 < beta < 1.0):
        raise ValueError(
            f"jsd_beta must be in (0, 1), got {beta}; at 0 and 1 the generalized JSD vanishes, use "
            "kd_loss='forward_kl' or 'reverse_kl' for those ends."
        )


def build_kd_loss(name: str, jsd_beta: float = 0.5, tokens: bool = False, regression: bool = False) -> KDLoss:
    """The loss `name` for a run, refused with its hint where it does not support the run's teachers or student.

    Args:
        name: The registered loss's name (`DistillationConfig.kd_loss`).
        jsd_beta: The teacher's weight in `jsd`'s mixture, checked to be in (0, 1).
        tokens: The teachers are per-token distributions of causal LMs.
        regression: The student has one output (`num_labels=1`).
    """
    cls = kd_loss_class(name)
    for needed, supported, what in (
        (tokens, cls.supports_tokens, "per-token teachers of causal LMs"),
        (not tokens and not regression, cls.supports_dense, "class logits"),
        (regression, cls.supports_regression, "regression students (num_labels=1)"),
    ):
        if needed and not supported:
            raise ValueError(f"kd_loss={name!r} does not apply to {what}: {cls.hint}.")
    check_jsd_beta(jsd_beta)
    return cls(jsd_beta)


@register_kd_loss("forward_kl")
class ForwardKL(KDLoss):
    """KL(teacher || student) * T^2 (mean-seeking: the student covers all the teachers' mass). For regression
    students the MSE to the teachers' predictions, as `kd_loss` has always done."""

    supports_regression = True
    formula = "KL(softmax(t/T) || softmax(s/T)) * T^2"

    def divergence(self, teacher_log_probs, student_log_probs):
        return forward_kl(teacher_log_probs, student_log_probs)

    def dense(self, student_logits, teacher_logits, temperature):
        return soft_target_kl(student_logits, teacher_logits, temperature)


@register_kd_loss("reverse_kl")
class ReverseKL(KDLoss):
    """KL(student || teacher) * T^2 (mode-seeking: the student may drop low-probability teacher modes). Where the
    teacher's probability is 0 (a token a live teacher rules out), it counts as the smallest positive float, not as
    infinity; a top-k's tail is never read below what rounding can hide (`tokens.ROUNDING_TAIL`)."""

    hint = "a scalar prediction has no distribution; use kd_loss='mse'"
    formula = "KL(softmax(s/T) || softmax(t/T)) * T^2"

    def divergence(self, teacher_log_probs, student_log_probs):
        return forward_kl(student_log_probs, teacher_log_probs)


@register_kd_loss("jsd")
class GeneralizedJSD(KDLoss):
    """GKD's generalized Jensen-Shannon divergence * T^2: with M = beta * teacher + (1 - beta) * student,
    `beta * KL(teacher || M) + (1 - beta) * KL(student || M)` (`jsd_beta`, 0.5: the symmetric JSD). Bounded, so
    one confident disagreement cannot dominate a batch."""

    hint = "a scalar prediction has no distribution; use kd_loss='mse'"
    formula = "JSD_beta(softmax(t/T), softmax(s/T)) * T^2"
    formula_note = "generalized Jensen-Shannon divergence, beta = {beta}"

    def divergence(self, teacher_log_probs, student_log_probs):
        beta = self.jsd_beta
        mixture = torch.logaddexp(teacher_log_probs + math.log(beta), student_log_probs + math.log(1 - beta))
        return beta * forward_kl(teacher_log_probs, mixture) + (1 - beta) * forward_kl(student_log_probs, mixture)


@register_kd_loss("mse")
class LogitMSE(KDLoss):
    """Logit matching (Ba & Caruana): the mean squared difference of raw student and fused teacher logits; T does
    not apply. Regression students: the MSE to the teachers' predictions."""

    supports_tokens = False
    supports_regression = True
    hint = "top-k teachers store log-probabilities, not logits, and live teachers are fused as distributions"
    formula = "MSE(s, t)"
    formula_note = "raw logits, T does not apply"

    def dense(self, student_logits, teacher_logits, temperature):
        return F.mse_loss(student_logits.float(), teacher_logits.float())


KD_LOSSES = tuple(KD_LOSS_REGISTRY)
