"""The numbers the report states, per task and per T x alpha grid: per-example analyses, paired tests, grid
findings. Computed once here; rendering only formats them."""

from __future__ import annotations

import os
import re

import datasets
import numpy as np
import pandas as pd

from ...logits import read_metadata, teacher_logits_array
from ..extraction import SCORE_TOLERANCE
from ..runs import VALIDATION_LOGITS_FILE, short_teacher_name
from ..tasks import compute_task_metrics, get_task
from . import plots
from .collect import student_predictions
from .per_example import (
    accuracy_by_region,
    agreement_regions,
    error_by_spread,
    failure_table,
    spread_buckets,
    teacher_confidence,
)
from .stats import STUDENT_TYPES, paired_bootstrap

TEACHER_FACTS = (
    "method",
    "score",
    "epochs_trained",
    "best_epoch",
    "learning_rate",
    "collapsed_learning_rates",
    "device",
    "train_runtime",
)


def analyze_task(
    study_dir: str, task_name: str, task_runs: pd.DataFrame, aggregated: pd.DataFrame, resamples: int
) -> dict:
    """One task's per-example analyses (on the validation rows every student scored) and its two paired tests:
    best distilled student vs the baseline, best multi-teacher vs best single-teacher student.

    Args:
        study_dir: The study folder (`<task>/logits` gives the teachers' validation logits and the labels).
        task_name: The task's folder name.
        task_runs: The task's rows of the results table (`collect.collect_runs`), teachers and students.
        aggregated: The task's rows of `stats.aggregate_seeds` (mean over seeds per method): what picks the best
            student of each type.
        resamples: Bootstrap resamples per paired test.
    """
    task = get_task(task_name)
    logit_dataset = datasets.load_from_disk(os.path.join(study_dir, task_name, "logits"))
    validation = logit_dataset["validation"]
    metadata = read_metadata(validation)
    teacher_names = (
        [short_teacher_name(t.name, task_name) for t in metadata.teachers]
        if metadata
        else [f"teacher {i}" for i in range(len(validation[0]["teacher_logits"]))]
    )
    students = task_runs[task_runs.type != "teacher"]
    predictions = {run.run_dir: student_predictions(run.run_dir, task_name) for run in students.itertuples()}
    rows = min(len(p) for p in predictions.values()) if predictions else len(validation)
    teacher_logits = teacher_logits_array(validation.select(range(rows)))
    labels = np.asarray(validation["label"][:rows])
    by_method = {
        method: np.stack([predictions[d][:rows] for d in group.run_dir])
        for method, group in students.groupby("method", sort=False)
    }
    seeds = min(len(p) for p in by_method.values())  # per-example tables: the mean over the seeds all methods have
    per_seed = [{method: p[seed] for method, p in by_method.items()} for seed in range(seeds)]
    analyses = regression_analyses if task.is_regression else classification_analyses
    per_example_metrics, per_example_tables = analyses(teacher_logits, per_seed, labels, teacher_names)
    best = {
        kind: aggregated[aggregated.type == kind].sort_values("mean").iloc[-1]
        for kind in STUDENT_TYPES
        if (aggregated.type == kind).any()
    }
    distilled = aggregated[aggregated.type.isin(["single", "multi"])]
    tests = {}
    if "baseline" in best and not distilled.empty:  # a study whose distilled students have not run yet has none
        best_distilled = distilled.sort_values("mean").iloc[-1]
        tests["distilled_vs_baseline"] = dict(
            paired_bootstrap(
                by_method[best_distilled.method], by_method[best["baseline"].method], labels, task.metric, resamples
            ),
            a=best_distilled.method,
            b="none",
        )
    if "multi" in best and "single" in best:
        single = best["single"].method
        each = [  # does any fusion (the new ones included) beat the best single teacher?
            dict(paired_bootstrap(by_method[m], by_method[single], labels, task.metric, resamples), a=m)
            for m in aggregated[aggregated.type == "multi"].sort_values("mean", ascending=False).method
        ]
        best_multi = next(test for test in each if test["a"] == best["multi"].method)
        tests["multi_vs_single"] = dict(best_multi, b=single)  # the same resamples: not bootstrapped twice
        tests["each_multi_vs_single"] = each
    teachers = aggregated[aggregated.type == "teacher"]
    metrics = {
        "metric": task.metric,
        "validation_rows": int(rows),
        "train_rows": int(task_runs.train_rows.dropna().max()),
        "labelled_rows": int(students.labelled_rows.max()) if students.labelled_rows.notna().any() else None,
        "seeds": sorted(int(s) for s in students.seed.dropna().unique()),
        "train_minutes": {
            kind: {
                "minutes": float(runs.train_runtime.sum() / 60),
                "runs_timed": int(runs.train_runtime.notna().sum()),
                "runs": len(runs),
                "by_device": {  # a GPU minute is not a CPU minute: say which machine each one is
                    device: float(seconds / 60)
                    for device, seconds in runs[runs.train_runtime.notna()]
                    .fillna({"device": "an unrecorded device"})
                    .groupby("device")
                    .train_runtime.sum()
                    .items()
                },
            }
            for kind, runs in (("teachers", task_runs[task_runs.type == "teacher"]), ("students", students))
        },
        "best_teacher": float(teachers["mean"].max()) if not teachers.empty else None,
        "teachers": [  # how far each teacher was fine-tuned, from its record
            {key: getattr(run, key) for key in TEACHER_FACTS}
            for run in task_runs[task_runs.type == "teacher"].sort_values("score", ascending=False).itertuples()
        ],
        "baseline": float(best["baseline"]["mean"]) if "baseline" in best else None,
        "best_single": {"method": best["single"].method, "mean": float(best["single"]["mean"])}
        if "single" in best
        else None,
        "best_multi": {"method": best["multi"].method, "mean": float(best["multi"]["mean"])}
        if "multi" in best
        else None,
        "distilled_students_above_baseline": int((distilled["mean"] > best["baseline"]["mean"]).sum())
        if "baseline" in best
        else None,
        "tests": tests,
        "defective_teachers": defective_teachers(task_runs, validation, teacher_names, task),
        "regression": task.is_regression,
        **per_example_metrics,
    }
    return {"task": task_name, "metrics": metrics, "aggregated": aggregated, **per_example_tables}


