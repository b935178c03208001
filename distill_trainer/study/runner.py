"""The study: teachers -> logit dataset -> every student method x seed, and T x alpha sweeps; finished
runs are reused, so an interrupted study resumes."""

from __future__ import annotations

import os
from typing import Sequence

from transformers import TrainingArguments

from ..config import DistillationConfig
from .args import StudentArguments, StudyArguments, TaskArguments, with_overrides
from .extraction import extract_to_disk
from .runs import StudentResult, TeacherRecord, display_name
from .training import distill_student, train_teacher


def distill_or_reuse(
    task_args: TaskArguments, student_args: StudentArguments, config: DistillationConfig
) -> StudentResult:
    """`distill_student`, unless `config.output_dir` already holds its results (so a study can resume)."""
    if not os.path.isfile(os.path.join(config.output_dir, StudentResult.FILE)):
        distill_student(task_args, student_args, config)
    return StudentResult.load(config.output_dir)


def run_study(task_args: TaskArguments, study: StudyArguments, config: DistillationConfig):
    """Teachers -> logit dataset -> every student method x seed; returns the results as a DataFrame.

    Finished runs (an `eval_results.json` / `teacher_info.json` in their folder) are reused, so an
    interrupted study picks up where it stopped.
    """
    import pandas as pd

    task = task_args.glue_task
    root = os.path.join(study.study_dir, task.name)
    teacher_dirs, rows = [], []
    for teacher in study.teachers:
        folder = os.path.join(root, f"teacher-{display_name(teacher)}")
        if not os.path.isfile(os.path.join(folder, TeacherRecord.FILE)):
            teacher_args = with_overrides(
                config,
                TrainingArguments,
                output_dir=folder,
                num_train_epochs=study.teacher_epochs,
                learning_rate=study.teacher_learning_rate or config.learning_rate,
            )
            train_teacher(task_args, teacher, teacher_args)
        info = TeacherRecord.load(folder)
        teacher_dirs.append(folder)
        rows.append({"method": info.method, "type": "teacher", "seed": None, "score": info.validation_score})
    logits_dir = os.path.join(root, "logits")
    if not os.path.isdir(logits_dir):
        extract_to_disk(task_args, teacher_dirs, logits_dir)
    runs = []
    for method in study.methods:
        if method == "single":
            runs += [(f"single-{i}", {"fusion": "single", "teacher_index": i}) for i in range(len(teacher_dirs))]
        else:
            runs.append((method, {"fusion": method}))
    student_args = StudentArguments(
        logit_dataset=logits_dir, student_model=study.student_model, student_layers=study.student_layers
    )
    for seed in study.seeds:
        for name, options in runs:
            folder = os.path.join(root, f"student-{name}-seed{seed}")
            results = distill_or_reuse(
                task_args, student_args, with_overrides(config, output_dir=folder, seed=seed, **options)
            )
            method, kind = results.method
            rows.append({"method": method, "type": kind, "seed": seed, "score": results.score})
    table = pd.DataFrame(rows).assign(
        task=task.name,
        metric=task.metric,
        temperature=config.temperature,
        alpha=config.alpha,
        train_rows=task_args.max_train_rows,
    )
    os.makedirs(os.path.dirname(study.results_csv) or ".", exist_ok=True)
    if os.path.isfile(study.results_csv):  # keep other tasks' rows, replace this task's
        previous = pd.read_csv(study.results_csv)
        table = pd.concat([previous[previous.task != task.name], table], ignore_index=True)
    table.to_csv(study.results_csv, index=False)
    return table


def sweep_grid(
    task_args: TaskArguments,
    student_args: StudentArguments,
    config: DistillationConfig,
    temperatures: Sequence[float],
    alphas: Sequence[float],
    grid_csv: str | None = None,
):
    """Train one student per (T, alpha) with `config`'s fusion and seed; the scores as a long DataFrame.

    Each cell is a run folder under `config.output_dir`; finished cells are reused.
    """
    import pandas as pd

    rows = []
    for temperature in temperatures:
        for alpha in alphas:
            folder = os.path.join(config.output_dir, f"T{temperature:g}-alpha{alpha:g}")
            results = distill_or_reuse(
                task_args,
                student_args,
                with_overrides(config, output_dir=folder, temperature=temperature, alpha=alpha),
            )
            rows.append(
                {
                    **{
                        key: getattr(results, key)
                        for key in (
                            "task",
                            "fusion",
                            "teacher_index",
                            "seed",
                            "temperature",
                            "alpha",
                            "metric",
                            "score",
                            "train_rows",
                            "train_runtime",
                        )
                    },
                    "run": os.path.basename(folder),
                }
            )
    grid = pd.DataFrame(rows)
    grid.to_csv(grid_csv or os.path.join(config.output_dir, "grid.csv"), index=False)
    return grid
