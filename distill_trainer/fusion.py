"""Fusion strategies: how the logits of several teachers become one soft target per example.

Every strategy maps `[batch, n_teachers, n_labels]` raw logits to `[batch, n_labels]` raw logits, so the
loss never needs to know how many teachers there were. The static strategies are plain functions; the
learned gate is a small `nn.Module` because it has parameters that train with the student.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import nn

STATIC_STRATEGIES = ("average", "weighted", "min_entropy", "single", "confidence")
FUSION_STRATEGIES = STATIC_STRATEGIES + ("gating",)


def check_teacher_logits(teacher_logits: torch.Tensor, num_labels: int | None = None) -> None:
    """Raise a `ValueError` that names the problem for a teacher-logit batch that cannot be fused.

    Catching these here gives the user a sentence instead of a broadcasting error deep inside torch or,
    worse, a NaN loss several hundred steps later.
    """
    if teacher_logits.dim() != 3:
        raise ValueError(
            "teacher logits must have shape [batch, n_teachers, n_labels], got a tensor of shape "
            f"{tuple(teacher_logits.shape)}."
        )
    if num_labels is not None and teacher_logits.shape[-1] != num_labels:
        raise ValueError(
            f"teacher logits have {teacher_logits.shape[-1]} labels but the student has num_labels={num_labels}: "
            "teachers and student must share one label space (same labels, same order)."
        )
    if not torch.isfinite(teacher_logits).all():
        raise ValueError("teacher logits contain NaN or infinite values; re-extract them or drop those rows.")


def normalize_weights(weights: Sequence[float], n_teachers: int) -> torch.Tensor:
    """Turn one non-negative weight per teacher (e.g. validation scores) into weights summing to 1."""
    if weights is None:
        raise ValueError("fusion='weighted' needs fusion_weights: one weight per teacher.")
    if any(isinstance(w, (str, bytes, bool)) for w in weights):
        raise ValueError(f"fusion_weights must be numbers, one per teacher, got {list(weights)!r}.")
    weights = torch.as_tensor(list(weights), dtype=torch.float32)
    if weights.dim() != 1 or weights.numel() != n_teachers:
        raise ValueError(f"fusion_weights has {weights.numel()} values but there are {n_teachers} teachers.")
    if not torch.isfinite(weights).all() or (weights < 0).any() or weights.sum() <= 0:
        raise ValueError(f"fusion_weights must be finite, non-negative and not all zero, got {weights.tolist()}.")
    return weights / weights.sum()


def check_teacher_index(teacher_index: int | None, n_teachers: int) -> int:
    """Validate the teacher that `single` fusion uses; negative indices count from the end, as in Python."""
    if teacher_index is None:
        raise ValueError("fusion='single' needs teacher_index.")
    if not -n_teachers <= teacher_index < n_teachers:
        raise ValueError(f"teacher_index={teacher_index} is out of range for {n_teachers} teachers.")
    return teacher_index % n_teachers


def softmax_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Entropy (nats) of softmax(logits) over the last dimension; exact even for very confident logits."""
    log_probs = torch.log_softmax(logits.float(), dim=-1)
    return -(log_probs.exp() * log_probs).sum(dim=-1)


def fuse_logits(
    teacher_logits: torch.Tensor,
    strategy: str,
    weights: Sequence[float] | None = None,
    teacher_index: int | None = None,
    labels: torch.Tensor | None = None,
) -> torch.Tensor:
    """Fuse `[batch, n_teachers, n_labels]` teacher logits into `[batch, n_labels]` with a static strategy.

    - `average`: element-wise mean of the teachers' logits.
    - `weighted`: mean of the logits weighted by `weights` (normalised to sum to 1).
    - `min_entropy`: per example, the logits of the teacher whose softmax (T=1) has the lowest entropy.
    - `single`: the logits of teacher `teacher_index`.
    - `confidence` (CA-MKD's weighting): per example, teacher weights = softmax over teachers of
      -CE(teacher, label), i.e. proportional to each teacher's probability (T=1) of the gold label; the
      weighted mean of the logits. Needs `labels` (`[batch]`); rows labelled -100 get equal weights.

    The learned gate (`gating`) needs the student's hidden state, so it lives in `GatingNetwork`.
    """
    if strategy not in STATIC_STRATEGIES:
        hint = " (it needs the student's hidden state: use GatingNetwork)" if strategy == "gating" else ""
        raise ValueError(f"Unknown static fusion strategy {strategy!r}{hint}; choose one of {STATIC_STRATEGIES}.")
    check_teacher_logits(teacher_logits)
    n_teachers = teacher_logits.shape[1]
    if strategy == "average":
        return teacher_logits.mean(dim=1)
    if strategy == "weighted":
        normalized = normalize_weights(weights, n_teachers).to(teacher_logits.device, teacher_logits.dtype)
        return torch.einsum("btl,t->bl", teacher_logits, normalized)
    if strategy == "min_entropy":
        most_confident = softmax_entropy(teacher_logits).argmin(dim=1)
        return teacher_logits[torch.arange(teacher_logits.shape[0], device=teacher_logits.device), most_confident]
    if strategy == "confidence":
        return torch.einsum("bt,btl->bl", confidence_weights(teacher_logits, labels), teacher_logits)
    return teacher_logits[:, check_teacher_index(teacher_index, n_teachers)]


