"""distill-trainer: multi-teacher knowledge distillation as a Hugging Face `Trainer` extension."""

from .collator import DistillationDataCollator
from .config import DistillationConfig
from .fusion import FUSION_STRATEGIES, GatingNetwork, fuse_logits
from .logits import (
    LogitDatasetMetadata,
    TeacherInfo,
    attach_teacher_logits,
    read_metadata,
    validate_logit_dataset,
)
from .losses import kd_loss
from .trainer import DistillationTrainer

__version__ = "0.1.0"

__all__ = [
    "DistillationConfig",
    "DistillationDataCollator",
    "DistillationTrainer",
    "FUSION_STRATEGIES",
    "GatingNetwork",
    "LogitDatasetMetadata",
    "TeacherInfo",
    "attach_teacher_logits",
    "fuse_logits",
    "kd_loss",
    "read_metadata",
    "validate_logit_dataset",
]
