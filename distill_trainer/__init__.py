"""distill-trainer: multi-teacher knowledge distillation as a Hugging Face `Trainer` extension."""

from .collator import DistillationDataCollator
from .config import DistillationConfig, bf16_available, fast_training_defaults
from .fitting import fit_fusion_weights, fit_teacher_temperatures
from .fusion import (
    FUSION_REGISTRY,
    FUSION_STRATEGIES,
    FusionSetup,
    FusionStrategy,
    GatingNetwork,
    build_fusion,
    fuse_logits,
    register_fusion,
)
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
    "FUSION_REGISTRY",
    "FUSION_STRATEGIES",
    "FusionSetup",
    "FusionStrategy",
    "GatingNetwork",
    "LengthGroupedSamplingMixin",
    "LogitDatasetMetadata",
    "ShuffledLengthGroupedSampler",
    "TeacherInfo",
    "attach_teacher_logits",
    "bf16_available",
    "build_fusion",
    "fast_training_defaults",
    "fit_fusion_weights",
    "fit_teacher_temperatures",
    "fuse_logits",
    "kd_loss",
    "read_metadata",
    "register_fusion",
    "validate_logit_dataset",
]