def confidence_weights(teacher_logits: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
    """`[batch, n_teachers]` weights of `confidence` fusion: softmax over teachers of each teacher's
    log-probability of the gold label (= -CE); equal weights on rows labelled -100."""
    if labels is None:
        raise ValueError("fusion='confidence' weighs teachers by the gold label: it needs labels in the batch.")
    labelled = labels != -100
    gold = labels.masked_fill(~labelled, 0).long()
    log_probs = torch.log_softmax(teacher_logits.float(), dim=-1)
    gold_log_probs = log_probs.gather(-1, gold[:, None, None].expand(-1, teacher_logits.shape[1], 1)).squeeze(-1)
    return torch.softmax(gold_log_probs.masked_fill(~labelled[:, None], 0.0), dim=1)


def fit_teacher_temperatures(logits: np.ndarray, labels: np.ndarray) -> list[float]:
    """One temperature per teacher by temperature scaling (Guo et al., 2017): the T > 0 minimising the
    negative log-likelihood of softmax(logits / T) on the labelled rows (label -100 is left out).

    `logits`: `[n, n_teachers, n_labels]` raw logits, e.g. a logit dataset's validation split. Dividing a
    teacher's logits by its T calibrates its confidence without changing its predictions.
    """
    from scipy.optimize import minimize_scalar
    from scipy.special import logsumexp

    logits, labels = np.asarray(logits, dtype=np.float64), np.asarray(labels)
    if logits.ndim != 3 or len(labels) != len(logits):
        raise ValueError(
            f"logits must be [n, n_teachers, n_labels] with one label per row, got {logits.shape} "
            f"and {len(labels)} labels."
        )
    labelled = labels != -100
    if not labelled.any():
        raise ValueError("fit_teacher_temperatures needs labelled rows (labels other than -100).")
    rows, gold = logits[labelled], labels[labelled].astype(int)
    temperatures = []
    for teacher in range(logits.shape[1]):

        def nll(log_temperature: float, z=rows[:, teacher]) -> float:
            scaled = z / np.exp(log_temperature)
            return float(np.mean(logsumexp(scaled, axis=1) - scaled[np.arange(len(gold)), gold]))

        fit = minimize_scalar(nll, bounds=(np.log(1e-2), np.log(1e2)), method="bounded", options={"xatol": 1e-6})
        temperatures.append(float(np.exp(fit.x)))
    return temperatures


def fit_fusion_weights(logits: np.ndarray, labels: np.ndarray) -> list[float]:
    """Task-adaptive fusion: one weight per teacher, on the simplex, minimising the NLL of softmax of the
    weighted mean of the teachers' logits on the labelled rows (e.g. the validation split)."""
    from scipy.optimize import minimize
    from scipy.special import log_softmax

    logits, labels = np.asarray(logits, dtype=np.float64), np.asarray(labels)
    labelled = labels != -100
    if logits.ndim != 3 or len(labels) != len(logits) or not labelled.any():
        raise ValueError("fit_fusion_weights needs [n, n_teachers, n_labels] logits and labelled rows.")
    rows, gold = logits[labelled], labels[labelled].astype(int)

    def nll(theta: np.ndarray) -> float:
        weights = np.exp(theta - theta.max()) / np.exp(theta - theta.max()).sum()  # softmax: on the simplex
        return float(-log_softmax(np.einsum("ntl,t->nl", rows, weights), axis=1)[np.arange(len(gold)), gold].mean())

    theta = minimize(nll, np.zeros(logits.shape[1]), method="L-BFGS-B").x
    weights = np.exp(theta - theta.max())
    return (weights / weights.sum()).tolist()


def fit_on_validation(
    logits, labels, calibrate: bool, fit_weights: bool
) -> tuple[list[float] | None, list[float] | None]:
    """Teacher temperatures (when `calibrate`) and then fusion weights (when `fit_weights`, fitted on the
    calibrated logits, as they will be fused), from `[n, n_teachers, n_labels]` validation logits."""
    logits, labels = np.asarray(logits, dtype=np.float64), np.asarray(labels)
    temperatures = fit_teacher_temperatures(logits, labels) if calibrate else None
    if temperatures is not None:
        logits = logits / np.asarray(temperatures)[None, :, None]
    return temperatures, fit_fusion_weights(logits, labels) if fit_weights else None


class GatingNetwork(nn.Module):
    """Learned per-example teacher weights from the student's [CLS] (first-token) final hidden state.

    A two-layer MLP produces a softmax over teachers; the fused logits are the weighted mean of the
    teachers' logits. The gate starts out as `average` (zero-initialised output layer), so early training
    is not driven by a random preference for one teacher.
    """

    def __init__(self, input_size: int, n_teachers: int, hidden_size: int = 128):
        super().__init__()
        self.n_teachers = n_teachers
        self.mlp = nn.Sequential(nn.Linear(input_size, hidden_size), nn.Tanh(), nn.Linear(hidden_size, n_teachers))
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.zeros_(self.mlp[-1].bias)

    def teacher_weights(self, cls_hidden: torch.Tensor) -> torch.Tensor:
        """`[batch, hidden]` -> `[batch, n_teachers]` weights that sum to 1 per example."""
        return torch.softmax(self.mlp(cls_hidden.float()), dim=-1)

    def forward(self, cls_hidden: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
        check_teacher_logits(teacher_logits)
        if teacher_logits.shape[1] != self.n_teachers:
            raise ValueError(
                f"the gate was built for {self.n_teachers} teachers but the batch has {teacher_logits.shape[1]}."
            )
        weights = self.teacher_weights(cls_hidden)
        return torch.einsum("bt,btl->bl", weights, teacher_logits.float())
