"""`DistillationConfig`: `TrainingArguments` plus what knowledge distillation needs.

Being a `TrainingArguments` subclass means every distillation knob is also a command-line flag through
`HfArgumentParser`, with its help text, exactly like the Trainer's own options.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import torch
from transformers import TrainingArguments

from .fusion import FUSION_REGISTRY, fusion_strategy, normalize_weights
from .kd_losses import check_jsd_beta, kd_loss_class
from .losses import DEFAULT_TEMPERATURE, check_kd_hyperparameters

SCHEDULES = ("constant", "linear", "cosine")
# Whether `fast_training_defaults` turns bf16 on where the hardware has it. Off since 2026-12-06: bf16 costs no
# accuracy (study v3's settlement, results/v3-bf16: mixed signs over 6 pairs, none more than one validation row
# apart), but its speed depends on the CPU in a way its flags do not tell: 1.45x faster on the machine of 2026-11-26
# (flags unrecorded), 0.74x (slower) on an Intel Xeon with avx512_bf16 and no amx_bf16 (docs/performance.md). Pass
# `--bf16 true` where benchmarks/training_throughput.py shows it pays.
BF16_BY_DEFAULT = False
CPUINFO = "/proc/cpuinfo"


@dataclass(repr=False)  # keep TrainingArguments' repr, which redacts `*_token`: a generated one would print them
class DistillationConfig(TrainingArguments):
    """Training arguments for `DistillationTrainer`: every `TrainingArguments` field plus the distillation ones.

    Invalid values (unknown fusion, invalid weights, `single` without `teacher_index`, T <= 0, alpha
    outside [0, 1]) are refused when the config is built, before a model is loaded or a batch is read;
    what depends on the data (teacher count, weights taken from metadata) when the trainer is built.
    Every field has a help text, so `HfArgumentParser(DistillationConfig)` turns them all into flags.

    Attributes:
        temperature: T of the soft term (6.0); the KL is scaled by T^2 so alpha means the same at every T.
        alpha: weight of the soft term in [0, 1] (0.7); `alpha=0` is plain fine-tuning and needs no teachers.
        fusion: a registered strategy (`average`; `none`: no teachers), see `FUSION_REGISTRY`.
        curriculum_fusion: a second strategy the fused target moves to, linearly, by the last step.
        fusion_weights: for `weighted`, one per teacher (default: the metadata's dev scores, else validation scores).
        kd_loss: the soft-target loss (`forward_kl`, `reverse_kl`, `jsd`, `mse` or yours), see `KD_LOSS_REGISTRY`.
        jsd_beta: the teacher's weight in `jsd`'s mixture (0.5: symmetric).
        teacher_index: for `single`, the teacher column to distil from.
        teacher_logits_column: the dense teacher column (`teacher_logits`).
        gate_hidden_size: width of the `gating` MLP (128).
        gate_learning_rate: learning rate of any strategy with parameters (default: `learning_rate`).
        calibrate_teachers: divide each teacher's logits by its fitted temperature before fusing, so that no
            teacher dominates by being louder rather than better.
        alpha_schedule: `constant`, `linear` or `cosine` from `alpha` to `alpha_end` (derived from the global
            step, so a resumed run ends where an uninterrupted one does).
        alpha_end: alpha at the last step.
        temperature_schedule: `constant`, `linear` or `cosine` from `temperature` to `temperature_end`.
        temperature_end: T at the last step.
    """

    temperature: float = field(
        default=DEFAULT_TEMPERATURE,
        metadata={
            "help": "Softening temperature T of the soft-target term (> 0). The KL term is scaled by T^2. Does not "
            "apply to regression students (num_labels=1), whose soft term is the MSE to the teachers."
        },
    )
    alpha: float = field(
        default=0.7,
        metadata={
            "help": "Weight of the soft-target (KL) term in [0, 1]; 1 - alpha weights the hard-label cross-entropy. "
            "alpha=0 is plain fine-tuning and needs no teacher logits."
        },
    )
    fusion: str = field(
        default="average",
        metadata={
            "help": "How the teachers' logits are fused per example: 'average' (mean of logits), 'weighted' (mean "
            "weighted by fusion_weights), 'min_entropy' (the most confident teacher per example), 'confidence' "
            "(per example, teachers weighted by their probability of the gold label; needs labels), 'fitted' (one "
            "weight per teacher fitted by NLL on the logit dataset's dev split, else its validation split), "
            "'gating' (an MLP over the student's [CLS] state learns per-example teacher weights), 'single' "
            "(teacher_index only), a strategy you registered with distill_trainer.register_fusion, or "
            "'none' (no distillation: plain cross-entropy fine-tuning, the baseline; sets alpha to 0)."
        },
    )
    curriculum_fusion: str | None = field(
        default=None,
        metadata={
            "help": "Curriculum fusion: a second strategy; the fused target moves linearly, in logit space, from "
            "`fusion` at the first step to this one at the last (e.g. from 'average' to 'confidence'). The "
            "weight in use is logged as curriculum_weight. Strategies with parameters (gating) cannot be mixed."
        },
    )
    fusion_weights: list[float] | None = field(
        default=None,
        metadata={
            "help": "For fusion='weighted': one non-negative weight per teacher, in the teacher column's order "
            "(normalised to sum to 1). Default: the teachers' scores from the logit dataset's metadata: on its dev "
            "split (carved from the training rows) where every teacher has one, else on the validation split."
        },
    )
    kd_loss: str = field(
        default="forward_kl",
        metadata={
            "help": "The soft-target loss: 'forward_kl' (KL(teacher || student) * T^2, the default), 'reverse_kl' "
            "(KL(student || teacher)), 'jsd' (generalized Jensen-Shannon, see jsd_beta), 'mse' (raw-logit matching, "
            "class logits only), or one registered with distill_trainer.register_kd_loss."
        },
    )
    jsd_beta: float = field(
        default=0.5,
        metadata={"help": "For kd_loss='jsd': the teacher's weight beta in (0, 1) of the mixture M (0.5: symmetric)."},
    )
    teacher_index: int | None = field(
        default=None,
        metadata={"help": "For fusion='single': which teacher (column position in teacher_logits) to distil from."},
    )
    teacher_logits_column: str = field(
        default="teacher_logits",
        metadata={"help": "Dataset column holding raw teacher logits of shape [n_teachers, n_labels] per example."},
    )
    gate_hidden_size: int = field(default=128, metadata={"help": "For fusion='gating': hidden width of the gate MLP."})
    gate_learning_rate: float | None = field(
        default=None,
        metadata={"help": "For fusion='gating': learning rate of the gate's parameters (default: learning_rate)."},
    )

    calibrate_teachers: bool = field(
        default=False,
        metadata={
            "help": "Divide each teacher's logits by its own temperature before fusing (temperature scaling by NLL: "
            "the temperatures fitted at extraction on the dev split, else the validation split, from the logit "
            "metadata; without them, fitted on the eval split when the trainer is built): teachers of different "
            "confidence then weigh alike. Composes with every fusion; stored class logits only (not causal LMs' "
            "top-k, not live teachers)."
        },
    )
    alpha_schedule: str = field(
        default="constant",
        metadata={
            "help": "How alpha moves over training: 'constant', or 'linear' / 'cosine' from alpha to alpha_end "
            "(e.g. lean on the teachers early, on the labels late). Derived from the global step, so resuming "
            "continues the schedule exactly.",
            "choices": list(SCHEDULES),
        },
    )
    alpha_end: float | None = field(
        default=None, metadata={"help": "alpha at the last step (non-constant schedules)."}
    )
    temperature_schedule: str = field(
        default="constant",
        metadata={
            "help": "How T moves over training: 'constant', or 'linear' / 'cosine' from temperature to "
            "temperature_end.",
            "choices": list(SCHEDULES),
        },
    )
    temperature_end: float | None = field(
        default=None, metadata={"help": "T at the last step (non-constant schedules)."}
    )

    def __post_init__(self):
        super().__post_init__()
        check_kd_hyperparameters(self.temperature, self.alpha)
        kd_loss_class(self.kd_loss)  # a ValueError naming the registered losses
        check_jsd_beta(self.jsd_beta)
        for name in ("alpha", "temperature"):
            schedule, end = getattr(self, f"{name}_schedule"), getattr(self, f"{name}_end")
            if schedule not in SCHEDULES:
                raise ValueError(f"Unknown {name}_schedule {schedule!r}; choose one of {SCHEDULES}.")
            if schedule != "constant" and end is None:
                raise ValueError(f"{name}_schedule={schedule!r} needs {name}_end.")
            if schedule == "constant" and end is not None:  # it would be silently ignored
                raise ValueError(
                    f"{name}_end={end} is used only by {name}_schedule='linear' or 'cosine', not 'constant'."
                )
        if self.alpha_end is not None or self.temperature_end is not None:
            check_kd_hyperparameters(
                self.temperature if self.temperature_end is None else self.temperature_end,
                self.alpha if self.alpha_end is None else self.alpha_end,
            )
        if self.fusion == "none" and self.alpha_schedule != "constant":
            raise ValueError("fusion='none' trains without teachers: alpha_schedule must be 'constant'.")
        if self.fusion != "none":
            fusion_strategy(self.fusion)  # a ValueError naming the registered strategies
        self.check_curriculum(self.fusion, self.curriculum_fusion)
        if self.fusion == "none":
            self.alpha = 0.0
        if self.fusion == "weighted" and self.fusion_weights is not None:
            normalize_weights(self.fusion_weights, len(self.fusion_weights))
        if "single" in (self.fusion, self.curriculum_fusion) and self.teacher_index is None:
            raise ValueError("fusion='single' needs teacher_index.")
        if self.gate_learning_rate is not None and not (
            math.isfinite(self.gate_learning_rate) and self.gate_learning_rate >= 0
        ):
            raise ValueError(
                f"gate_learning_rate must be a finite number >= 0 (0 freezes the gate), got {self.gate_learning_rate}."
            )
        if self.gate_hidden_size < 1:
            raise ValueError(f"gate_hidden_size must be >= 1, got {self.gate_hidden_size}.")

    @staticmethod
    def check_curriculum(fusion: str, curriculum_fusion: str | None) -> None:
        """Refuse a curriculum between strategies that cannot be blended (or a strategy and itself).

        Args:
            fusion: The main strategy's name (`none` refuses any curriculum).
            curriculum_fusion: The strategy the target moves toward; None: no curriculum, nothing to check.
        """
        if curriculum_fusion is None:
            return
        if fusion == "none" or curriculum_fusion == fusion:
            raise ValueError(
                f"curriculum_fusion={curriculum_fusion!r} must name a strategy other than "
                f"fusion={fusion!r}, and fusion must not be 'none'."
            )
        for option, name in (("fusion", fusion), ("curriculum_fusion", curriculum_fusion)):
            if not fusion_strategy(name).mixable:
                raise ValueError(
                    f"{option}={name!r} cannot be mixed in a curriculum (see its class's docstring); choose "
                    f"among {[n for n, cls in FUSION_REGISTRY.items() if cls.mixable]}."
                )

    @property
    def uses_teachers(self) -> bool:
        """Whether alpha is above 0 at any step, so that the train set needs teacher logits."""
        return self.alpha > 0 or (self.alpha_schedule != "constant" and self.alpha_end > 0)

    def alpha_at(self, progress: float) -> float:
        """alpha at `progress` under `alpha_schedule` (from `alpha` to `alpha_end`).

        Args:
            progress: Global step / max steps, in [0, 1].
        """
        return scheduled(self.alpha_schedule, self.alpha, self.alpha_end, progress)

    def temperature_at(self, progress: float) -> float:
        """T at `progress` under `temperature_schedule` (from `temperature` to `temperature_end`).

        Args:
            progress: Global step / max steps, in [0, 1].
        """
        return scheduled(self.temperature_schedule, self.temperature, self.temperature_end, progress)

    def __getstate__(self) -> dict:
        """Pickled without `hub_token`: the Trainer pickles its arguments into every `training_args.bin`
        (checkpoints, saved and pushed models), which must never carry a token. The live object keeps it
        for pushing."""
        return {**self.__dict__, "hub_token": None}


def scheduled(schedule: str, start: float, end: float | None, progress: float) -> float:
    """`start` moved toward `end` at `progress` in [0, 1]: linearly, or along half a cosine (slow at both ends).

    Args:
        schedule: `constant` (always `start`), `linear` or `cosine`.
        start: The value at progress 0.
        end: The value at progress 1; unused by `constant`.
        progress: Global step / max steps; clipped to [0, 1].
    """
    progress = min(max(progress, 0.0), 1.0)
    if schedule == "linear":
        return start + (end - start) * progress
    if schedule == "cosine":
        return end + (start - end) * (1 + math.cos(math.pi * progress)) / 2
    return start


def bf16_available() -> bool:
    """Whether bf16 autocast runs on native instructions here: a CUDA GPU that supports bf16, or, on a machine
    without accelerator, a CPU with AVX512-BF16 or AMX-BF16 (read from `/proc/cpuinfo`; where that cannot
    be read, no). Other accelerators: no (not checked).

    Checked, never assumed: without the instructions bf16 is emulated and slower than float32 (torch's own
    `mkldnn` check says yes on any AVX512 CPU).

    Returns:
        True where `fast_training_defaults` may switch bf16 autocast on.
    """
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    if torch.accelerator.is_available():
        return False
    try:
        with open(CPUINFO) as handle:
            return native_bf16_instructions(handle.read()) is not None
    except OSError:
        return False


def native_bf16_instructions(cpuinfo_text: str) -> str | None:
    """The bf16 instruction set a CPU names in its `/proc/cpuinfo` flags, the one reading of those flags that
    both `bf16_available` (whether bf16 may be turned on) and the run records' processor name use, so the two
    never disagree about a machine.

    Args:
        cpuinfo_text: The text of `/proc/cpuinfo` (or of a test's stand-in).

    Returns:
        "avx512_bf16" or "amx_bf16" (the first one listed), or None where the CPU has neither and bf16 would be
        emulated.
    """
    match = re.search(r"\b(avx512_bf16|amx_bf16)\b", cpuinfo_text)
    return match.group(1) if match else None


def fast_training_defaults(**overrides) -> dict:
    """The `TrainingArguments` values the recipes default to: `DistillationConfig(..., **fast_training_defaults())`.
    Change one through `overrides` (`**fast_training_defaults(per_device_eval_batch_size=8)`): passing it beside the
    `**` would give `DistillationConfig` the keyword twice (a `TypeError`).

    - `train_sampling_strategy="group_by_length"`: batches of similar length, so less compute goes to
      padding (tokenize with `return_length=True` so the lengths are read from the `length` column; see
      `ShuffledLengthGroupedSampler` for how much grouping keeps the accuracy of random batches).
    - No bf16 (`BF16_BY_DEFAULT`): on CPUs with native bf16 it was 1.45x faster on one machine and 0.74x on
      another (an avx512_bf16 Xeon without amx_bf16), at no accuracy cost, so it is yours to turn on (`bf16=True`,
      and `use_cpu=True` on a CPU) where it pays. On an H200 the demo's small models at batch 32 are bound by
      kernel launches, and autocast's casts made an epoch 10% slower; larger models or batches may differ.
    - `per_device_eval_batch_size=64` instead of 8: evaluation keeps row order, and bigger batches were
      1.1x faster on 2 CPU cores and 7x on an H200 (benchmarks/training_throughput.py).
    - `dataloader_pin_memory=False` without an accelerator, where pinning does nothing but warn.

    Args:
        **overrides: `TrainingArguments` values that replace or join the defaults.

    Returns:
        Keyword arguments for `DistillationConfig` / `TrainingArguments`, `overrides` applied.
    """
    defaults = {
        "train_sampling_strategy": "group_by_length",
        "length_column_name": "length",
        "per_device_eval_batch_size": 64,
    }
    if not torch.accelerator.is_available():  # CPU only: no CUDA, XPU, MPS...
        defaults["dataloader_pin_memory"] = False
        if BF16_BY_DEFAULT and bf16_available():
            defaults.update(bf16=True, use_cpu=True)
    return {**defaults, **overrides}
