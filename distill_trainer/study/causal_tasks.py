"""GLUE pairs as causal-LM prompt -> completion data (issue 31): MNLI entailment pairs (premise -> hypothesis) and
QQP duplicate pairs (question1 -> question2), written as a folder that `--task causal_lm` reads, with a `dev` split
carved from the training pairs (early stopping and teacher scores) and GLUE's validation split kept for the end."""

from __future__ import annotations

import os
from dataclasses import dataclass

import datasets
import numpy as np
import pandas as pd

from .runs import save_json, write_atomically
from .tasks import get_task, load_task_split

DEV_SHARE, DEV_MOST, DEV_SEED = 0.1, 1000, 0  # dev: 10% of the training pairs or 1,000, whichever is smaller
CAUSAL_TASK_FILE = "causal_task.json"  # what the folder was made from, beside its split files
CAUSAL_SPLITS = ("train", "dev", "validation")


@dataclass(frozen=True)
class PairTask:
    """A GLUE pair task as prompt -> completion: the rows of one label, the first text in a prompt template, the
    second text the completion (with a leading space, so it tokenizes as the words that follow the prompt).

    Args:
        name: The GLUE task's name ("mnli", "qqp").
        label: The label whose rows are kept (MNLI's entailment, QQP's duplicate).
        template: The prompt, with `{}` where the first text goes.
    """

    name: str
    label: int
    template: str


PAIR_TASKS = {
    "mnli": PairTask("mnli", 0, "Premise: {}\nEntailed hypothesis:"),  # 0: entailment
    "qqp": PairTask("qqp", 1, "Question: {}\nDuplicate question:"),  # 1: duplicate
}


def dev_size(pairs: int) -> int:
    """How many training pairs the dev split takes: `DEV_SHARE` of them (rounded down) or `DEV_MOST`.

    Args:
        pairs: How many training pairs there are.
    """
    return min(DEV_MOST, int(pairs * DEV_SHARE))


def causal_pairs(task: PairTask, rows: datasets.Dataset) -> pd.DataFrame:
    """The rows of `task.label` as `idx` (GLUE's row id, else the row number), `prompt` and `completion`, in
    file order.

    Args:
        task: Which label to keep and how to word the prompt.
        rows: One split of the GLUE task, with its two text columns and `label`.
    """
    glue = get_task(task.name)
    frame = rows.to_pandas()
    if "idx" not in frame.columns:
        frame["idx"] = np.arange(len(frame))
    first, second = glue.text_columns
    kept = frame[frame["label"] == task.label]
    return pd.DataFrame(
        {
            "idx": kept["idx"].to_numpy(),
            "prompt": [task.template.format(text) for text in kept[first]],
            "completion": [f" {text}" for text in kept[second]],
        }
    )


def carve_dev(train: pd.DataFrame, seed: int = DEV_SEED) -> tuple[pd.DataFrame, pd.DataFrame]:
    """`(train, dev)`: `dev_size` pairs drawn by `seed` from the training pairs, the rest train; both keep file
    order. The same pairs and seed give the same split on every run and machine (NumPy's PCG64).

    Args:
        train: The training pairs (`causal_pairs`), in file order.
        seed: Draws the dev pairs.
    """
    size = dev_size(len(train))
    if size == 0:
        raise ValueError(f"{len(train)} training pairs are too few to carve a dev split from (10 at least).")
    order = np.random.default_rng(seed).permutation(len(train))
    return train.iloc[np.sort(order[size:])], train.iloc[np.sort(order[:size])]


def prepare_causal_task(
    task: str,
    data: str,
    output_dir: str,
    max_rows: dict[str, int | None] | None = None,
    seed: int = DEV_SEED,
) -> dict:
    """Write `train.jsonl`, `dev.jsonl` and `validation.jsonl` (`idx`, `prompt`, `completion`) and
    `causal_task.json` (what they came from) into `output_dir`, atomically; returns that record.

    Args:
        task: "mnli" or "qqp".
        data: GLUE as a Hub dataset id or a folder of `<task>/<split>.tsv|...` (`load_task_split`).
        output_dir: A new or empty folder: one holding anything is refused, before any work, as nothing the tool
            did not write may be overwritten.
        max_rows: At most this many pairs per split ("train", "dev", "validation"; None: all), the first ones
            after the dev split is carved, so a small study takes the same rows on every run.
        seed: Draws the dev pairs.
    """
    if task not in PAIR_TASKS:
        raise ValueError(f"Unknown task {task!r} for causal-LM pairs; known: {sorted(PAIR_TASKS)}.")
    max_rows = max_rows or {}
    unknown = sorted(set(max_rows) - set(CAUSAL_SPLITS))
    bad = [f"{split}={n}" for split, n in max_rows.items() if n is not None and n < 1]
    if unknown or bad:
        raise ValueError(f"Row limits must name splits {CAUSAL_SPLITS} and be at least 1: {unknown or bad}.")
    if os.path.exists(output_dir) and not (os.path.isdir(output_dir) and not os.listdir(output_dir)):
        raise ValueError(f"--output_dir {output_dir} exists and is not an empty folder: choose a new one.")
    pair_task, glue = PAIR_TASKS[task], get_task(task)
    train, dev = carve_dev(causal_pairs(pair_task, load_task_split(glue, "train", data)), seed)
    validation = causal_pairs(pair_task, load_task_split(glue, "validation", data))
    pairs = {"train": train, "dev": dev, "validation": validation}
    splits = {split: frame.iloc[: max_rows.get(split)] for split, frame in pairs.items()}
    record = {
        "task": task,
        "data": data,
        "label": glue.label_names[pair_task.label],
        "prompt_template": pair_task.template,
        "completion": f"' ' + {glue.text_columns[1]}",
        "dev_rule": f"min({DEV_SHARE:.0%} of the training pairs rounded down, {DEV_MOST}), drawn with seed {seed}",
        "seed": seed,
        "source_splits": {"train": "train", "dev": "train", "validation": glue.validation_split},
        "pairs": {split: len(frame) for split, frame in pairs.items()},
        "rows": {split: len(frame) for split, frame in splits.items()},
    }

    def write(partial: str) -> None:
        os.makedirs(partial)
        for split, frame in splits.items():
            frame.to_json(os.path.join(partial, f"{split}.jsonl"), orient="records", lines=True, force_ascii=False)
        save_json(record, os.path.join(partial, CAUSAL_TASK_FILE))

    write_atomically(output_dir, write)
    return record