def defective_teachers(task_runs: pd.DataFrame, validation: datasets.Dataset, names: list[str], task) -> list[dict]:
    """Teachers whose stored validation logits do not score what their record says (beyond `SCORE_TOLERANCE`):
    every student that learned from them learned from logits that are not the teacher's own (study v2's MNLI TF-IDF
    teacher: recorded 0.407, stored 0.354). Each entry names the teacher and both scores.

    Args:
        task_runs: The task's rows of the results table (the teachers' recorded scores).
        validation: The logit dataset's whole validation split (what the teachers' records scored).
        names: The teachers' short names, in column order.
        task: The `GlueTask`, for its metric.
    """
    logits, labels = teacher_logits_array(validation), np.asarray(validation["label"][:])
    stored = {name: compute_task_metrics(task, logits[:, j], labels)[task.metric] for j, name in enumerate(names)}
    found = []
    for run in task_runs[task_runs.type == "teacher"].itertuples():
        name = run.method.removeprefix("teacher: ")
        if name in stored and abs(stored[name] - run.score) > SCORE_TOLERANCE:
            found.append({"teacher": name, "recorded": float(run.score), "stored": float(stored[name])})
    return found


def learned_from(method: str, kind: str, defective: list[dict]) -> bool:
    """Whether a student method learned from one of the `defective` teachers' logits: the single student of one
    of them, or any multi-teacher method (they fuse every teacher).

    Args:
        method: The student method's name (`single: <teacher>` for a single-teacher student).
        kind: The method's type (baseline / single / multi).
        defective: The task's defective teachers (`defective_teachers`); with none, no method learned from one.
    """
    return bool(defective) and (kind == "multi" or any(method == f"single: {d['teacher']}" for d in defective))


def classification_analyses(teacher_logits, per_seed: list[dict], labels, teacher_names) -> tuple[dict, dict]:
    """Teacher confidence, student accuracy by teacher agreement region, student errors by cause (mean over
    seeds): the numbers for the report, and its tables.

    Args:
        teacher_logits: `[n, teachers, labels]` teacher logits on the validation rows.
        per_seed: One dict per seed: method name -> its student's class ids `[n]` on those rows.
        labels: `[n]` validation labels.
        teacher_names: The teachers' short names, in column order.
    """
    regions = agreement_regions(teacher_logits)
    region_table = sum(accuracy_by_region(regions, predicted, labels) for predicted in per_seed) / len(per_seed)
    empty_regions = [region for region in region_table.columns if region_table.loc["examples", region] == 0]
    failures = sum(failure_table(teacher_logits, predicted, labels) for predicted in per_seed) / len(per_seed)
    confidence = teacher_confidence(teacher_logits, teacher_names)
    metrics = {
        "teacher_mean_max_prob": confidence.set_index("teacher").mean_max_prob.to_dict(),
        "teacher_agreement_rate": float((regions == "all_agree").mean()),
        "share_of_errors_all_teachers_wrong": float(failures.all_teachers_wrong.sum() / max(failures.errors.sum(), 1)),
    }
    tables = {
        "confidence": confidence,  # regions no example falls in are left out
        "regions": region_table.drop(columns=empty_regions),
        "empty_regions": empty_regions,
        "failures": failures,
    }
    return metrics, tables


