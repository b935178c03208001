"""The dev split a study carves from each task's training rows: what it records of it, and the check that a
student reads the split its logit dataset was made with. Everything that chooses or fits is scored there, so the
validation rows a study reports are touched once."""

from __future__ import annotations

from .task_data import TaskData

DEV_SPLIT_KEY = "dev_split"


def check_same_dev_split(recorded: dict | None, data: TaskData) -> None:
    """Refuse, before any training, a logit dataset whose dev split (in its metadata) is not the one `data` carves,
    or that has none where `data` has one (or the other way round): the student would train on rows its teachers'
    fits were scored on, or leave out rows the study counts, or use the labels of rows outside `labelled_rows`.

    Args:
        recorded: The logit dataset's dev split record (None without a dev split).
        data: The student's rows (`TaskData.dev_split`: the options that carved its dev split and its rows).
    """
    if recorded != data.dev_split:
        found, asked = (
            {k: v for k, v in r.items() if k != "positions"} if r else None for r in (recorded, data.dev_split)
        )
        raise ValueError(
            f"The logit dataset's dev split was carved with {found or 'nothing (it has none)'}, but the options ask "
            f"for {asked or 'none'}: give the --dev_rows, --dev_fraction, --dev_seed, --labelled_rows and "
            "--max_train_rows the logits were extracted with, or extract them again with these."
        )
