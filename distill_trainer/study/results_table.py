"""The results table a study writes (`--results_csv`): one row per study folder, task, method and seed, so that
studies sharing a CSV keep their rows apart and a study run in parts keeps every part's rows. The reports read the
runs' records, not this table; it is the quick view."""

from __future__ import annotations

import csv
import os


def check_results_csv(path: str) -> None:
    """Refuse a `--results_csv` that exists and is not a results table (no `task`, `method`, `seed` columns): the
    study would fail only after training every run, and the file is not ours to replace.

    Args:
        path: The results table's path (a missing file is fine: the study writes it).
    """
    if not os.path.isfile(path):
        return
    with open(path, newline="") as file:
        header = next(csv.reader(file), [])
    missing = sorted({"task", "method", "seed"} - set(header))
    if missing:
        raise ValueError(
            f"--results_csv {path} exists and is not a results table (no {missing} columns): give another path."
        )


def write_results(path: str, table):
    """Merge `table` into the CSV at `path` (`merge_results`; written new where there is none); the merged table.

    Args:
        path: The results table (`--results_csv`), checked by `check_results_csv` before the study ran.
        table: This run's rows (`study_dir`, `task`, `method`, `seed`, ...) as a DataFrame.
    """
    import pandas as pd

    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    merged = merge_results(pd.read_csv(path), table) if os.path.isfile(path) else table
    merged.to_csv(path, index=False)
    return merged


def merge_results(previous, table):
    """The results table after a run: `previous` rows (read from the CSV) that `table` does not run again, then
    `table`'s rows. A row is one study's task, method and seed (a teacher's seed is empty), so a study run in parts
    (a task's methods in several calls, as `make study-v3` does) keeps every part's rows, a rerun replaces its own,
    and two studies sharing a CSV (another `--study_dir`, so other settings) keep theirs apart rather than one
    replacing the other's rows for the methods it ran.

    Args:
        previous: The CSV's rows as a DataFrame; rows written before the `study_dir` column are taken as `table`'s
            study's.
        table: This call's rows (`study_dir`, `task`, `method`, `seed`, ...).
    """
    import pandas as pd

    study = table.study_dir.iloc[0]
    previous = previous.assign(study_dir=previous.get("study_dir", study)).fillna({"study_dir": study})

    def keys(frame):
        return list(zip(frame.study_dir, frame.task, frame.method, frame.seed.fillna(-1).astype(int), strict=True))

    rerun = set(keys(table))
    kept = previous[[key not in rerun for key in keys(previous)]]
    return pd.concat([kept, table], ignore_index=True)
