"""Fusion strategies: how the logits of several teachers become one soft target per example.

A registered `FusionStrategy` (an `nn.Module`) maps `[batch, n_teachers, n_labels]` raw logits to `[batch, n_labels]`,
so the loss never needs to know how many teachers there were; `DistillationTrainer` serves what a strategy declares
it needs (labels, the student's hidden state, parameters that train), not its name. See `register_fusion`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn


def check_teacher_logits(teacher_logits: torch.Tensor, num_labels: int | None = None) -> None:
    """Raise a `ValueError` naming the problem for a teacher-logit batch that cannot be fused: a sentence instead
    of a broadcasting error deep inside torch or, worse, a NaN loss several hundred steps later.

    Args:
        teacher_logits: The batch's `[batch, n_teachers, n_labels]` raw teacher logits.
        num_labels: The student's number of labels; None: the label count is not checked.
    """
    if teacher_logits.dim() != 3:
        got = f"got a tensor of shape {tuple(teacher_logits.shape)}"
        raise ValueError(f"teacher logits must have shape [batch, n_teachers, n_labels], {got}.")
    if num_labels is not None and teacher_logits.shape[-1] != num_labels:
        raise ValueError(
            f"teacher logits have {teacher_logits.shape[-1]} labels but the student has num_labels={num_labels}: "
            "teachers and student must share one label space (same labels, same order)."
        )
    if not torch.isfinite(teacher_logits).all():
        raise ValueError("teacher logits contain NaN or infinite values; re-extract them or drop those rows.")


def normalize_weights(weights: Sequence[float], n_teachers: int, fusion: str = "weighted") -> torch.Tensor:
    """Turn one non-negative weight per teacher (e.g. validation scores) into weights summing to 1.

    Args:
        weights: One finite, non-negative weight per teacher, not all zero; None is refused.
        n_teachers: The number of teachers the weights must match.
        fusion: The strategy's name, for the error message.
    """
    if weights is None:
        raise ValueError(f"fusion={fusion!r} needs fusion_weights: one weight per teacher.")
    if any(isinstance(w, (str, bytes, bool)) for w in weights):
        raise ValueError(f"fusion_weights must be numbers, one per teacher, got {list(weights)!r}.")
    weights = torch.as_tensor(list(weights), dtype=torch.float32)
    if weights.dim() != 1 or weights.numel() != n_teachers:
        raise ValueError(f"fusion_weights has {weights.numel()} values but there are {n_teachers} teachers.")
    if not torch.isfinite(weights).all() or (weights < 0).any() or weights.sum() <= 0:
        raise ValueError(f"fusion_weights must be finite, non-negative and not all zero, got {weights.tolist()}.")
    return weights / weights.sum()


def check_teacher_index(teacher_index: int | None, n_teachers: int) -> int:
    """Validate the teacher that `single` fusion uses; negative indices count from the end, as in Python.

    Args:
        teacher_index: The teacher's position in the teacher column; None is refused.
        n_teachers: The number of teachers.
    """
    if teacher_index is None:
        raise ValueError("fusion='single' needs teacher_index.")
    if not -n_teachers <= teacher_index < n_teachers:
        raise ValueError(f"teacher_index={teacher_index} is out of range for {n_teachers} teachers.")
    return teacher_index % n_teachers


def softmax_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Entropy (nats) of softmax(logits) over the last dimension; exact even for very confident logits.

    Args:
        logits: Logits of any shape, classes on the last dimension (computed in float32).
    """
    log_probs = torch.log_softmax(logits.float(), dim=-1)
    return -(log_probs.exp() * log_probs).sum(dim=-1)


@dataclass(frozen=True)
class FusionSetup:
    """What a strategy is built from, known once the data and the student are (teachers, hidden size, options).

    Args:
        n_teachers: How many teachers each example has.
        hidden_size: The student's hidden size (`gating`'s input); None where the model has none.
        weights: One weight per teacher, for `weighted` (`fusion_weights`).
        teacher_index: The teacher of `single`.
        gate_hidden_size: The width of `gating`'s MLP.
        fitted_weights: The weights fitted on held-out teacher logits (the logit dataset's dev split where one was
            carved, else validation), for strategies that declare `fits_weights`.
    """

    n_teachers: int
    hidden_size: int | None = None
    weights: Sequence[float] | None = None
    teacher_index: int | None = None
    gate_hidden_size: int = 128
    fitted_weights: Sequence[float] | None = None  # for strategies that declare `fits_weights`


