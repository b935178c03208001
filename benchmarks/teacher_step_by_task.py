"""What a teacher's training epoch costs on each GLUE task's own rows, against MNLI's: the ratio a study plan needs to
carry one task's measured teacher time over to another (docs/study-v3.md, "Where it stands", session 18).

A step's cost depends on the batch's shape, not on its words: 32 rows padded to the batch's longest. So the script
(1) lays out one epoch of each task's training rows (all of train.tsv: the study's dev rows, a tenth or fewer, are
included) as the study's teachers batch them (`ShuffledLengthGroupedSampler`, groups of 8 batches, the study's
`max_length` per task) and records each batch's padded length; (2) times a training step (forward, backward,
`AdamW`) of the teacher at a grid of padded lengths, alternated, medians of `--repetitions` after one warm-up each;
(3) prices each task's epoch as the sum of its batches' step times (interpolated on the grid) and prints it beside
the reference task's. A batch padded to fewer tokens than the grid's shortest is priced at the shortest (an
overestimate: about 2% of SST-2's epoch in the committed CPU run, whose short sentences make it the task this
affects).

    python benchmarks/teacher_step_by_task.py --model all-mpnet-base-v2 --repetitions 5
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
import yaml
from common import GLUE, ROOT, alternate, header, timed

from distill_trainer.sampling import ShuffledLengthGroupedSampler
from distill_trainer.study.tasks import get_task, load_task_split, task_texts
from distill_trainer.study.training import load_for_task, tokenize_task


def study_max_length(task_name: str) -> int:
    """The study's `max_length` for the task, from its config (recipes/configs/v3_<task>.yaml)."""
    with open(ROOT / "recipes" / "configs" / f"v3_{task_name}.yaml") as handle:
        return yaml.safe_load(handle)["max_length"]


BATCH = 32
GRID = (8, 16, 32, 64, 96, 128)


def padded_lengths(tokenizer, task_name: str) -> np.ndarray:
    """Each batch's padded length over one epoch of the task's training split, batched as the study's teachers are."""
    task = get_task(task_name)
    data = tokenize_task(load_task_split(task, "train", GLUE), tokenizer, task, study_max_length(task_name))
    lengths = np.asarray(data["length"])
    order = list(ShuffledLengthGroupedSampler(BATCH, lengths.tolist(), generator=torch.Generator().manual_seed(0)))
    return np.array([lengths[order[start : start + BATCH]].max() for start in range(0, len(order), BATCH)])


def step_at(model, optimizer, tokenizer, texts: list[str], length: int):
    """A function that runs one training step on `texts` padded (or cut) to exactly `length` tokens and returns its
    wall time."""
    batch = tokenizer(texts, padding="max_length", truncation=True, max_length=length, return_tensors="pt")
    batch["labels"] = torch.zeros(len(texts), dtype=torch.long)

    def train_step():
        model(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    return lambda: timed(train_step)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="all-mpnet-base-v2", help="the teacher (a packaged name, Hub id or folder)")
    parser.add_argument("--tasks", default="mnli,qqp,sst2", help="the first is the reference of the ratios")
    parser.add_argument("--repetitions", type=int, default=5, help="timed steps per padded length, after a warm-up")
    args = parser.parse_args()
    tasks = args.tasks.split(",")
    header(f"{args.model}: one training epoch per task, priced from step times at padded lengths {GRID}")
    tokenizer, model = load_for_task(args.model, get_task("sst2"), seed=0, ignore_mismatched_sizes=True)
    optimizer = torch.optim.AdamW(model.train().parameters(), lr=3e-5)
    mnli = get_task("mnli")  # any rows will do: pad tokens cost what words cost
    texts = [" ".join(pair) for pair in task_texts(mnli, load_task_split(mnli, "train", GLUE, BATCH))]
    steps = {length: step_at(model, optimizer, tokenizer, texts, length) for length in GRID}
    alternate(steps, 1)  # warm-up: first-call allocations
    seconds = alternate(steps, args.repetitions)
    print("| padded length | " + " | ".join(map(str, GRID)) + " |")
    print("|---|" + "---|" * len(GRID))
    print("| median s/step | " + " | ".join(f"{seconds[length]:.2f}" for length in GRID) + " |\n")
    print(
        f"| task | max_length | steps an epoch | mean padded length | epoch (s, this thread count) | vs {tasks[0]} |"
    )
    print("|---|---|---|---|---|---|")
    epochs = {}
    for task in tasks:
        lengths = padded_lengths(tokenizer, task)
        epochs[task] = float(np.interp(lengths, GRID, [seconds[length] for length in GRID]).sum())
        print(
            f"| {task} | {study_max_length(task)} | {len(lengths)} | {lengths.mean():.1f} | {epochs[task]:.0f} | "
            f"{epochs[task] / epochs[tasks[0]]:.2f}x |"
        )


if __name__ == "__main__":
    main()
