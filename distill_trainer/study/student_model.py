"""The student's model: a teacher cut to some of its layers (DistilBERT's initialisation), and the check that a
device bundle's zeroed layers never become a student's."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

from transformers import PreTrainedModel

from .packaged_models import resolve_model

BUNDLED_LAYERS_FILE = "bundle_kept_layers.json"  # written by recipes/device/bundle_study.py beside zeroed layers


def check_bundled_layers(student_model: str, student_layers: Sequence[int] | None) -> None:
    """Refuse a student that would start from encoder layers a device bundle zeroed: `bundle_study.py` keeps only
    the layers of the `--student_layers` it was made for (the others are zeros, to travel small), so a student
    cut with other layers, or the whole model, would silently start from zeros.

    Args:
        student_model: The student's model name or folder (resolved like `load_for_task` does).
        student_layers: The layers asked for (None: the whole model).
    """
    marker = os.path.join(resolve_model(student_model), BUNDLED_LAYERS_FILE)
    if not os.path.isfile(marker):
        return
    with open(marker) as handle:
        kept = json.load(handle)["kept_layers"]
    if student_layers is None or not set(student_layers) <= set(kept):
        asked = "all of its layers" if student_layers is None else f"--student_layers {list(student_layers)}"
        raise ValueError(
            f"{student_model} comes from a device bundle that kept only encoder layers {kept} (the others are "
            f"zeros): a student with {asked} would start from zeroed layers. Make the bundle with these "
            "--student_layers, or use those layers."
        )


def student_from_layers(model: PreTrainedModel, layers: Sequence[int]) -> PreTrainedModel:
    """Keep only `layers` of the encoder, or of a causal LM's decoder (DistilBERT's initialisation: a student cut
    from a teacher). A kept decoder layer is renumbered, so its key/value cache slot is its new position.

    Args:
        model: The teacher (or pretrained model) to cut, changed in place and returned.
        layers: Indices of the layers to keep, in the order they are kept; distinct, each in `[0, n_layers)`.
    """
    encoder = getattr(model.base_model, "encoder", None)
    holder, attribute = (encoder, "layer") if hasattr(encoder, "layer") else (model.base_model, "layers")
    blocks = getattr(holder, attribute, None)
    if blocks is None:
        raise ValueError(f"{type(model).__name__} has no encoder or decoder layers to cut layers from.")
    if not layers or any(not 0 <= i < len(blocks) for i in layers):
        raise ValueError(f"student_layers {list(layers)} must be indices in [0, {len(blocks)}).")
    if len(set(layers)) != len(layers):  # a repeated block shares its weights: the student could not be saved
        raise ValueError(f"student_layers {list(layers)} repeats a layer; each kept layer must be distinct.")
    setattr(holder, attribute, type(blocks)([blocks[i] for i in layers]))
    for position, block in enumerate(getattr(holder, attribute)):
        if hasattr(getattr(block, "self_attn", None), "layer_idx"):
            block.self_attn.layer_idx = position
    if getattr(model.config, "layer_types", None):
        model.config.layer_types = [model.config.layer_types[i] for i in layers]
    model.config.num_hidden_layers = len(layers)
    return model
