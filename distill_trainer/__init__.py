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
from .kd_losses import KD_LOSS_REGISTRY, KD_LOSSES, KDLoss, register_kd_loss
from .logits import (
    LogitDatasetMetadata,
    TeacherInfo,
    attach_teacher_logits,
    read_metadata,
    validate_logit_dataset,
)
from .losses import kd_loss
from .sampling import LengthGroupedSamplingMixin, ShuffledLengthGroupedSampler
from .token_fusion import fuse_topk
from .tokens import TokenSignal, next_token_labels, sparse_kd_loss
from .topk import TopkDatasetMetadata, attach_teacher_topk, read_topk_metadata, topk_from_logits, validate_topk_dataset
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
    "KDLoss",
    "KD_LOSSES",
    "KD_LOSS_REGISTRY",
    "LengthGroupedSamplingMixin",
    "LogitDatasetMetadata",
    "ShuffledLengthGroupedSampler",
    "TeacherInfo",
    "TokenSignal",
    "TopkDatasetMetadata",
    "attach_teacher_logits",
    "attach_teacher_topk",
    "bf16_available",
    "build_fusion",
    "fast_training_defaults",
    "fit_fusion_weights",
    "fit_teacher_temperatures",
    "fuse_logits",
    "fuse_topk",
    "kd_loss",
    "next_token_labels",
    "read_metadata",
    "read_topk_metadata",
    "register_fusion",
    "register_kd_loss",
    "sparse_kd_loss",
    "topk_from_logits",
    "validate_logit_dataset",
    "validate_topk_dataset",
]
