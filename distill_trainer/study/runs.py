"""What a run leaves on disk and how the study names it."""

from __future__ import annotations

import json
import os

from .packaged_models import HUB_IDS

VALIDATION_LOGITS_FILE = "validation_logits.npy"  # a student's logits on the validation rows, for the analyses

def save_json(data: dict, path: str) -> None:
    with open(path, "w") as handle:
        json.dump(data, handle, indent=2, sort_keys=True)


def display_name(path_or_id: str) -> str:
    """A name for cards and metadata: a Hub id as is, a local folder by its last component (no local paths)."""
    return os.path.basename(os.path.normpath(path_or_id)) if os.path.exists(path_or_id) else path_or_id


def base_model_name(name: str) -> str:
    """What a card's `base_model` should say: the Hub id behind a packaged short name, else `display_name`."""
    return HUB_IDS.get(name) or display_name(name)


def short_teacher_name(name: str, task: str) -> str:
    """A teacher's name without the `-<task>` suffix `train_teacher` gives it, so that the study's methods
    ("single: all-mpnet-base-v2") line up across tasks in tables and plots."""
    return name.removesuffix(f"-{task}")


def teacher_method(info: dict) -> str:
    """A teacher's row name in the study's tables, from its `teacher_info.json`."""
    return f"teacher: {short_teacher_name(info['name'], info['task'])}"


def student_method(results: dict) -> tuple[str, str]:
    """A student run's method name and type (baseline / single / multi), as the study's tables name them."""
    if results["fusion"] == "none":
        return "none", "baseline"
    if results["fusion"] == "single":
        teacher = results["teachers"][results["teacher_index"]]["name"]
        return f"single: {short_teacher_name(teacher, results['task'])}", "single"
    return results["fusion"], "multi"