class FusionStrategy(nn.Module):
    """Base class of fusion strategies: implement `fuse`, override `from_setup` for options, declare needs below,
    register with `@register_fusion(name)`. Parameters train with the student (optimizer, DDP, checkpoints).

    Attributes:
        needs_labels: `fuse` gets the gold labels (`[batch]`, -100 = unlabelled); a train set without labels: refused.
        needs_hidden_state: `fuse` gets the student's first-token hidden state, detached (no push to ease fusion).
        fits_weights: one weight per teacher is fitted on held-out logits, dev or validation
            (`FusionSetup.fitted_weights`).
        mixable: whether `curriculum_fusion` may blend it with another strategy.
        supports_regression: meaningful for one-output students (`regression_hint` says what to use if not).
        supports_tokens: fuses causal LMs' per-token teachers by `token_weights` (else `tokens_hint` says why).
    """

    name: ClassVar[str] = ""
    needs_labels: ClassVar[bool] = False
    needs_hidden_state: ClassVar[bool] = False
    fits_weights: ClassVar[bool] = False
    mixable: ClassVar[bool] = True
    supports_regression: ClassVar[bool] = True
    regression_hint: ClassVar[str] = ""
    supports_tokens: ClassVar[bool] = False
    tokens_hint: ClassVar[str] = "it has no per-token form"

    @classmethod
    def from_setup(cls, setup: FusionSetup) -> FusionStrategy:
        """Build the strategy for a run (default: no options); raise `ValueError` for options that cannot work.

        Args:
            setup: The run's teacher count, weights, teacher index and student hidden size.
        """
        return cls()

    def fuse(
        self,
        teacher_logits: torch.Tensor,
        labels: torch.Tensor | None = None,
        hidden_state: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """`[batch, n_teachers, n_labels]` float32 logits -> `[batch, n_labels]` fused logits.

        Args:
            teacher_logits: raw teacher logits at T = 1 (the trainer divides by T after fusion).
            labels: `[batch]` gold labels, given when the class declares `needs_labels`.
            hidden_state: `[batch, hidden]`, detached, given when the class declares `needs_hidden_state`.
        """
        raise NotImplementedError

    def token_weights(self, signal, labels: torch.Tensor | None = None) -> torch.Tensor:
        """A `tokens.TokenSignal` -> `[batch, n_teachers, seq]` weights (sum 1 over teachers) to mix them per token.

        Args:
            signal: The batch's per-token teachers (top-k ids and log-probabilities, or dense logits).
            labels: Next-token labels `[batch, seq]` (-100 where nothing is learnt), for gold-token strategies.
        """
        raise NotImplementedError

    @property
    def trainable(self) -> bool:
        return any(parameter.requires_grad for parameter in self.parameters())


FUSION_REGISTRY: dict[str, type[FusionStrategy]] = {}
RESERVED_NAMES = ("none",)  # DistillationConfig's fusion='none': no teachers at all


def register_fusion(name: str):
    """Class decorator: make a `FusionStrategy` subclass available as `fusion=name` (config, recipes).

    Args:
        name: refused when taken (or `none`), so a strategy cannot replace another; register before the config.
    """

    def register(cls: type[FusionStrategy]) -> type[FusionStrategy]:
        if not (isinstance(cls, type) and issubclass(cls, FusionStrategy)):
            raise TypeError(f"register_fusion({name!r}) needs a FusionStrategy subclass, got {cls!r}.")
        if name in RESERVED_NAMES or (name in FUSION_REGISTRY and FUSION_REGISTRY[name] is not cls):
            raise ValueError(f"A fusion strategy named {name!r} already exists; choose another name.")
        cls.name = name
        FUSION_REGISTRY[name] = cls
        return cls

    return register


def fusion_strategy(name: str) -> type[FusionStrategy]:
    """The registered strategy class named `name`, or a `ValueError` listing the registered names.

    Args:
        name: A name given to `register_fusion` (built-in: see `FUSION_STRATEGIES`).
    """
    if name not in FUSION_REGISTRY:
        raise ValueError(f"Unknown fusion strategy {name!r}; choose one of {tuple(FUSION_REGISTRY)}.")
    return FUSION_REGISTRY[name]


def build_fusion(name: str, setup: FusionSetup) -> FusionStrategy:
    """The strategy `name` built for `setup` (validated: weights and teacher index against the teacher count).

    Args:
        name: The registered strategy's name.
        setup: What a strategy may need to be built: teacher count, weights, teacher index, hidden size.
    """
    return fusion_strategy(name).from_setup(setup)


@register_fusion("average")
class AverageFusion(FusionStrategy):
    """Element-wise mean of the teachers' logits."""

    def fuse(self, teacher_logits, labels=None, hidden_state=None):
        return teacher_logits.mean(dim=1)


@register_fusion("weighted")
class WeightedFusion(FusionStrategy):
    """Mean of the logits weighted by one non-negative weight per teacher (normalised to sum to 1).

    Args:
        weights: `[n_teachers]` weights summing to 1 (`normalize_weights`), kept as a non-persistent buffer.
    """

    def __init__(self, weights: torch.Tensor):
        super().__init__()
        self.register_buffer("weights", weights, persistent=False)  # moved with the strategy, not every step

    @classmethod
    def from_setup(cls, setup):
        return cls(normalize_weights(setup.weights, setup.n_teachers, cls.name))

    def fuse(self, teacher_logits, labels=None, hidden_state=None):
        return torch.einsum("btl,t->bl", teacher_logits, self.weights.to(teacher_logits))


@register_fusion("fitted")
class FittedFusion(WeightedFusion):
    """Task-adaptive: `weighted` with weights fitted on labelled held-out rows (the logit dataset's dev split where
    one was carved, else validation; NLL, least squares for regression)."""

    fits_weights = True

    @classmethod
    def from_setup(cls, setup):
        return cls(normalize_weights(setup.fitted_weights, setup.n_teachers, cls.name))


@register_fusion("min_entropy")
class MinEntropyFusion(FusionStrategy):
    """Per example, the logits of the teacher whose softmax (T=1) has the lowest entropy."""

    supports_regression = False
    regression_hint = "a scalar prediction has no entropy; use 'gating' to pick teachers per example"

    def fuse(self, teacher_logits, labels=None, hidden_state=None):
        most_confident = softmax_entropy(teacher_logits).argmin(dim=1)
        return teacher_logits[torch.arange(teacher_logits.shape[0], device=teacher_logits.device), most_confident]


@register_fusion("single")
class SingleFusion(FusionStrategy):
    """The logits of one teacher (`teacher_index`).

    Args:
        teacher_index: The teacher's position, in [0, n_teachers) (`check_teacher_index`).
    """

    def __init__(self, teacher_index: int):
        super().__init__()
        self.teacher_index = teacher_index

    @classmethod
    def from_setup(cls, setup):
        return cls(check_teacher_index(setup.teacher_index, setup.n_teachers))

    def fuse(self, teacher_logits, labels=None, hidden_state=None):
        return teacher_logits[:, self.teacher_index]


@register_fusion("confidence")
class ConfidenceFusion(FusionStrategy):
    """CA-MKD: per example, teachers weighted by their probability (T=1) of the gold label; -100 rows: equal."""

    needs_labels = True
    supports_regression = False
    regression_hint = "a scalar prediction has no probability of the gold label; use 'fitted' or 'gating'"

    def fuse(self, teacher_logits, labels=None, hidden_state=None):
        return torch.einsum("bt,btl->bl", confidence_weights(teacher_logits, labels), teacher_logits)


def confidence_weights(teacher_logits: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
    """`[batch, n_teachers]` `confidence` weights: softmax of each teacher's gold log-probability; -100 rows equal.

    Args:
        teacher_logits: `[batch, n_teachers, n_labels]` teacher logits (T = 1).
        labels: `[batch]` gold labels, -100 where unlabelled; None is refused.
    """
    if labels is None:
        raise ValueError("fusion='confidence' weighs teachers by the gold label: it needs labels in the batch.")
    labelled = labels != -100
    gold = labels.masked_fill(~labelled, 0).long()
    log_probs = torch.log_softmax(teacher_logits.float(), dim=-1)
    gold_log_probs = log_probs.gather(-1, gold[:, None, None].expand(-1, teacher_logits.shape[1], 1)).squeeze(-1)
    return torch.softmax(gold_log_probs.masked_fill(~labelled[:, None], 0.0), dim=1)


@register_fusion("gating")
class GatingNetwork(FusionStrategy):
    """Learned per-example teacher weights from the student's [CLS] (first-token) final hidden state.

    A two-layer MLP gives a softmax over teachers, weighting their logits. It starts as `average` (zero-initialised
    output layer), so early training is not driven by a random preference for one teacher. Not mixable in a
    curriculum: where it has no weight, its parameters would get no gradient. Built from the student's hidden size
    (`input_size`), `n_teachers` and the MLP's width (`hidden_size`, `gate_hidden_size` in the config).

    Args:
        input_size: The student's hidden size.
        n_teachers: How many teachers the gate weighs (its output size).
        hidden_size: The MLP's hidden width.
    """

    needs_hidden_state = True
    mixable = False

    def __init__(self, input_size: int, n_teachers: int, hidden_size: int = 128):
        super().__init__()
        self.n_teachers = n_teachers
        self.mlp = nn.Sequential(nn.Linear(input_size, hidden_size), nn.Tanh(), nn.Linear(hidden_size, n_teachers))
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.zeros_(self.mlp[-1].bias)

    @classmethod
    def from_setup(cls, setup):
        if setup.hidden_size is None:
            raise ValueError("fusion='gating' needs the student's hidden_size.")
        return cls(setup.hidden_size, setup.n_teachers, setup.gate_hidden_size)

    def teacher_weights(self, cls_hidden: torch.Tensor) -> torch.Tensor:
        """`[batch, hidden]` -> `[batch, n_teachers]` weights that sum to 1 per example.

        Args:
            cls_hidden: The student's [CLS] hidden state, detached (the gate reads it; the student is not pushed).
        """
        return torch.softmax(self.mlp(cls_hidden.float()), dim=-1)

    def forward(self, cls_hidden: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
        """The teachers' logits mixed per example by the gate's weights.

        Args:
            cls_hidden: `[batch, hidden]` the student's detached [CLS] state.
            teacher_logits: `[batch, n_teachers, n_labels]` raw teacher logits.
        """
        # values are checked by the trainer on the host (here on an accelerator they would cost a sync per step)
        if teacher_logits.shape[1] != self.n_teachers:
            raise ValueError(
                f"the gate was built for {self.n_teachers} teachers but the batch has {teacher_logits.shape[1]}."
            )
        weights = self.teacher_weights(cls_hidden)
        return torch.einsum("bt,btl->bl", weights, teacher_logits.float())

    def fuse(self, teacher_logits, labels=None, hidden_state=None):
        return self(hidden_state, teacher_logits)


FUSION_STRATEGIES = tuple(FUSION_REGISTRY)  # the built-in ones; `FUSION_REGISTRY` also holds users' strategies


def fuse_logits(
    teacher_logits: torch.Tensor,
    strategy: str,
    weights: Sequence[float] | None = None,
    teacher_index: int | None = None,
    labels: torch.Tensor | None = None,
) -> torch.Tensor:
    """Fuse teacher logits outside a trainer (e.g. ahead of time) with a strategy that needs no hidden state.

    Args:
        teacher_logits: `[batch, n_teachers, n_labels]` raw logits; the result is `[batch, n_labels]`.
        strategy: a registered name: `average`, `weighted`, `fitted`, `min_entropy`, `single`, `confidence`, yours.
        weights: one per teacher, for `weighted` / `fitted`.
        teacher_index: the teacher of `single`.
        labels: `[batch]` gold labels, for `confidence`.
    """
    cls = fusion_strategy(strategy)
    if cls.needs_hidden_state:
        raise ValueError(
            f"fusion {strategy!r} reads the student's hidden state: build {cls.__name__} (or use "
            "DistillationTrainer) and call it with the hidden state."
        )
    check_teacher_logits(teacher_logits)
    setup = FusionSetup(
        n_teachers=teacher_logits.shape[1], weights=weights, teacher_index=teacher_index, fitted_weights=weights
    )
    return cls.from_setup(setup).fuse(teacher_logits, labels=labels)
