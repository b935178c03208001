"""Which `--output_dir` a run may write into.

A run writes a marker into its folder before training writes anything there, naming the record a finished run of
its kind leaves. A rerun finds the marker and trains again where a kill stopped it, even after the weights were
saved but before the record was written; a folder without a marker or record of this kind (a teacher given as a
student's folder, a user's project) is refused before any work, and nothing in it is touched.
"""

from __future__ import annotations

import json
import os

from .runs import save_json

# {"record": the record a finished run of this kind leaves}; "_" so that the Trainer's own `push_to_hub` skips it too
RUN_MARKER_FILE = "_distill_trainer_run.json"


def is_own_run(output_dir: str, own_record: str) -> bool:
    """Whether `output_dir` is a run of this kind, finished (its record is there) or stopped (its marker is).

    Args:
        output_dir: An existing folder.
        own_record: The record a finished run of this kind leaves (`StudentResult.FILE`, `TeacherRecord.FILE`).
    """
    if os.path.isfile(os.path.join(output_dir, own_record)):
        return True
    try:
        with open(os.path.join(output_dir, RUN_MARKER_FILE)) as handle:
            return json.load(handle).get("record") == own_record
    except (OSError, ValueError, AttributeError):  # none, or not ours to trust: the folder is checked as any other
        return False


def check_output_dir(output_dir: str, own_record: str) -> None:
    """Refuse an `--output_dir` that training would overwrite but that this tool's run of the same kind did not
    write: a file, or a folder that holds something besides checkpoints and TensorBoard's `runs` folder and is
    not a run of this kind (`is_own_run`), e.g. a teacher given as a student's folder, or a user's project folder.

    Args:
        output_dir: The run's folder.
        own_record: The record a finished run of this kind leaves (`StudentResult.FILE`, `TeacherRecord.FILE`).
    """
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise ValueError(f"--output_dir {output_dir} is a file; give a folder (new, or a run of this recipe).")
    if not os.path.isdir(output_dir) or is_own_run(output_dir, own_record):
        return
    logs = os.path.join(output_dir, "runs")  # TensorBoard's (`--report_to tensorboard`): an interrupted run's
    others = sorted(e for e in os.listdir(output_dir) if not e.startswith("checkpoint-") and e != "runs")
    others += ["runs (not a folder)"] if os.path.exists(logs) and not os.path.isdir(logs) else []
    if others:
        shown = ", ".join(others[:5]) + (" ..." if len(others) > 5 else "")
        raise ValueError(
            f"--output_dir {output_dir} already holds {shown}, and no {own_record} of a finished run of this "
            "recipe: training there would overwrite them. Choose a new folder, or empty that one yourself."
        )


def mark_output_dir(output_dir: str, own_record: str) -> None:
    """Mark `output_dir` as this kind of run's before training writes into it (`check_output_dir` first), so a
    rerun after a kill at any point trains there again instead of refusing the folder.

    Args:
        output_dir: The run's folder; made if missing.
        own_record: The record a finished run of this kind leaves.
    """
    os.makedirs(output_dir, exist_ok=True)
    if not os.path.isfile(os.path.join(output_dir, RUN_MARKER_FILE)):
        save_json({"record": own_record}, os.path.join(output_dir, RUN_MARKER_FILE))