def regression_analyses(teacher_logits, per_seed: list[dict], labels, teacher_names) -> tuple[dict, dict]:
    """The regression analogues: how far the teachers' predictions spread per row, and each student's mean
    absolute error in the rows of low, middle and high spread (terciles; mean over seeds).

    Args:
        teacher_logits: `[n, teachers, 1]` teacher predictions (scores) on the validation rows.
        per_seed: One dict per seed: method name -> its student's scores `[n]` on those rows; the correlation of
            spread and error is given for the first seed's.
        labels: `[n]` validation scores.
        teacher_names: The teachers' short names, in column order.
    """
    spread, buckets = spread_buckets(teacher_logits)
    errors = sum(error_by_spread(buckets, predicted, labels) for predicted in per_seed) / len(per_seed)
    truth = np.asarray(labels, dtype=np.float64)
    teacher_errors = np.abs(np.asarray(teacher_logits, dtype=np.float64)[..., 0] - truth[:, None]).mean(0)
    metrics = {
        "teacher_mean_spread": float(spread.mean()),
        "teacher_mean_abs_error": dict(zip(teacher_names, map(float, teacher_errors), strict=False)),
        "spread_error_correlation": {
            method: float(np.corrcoef(spread, np.abs(np.asarray(p, dtype=np.float64) - truth))[0, 1])
            for method, p in per_seed[0].items()
        },
    }
    return metrics, {"spread": errors}


def grid_analysis(grids: pd.DataFrame, aggregated: pd.DataFrame, output_dir: str) -> list[dict]:
    """Per sweep: the best (T, alpha), the mean score per temperature (averaged over alpha) and a heatmap.

    Each cell is one seed, so the spread between temperatures is set beside the task's seed-to-seed standard
    deviation (median over the student methods with several seeds): a spread below two of those is noise.

    Args:
        grids: Every grid's cells (`collect.collect_grids`); empty gives no findings.
        aggregated: The results table aggregated over seeds (`stats.aggregate_seeds`), for the seed-to-seed
            standard deviation.
        output_dir: Where the heatmaps are written.
    """
    findings = []
    if grids.empty:
        return findings
    for (task_name, grid_name), grid in grids.groupby(["task", "grid"], sort=False):
        matrix = grid.pivot_table(index="temperature", columns="alpha", values="score")
        best = grid.loc[grid.score.idxmax()]
        by_temperature = matrix.mean(1)
        seed_std = aggregated.loc[(aggregated.task == task_name) & aggregated.type.isin(STUDENT_TYPES), "std"]
        runtime = grid["train_runtime"].dropna() if "train_runtime" in grid else pd.Series(dtype=float)
        findings.append(
            {
                "task": task_name,
                "grid": grid_name,
                "fusion": best["method"] if "method" in grid and pd.notna(best["method"]) else best.fusion,
                "metric": best.metric,
                "best_temperature": float(best.temperature),
                "best_alpha": float(best.alpha),
                "best_score": float(best.score),
                "mean_by_temperature": {float(t): float(v) for t, v in by_temperature.items()},
                "best_mean_temperature": float(by_temperature.idxmax()),
                "temperature_spread": float(by_temperature.max() - by_temperature.min()),
                "seed_std": float(seed_std.median()) if seed_std.notna().any() else None,
                "cells": int(len(grid)),
                "train_minutes": float(runtime.sum() / 60) if len(runtime) else None,
                "predictions_changed_by_temperature": predictions_changed_by_temperature(grid),
                "matrix": matrix,
                "figure": plots.heatmap(
                    100 * matrix,
                    os.path.join(output_dir, re.sub(r"[^\w.-]+", "_", f"grid_{task_name}_{grid_name}") + ".png"),
                    f"{task_name} {grid_name}: {best.metric} (%)",
                    xlabel="alpha",
                    ylabel="temperature",
                ),
            }
        )
    return findings


def predictions_changed_by_temperature(grid: pd.DataFrame) -> dict[float, int] | None:
    """Per alpha: the most validation predictions on which two students of a grid that differ only in T (same
    alpha, same seed, deterministic training) disagree; None where the cells' validation logits are not saved.

    0 says the temperature changed nothing the metric can see: expected once T is past the teachers' logit
    margins, where KL * T^2 tends to plain logit matching (Hinton et al., 2015).

    Args:
        grid: One grid's cells (rows of `collect.collect_grids`); its `run` and `grid_dir` columns locate each
            cell's saved validation logits.
    """
    if "run" not in grid:
        return None
    changed = {}
    for alpha, cells in grid.groupby("alpha"):
        paths = [
            os.path.join(folder, run, VALIDATION_LOGITS_FILE)
            for folder, run in zip(cells.grid_dir, cells.run, strict=False)
        ]
        if not all(os.path.isfile(path) for path in paths):
            return None
        predictions = [np.load(path).argmax(-1) for path in paths]
        changed[float(alpha)] = max(int((a != b).sum()) for a in predictions for b in predictions)
    return changed
