"""Turn a study folder written by `recipes/compare.py` (and `recipes/sweep.py`) into results: the master
table, success metrics, plots and REPORT.md. Collecting (`collect`), computing (`compute`) and rendering
(`render`) live in their own modules; this one runs them in order and writes the files.
"""

from __future__ import annotations

import json
import logging
import os

from . import plots
from .collect import collect_grids, collect_runs
from .compute import analyze_task, grid_analysis
from .reference import reference_comparison
from .render import render_report, to_plain
from .stats import STUDENT_TYPES, aggregate_seeds, gap_table, multi_teacher_advantage

logger = logging.getLogger(__name__)


def analyze_study(study_dir: str, output_dir: str = "results", resamples: int = 10_000) -> dict:
    """Everything the study reports, for every task under `study_dir`; writes files to `output_dir`.

    Args:
        study_dir: The study folder written by `recipes/compare.py` (and `recipes/sweep.py`).
        output_dir: Where master_results.csv, success_metrics.json, the figures and REPORT.md are written
            (created if needed).
        resamples: Bootstrap resamples per paired test.

    Returns the success metrics (also written as success_metrics.json).
    """
    os.makedirs(output_dir, exist_ok=True)
    runs = collect_runs(study_dir)
    runs.to_csv(os.path.join(output_dir, "master_results.csv"), index=False)
    aggregated = aggregate_seeds(runs)
    gaps, advantage = gap_table(aggregated), multi_teacher_advantage(aggregated)
    sections, metrics, figures = [], {}, {}
    for task_name in dict.fromkeys(runs.task):
        task_runs = runs[runs.task == task_name]
        if (task_runs.type == "teacher").all() or not os.path.isdir(os.path.join(study_dir, task_name, "logits")):
            logger.warning("%s: no logit dataset or no finished student yet; left out of the report.", task_name)
            continue
        per_task = analyze_task(study_dir, task_name, task_runs, aggregated[aggregated.task == task_name], resamples)
        metrics[task_name] = per_task["metrics"]
        figures[task_name] = (
            [
                plots.grouped_bars(
                    per_task["spread"].drop(index="examples"),
                    os.path.join(output_dir, f"error_by_teacher_spread_{task_name}.png"),
                    "mean absolute error",
                    f"{task_name}: student error by how much the teachers disagree",
                )
            ]
            if per_task["metrics"]["regression"]
            else classification_figures(per_task, task_name, output_dir)
        )
        sections.append(per_task)
    if not gaps.empty:
        figures["all"] = [plots.gap_bars(gaps, os.path.join(output_dir, "gap_analysis.png"))]
    students = aggregated[aggregated.type.isin(STUDENT_TYPES)]
    if students.task.nunique() >= 1 and not students.empty:
        ranks = students.assign(rank=students.groupby("task")["mean"].rank(ascending=False, method="min"))
        ranking = ranks.pivot(index="method", columns="task", values="rank")
        figures.setdefault("all", []).append(
            plots.heatmap(
                ranking,
                os.path.join(output_dir, "ranking_heatmap.png"),
                "rank by mean score (1 = best)",
                "{:.0f}",
                "viridis_r",
            )
        )
    grid_findings = grid_analysis(collect_grids(study_dir), aggregated, output_dir)
    metrics["grids"] = [
        {k: v for k, v in finding.items() if k not in ("matrix", "figure")} for finding in grid_findings
    ]
    for row in advantage.to_dict("records"):
        if row["task"] in metrics:  # a task left out (no logit dataset) has no metrics entry
            metrics[row["task"]]["multi_teacher_advantage"] = row["advantage"]
    with open(os.path.join(output_dir, "success_metrics.json"), "w") as handle:
        json.dump(to_plain(metrics), handle, indent=2)
    # the reference trained every student on all labels: a low-resource task has no counterpart there
    low_resource = [section["task"] for section in sections if section["metrics"]["labelled_rows"]]
    comparison = reference_comparison(aggregated[~aggregated.task.isin(low_resource)])
    if comparison is not None:
        metrics["reference_comparison"] = comparison.to_dict("records")
    report = render_report(gaps, advantage, sections, grid_findings, figures, comparison)
    with open(os.path.join(output_dir, "REPORT.md"), "w") as handle:
        handle.write(report)
    return metrics


def classification_figures(per_task: dict, task_name: str, output_dir: str) -> list[str]:
    """Student accuracy by teacher agreement region, and student errors by cause.

    Args:
        per_task: The task's `compute.analyze_task` result (its `regions` and `failures` tables).
        task_name: The task's name (in the file names and titles).
        output_dir: Where the PNGs are written.
    """
    return [
        plots.grouped_bars(
            per_task["regions"].drop(index="examples"),
            os.path.join(output_dir, f"agreement_breakdown_{task_name}.png"),
            "accuracy",
            f"{task_name}: student accuracy by teacher agreement region",
        ),
        plots.grouped_bars(
            per_task["failures"].drop(columns="errors"),
            os.path.join(output_dir, f"failure_categories_{task_name}.png"),
            "errors (mean over seeds)",
            f"{task_name}: why each student error happened",
        ),
    ]
