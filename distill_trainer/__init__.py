"""distill-trainer: multi-teacher knowledge distillation as a Hugging Face `Trainer` extension."""

from .collator import DistillationDataCollator
from .config import DistillationConfig, bf16_available, fast_training_defaults
from .fusion import FUSION_STRATEGIES, GatingNetwork, fit_teacher_temperatures, fuse_logits
from .logits import (
    LogitDatasetMetadata,
    TeacherInfo,
    attach_teacher_logits,
    read_metadata,
    validate_logit_dataset,
)
from .losses import kd_loss
from .sampling import LengthGroupedSamplingMixin, ShuffledLengthGroupedSampler
from .trainer import DistillationTrainer

__version__ = "0.1.0"

__all__ = [
    "DistillationConfig",
    "DistillationDataCollator",
    "DistillationTrainer",
    "FUSION_STRATEGIES",
    "GatingNetwork",
    "LengthGroupedSamplingMixin",
    "LogitDatasetMetadata",
    "ShuffledLengthGroupedSampler",
    "TeacherInfo",
    "attach_teacher_logits",
    "bf16_available",
    "fast_training_defaults",
    "fit_teacher_temperatures",
    "fuse_logits",
    "kd_loss",
    "read_metadata",
    "validate_logit_dataset",
]
