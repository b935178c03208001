"""The dev split a study carves from each task's training rows: what it records of it, and the check that a
student reads the split its logit dataset was made with. Everything that chooses or fits is scored there, so the
validation rows a study reports are touched once."""

from __future__ import annotations

from .args import TaskArguments
from .tasks import load_task_split

DEV_SPLIT_KEY = "dev_split"


def dev_record(task_args: TaskArguments) -> dict:
    """What a run records of its dev split: the options that carved it, the row limit and labelled rows it was
    carved under, and its rows (positions in the training file), so an audit can rebuild it from the data alone.

    Args:
        task_args: The task options the split was carved with.
    """
    train_rows = len(load_task_split(task_args.glue_task, "train", task_args.data, task_args.max_train_rows))
    return {
        **task_args.dev_options,
        "labelled_rows": task_args.labelled_rows,
        "max_train_rows": task_args.max_train_rows,
        "positions": task_args.dev_positions(train_rows).tolist(),
    }


def check_same_dev_split(recorded: dict | None, task_args: TaskArguments) -> None:
    """Refuse, before any training, a logit dataset whose dev split (`dev_record`, in its metadata) was not carved
    with the options `task_args` gives, or that has none where they ask for one (or the other way round): the
    student would train on rows its teachers' fits were scored on, or leave out rows the study counts, or use the
    labels of rows outside `--labelled_rows`.

    Args:
        recorded: The logit dataset's `dev_record` (None without a dev split).
        task_args: The student's task options.
    """
    asked = None
    if task_args.dev_rows is not None:
        asked = {**task_args.dev_options, "labelled_rows": task_args.labelled_rows}
        asked["max_train_rows"] = task_args.max_train_rows
    found = None if recorded is None else {key: value for key, value in recorded.items() if key != "positions"}
    if found != asked:
        raise ValueError(
            f"The logit dataset's dev split was carved with {found or 'nothing (it has none)'}, but the options ask "
            f"for {asked or 'none'}: give the --dev_rows, --dev_fraction, --dev_seed, --labelled_rows and "
            "--max_train_rows the logits were extracted with, or extract them again with these."
        )
