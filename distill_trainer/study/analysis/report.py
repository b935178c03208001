"""Turn a study folder written by `recipes/compare.py` (and `recipes/sweep.py`) into results: the master
table, success metrics, plots and REPORT.md, whose interpretation is generated from the numbers.

Layout read: `<study_dir>/<task>/{teacher-*/teacher_info.json, logits/, student-*/eval_results.json,
sweep-*/grid.csv}`. A student folder's validation logits (`validation_logits.npy`) are used when present,
otherwise computed once from the saved student and cached there.
"""

from __future__ import annotations

import glob
import json
import logging
import os

import datasets
import numpy as np
import pandas as pd

from ...logits import read_metadata, teacher_logits_array
from ..hub import EVAL_RESULTS_FILE, read_json
from ..runs import VALIDATION_LOGITS_FILE, short_teacher_name, student_method, teacher_method
from ..tasks import get_task
from ..teachers import TEACHER_INFO_FILE
from ..training import load_for_task, tokenize_task
from . import plots
from .per_example import accuracy_by_region, agreement_regions, failure_table, teacher_confidence
from .stats import STUDENT_TYPES, aggregate_seeds, gap_table, multi_teacher_advantage, paired_bootstrap

logger = logging.getLogger(__name__)

# The reference study's teachers: mean max probability 0.92 (MRPC, its least confident task) to 0.99 (SST-2).
REFERENCE_TEACHER_MAX_PROB = 0.92


# ---- collecting runs ------------------------------------------------------------------------------


def collect_runs(study_dir: str) -> pd.DataFrame:
    """One row per teacher and per student run found under `study_dir` (the master results table)."""
    rows = []
    for info_path in sorted(glob.glob(os.path.join(study_dir, "*", "teacher-*", TEACHER_INFO_FILE))):
        info = read_json(info_path)
        rows.append({"task": info["task"], "method": teacher_method(info),
                     "type": "teacher", "seed": np.nan,
                     "score": info["validation_score"], "metric": info["metric"], "train_rows": info.get("train_rows"),
                     "train_runtime": info.get("train_runtime"), "run_dir": os.path.dirname(info_path)})
    for results_path in sorted(glob.glob(os.path.join(study_dir, "*", "student-*", EVAL_RESULTS_FILE))):
        results = read_json(results_path)
        method, kind = student_method(results)
        rows.append({"task": results["task"], "method": method, "type": kind, "seed": results["seed"],
                     "score": results["score"], "metric": results["metric"], "train_rows": results.get("train_rows"),
                     "temperature": results["temperature"], "alpha": results["alpha"],
                     "train_runtime": results.get("train_runtime"), "run_dir": os.path.dirname(results_path)})
    if not rows:
        raise FileNotFoundError(f"No teacher_info.json or eval_results.json under {study_dir}/<task>/: run compare.py first.")
    return pd.DataFrame(rows)


def collect_grids(study_dir: str) -> pd.DataFrame:
    """Every T x alpha grid (`grid.csv` of recipes/sweep.py) under `study_dir`, with its sweep's folder name."""
    frames = [pd.read_csv(path).assign(grid=os.path.basename(os.path.dirname(path)), grid_dir=os.path.dirname(path))
              for path in sorted(glob.glob(os.path.join(study_dir, "**", "grid.csv"), recursive=True))]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def student_predictions(run_dir: str, validation: datasets.Dataset, task_name: str) -> np.ndarray:
    """A student's class predictions on the validation rows: cached logits, else computed from the saved model."""
    path = os.path.join(run_dir, VALIDATION_LOGITS_FILE)
    if not os.path.isfile(path):
        from transformers import Trainer, TrainingArguments

        results = read_json(run_dir, EVAL_RESULTS_FILE)
        task = get_task(task_name)
        tokenizer, model = load_for_task(run_dir, task)
        rows = validation.select(range(results.get("eval_rows") or len(validation)))
        trainer = Trainer(model=model, processing_class=tokenizer, args=TrainingArguments(
            output_dir=os.path.join(run_dir, "analysis-tmp"), report_to="none", per_device_eval_batch_size=64,
            use_cpu=True, disable_tqdm=True))
        logits = trainer.predict(tokenize_task(rows, tokenizer, task, results.get("max_length") or 128)).predictions
        np.save(path, logits.astype(np.float32))
    return np.load(path).argmax(-1)


# ---- the analysis ---------------------------------------------------------------------------------


def analyze_study(study_dir: str, output_dir: str = "results", resamples: int = 10_000) -> dict:
    """Everything the study reports, for every task under `study_dir`; writes files to `output_dir`.

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
        figures[task_name] = [
            plots.grouped_bars(per_task["regions"].drop(index="examples"),
                               os.path.join(output_dir, f"agreement_breakdown_{task_name}.png"),
                               "accuracy", f"{task_name}: student accuracy by teacher agreement region"),
            plots.grouped_bars(per_task["failures"].drop(columns="errors"),
                               os.path.join(output_dir, f"failure_categories_{task_name}.png"),
                               "errors (mean over seeds)", f"{task_name}: why each student error happened"),
        ]
        sections.append(per_task)
    if not gaps.empty:
        figures["all"] = [plots.gap_bars(gaps, os.path.join(output_dir, "gap_analysis.png"))]
    students = aggregated[aggregated.type.isin(STUDENT_TYPES)]
    if students.task.nunique() >= 1 and not students.empty:
        ranks = students.assign(rank=students.groupby("task")["mean"].rank(ascending=False, method="min"))
        ranking = ranks.pivot(index="method", columns="task", values="rank")
        figures.setdefault("all", []).append(plots.heatmap(ranking, os.path.join(output_dir, "ranking_heatmap.png"),
                                                           "rank by mean score (1 = best)", "{:.0f}", "viridis_r"))
    grid_findings = grid_analysis(collect_grids(study_dir), aggregated, output_dir)
    metrics["grids"] = [{k: v for k, v in finding.items() if k not in ("matrix", "figure")} for finding in grid_findings]
    for row in advantage.to_dict("records"):
        metrics[row["task"]]["multi_teacher_advantage"] = row["advantage"]
    with open(os.path.join(output_dir, "success_metrics.json"), "w") as handle:
        json.dump(to_plain(metrics), handle, indent=2)
    report = render_report(gaps, advantage, sections, grid_findings, figures)
    with open(os.path.join(output_dir, "REPORT.md"), "w") as handle:
        handle.write(report)
    return metrics


def analyze_task(study_dir: str, task_name: str, task_runs: pd.DataFrame, aggregated: pd.DataFrame, resamples: int) -> dict:
    """One task's per-example analyses (on the validation rows every student scored) and its two paired tests:
    best distilled student vs the baseline, best multi-teacher vs best single-teacher student."""
    task = get_task(task_name)
    logit_dataset = datasets.load_from_disk(os.path.join(study_dir, task_name, "logits"))
    validation = logit_dataset["validation"]
    metadata = read_metadata(validation)
    teacher_names = ([short_teacher_name(t.name, task_name) for t in metadata.teachers] if metadata
                     else [f"teacher {i}" for i in range(len(validation[0]["teacher_logits"]))])
    students = task_runs[task_runs.type != "teacher"]
    predictions = {run.run_dir: student_predictions(run.run_dir, validation, task_name) for run in students.itertuples()}
    rows = min(len(p) for p in predictions.values()) if predictions else len(validation)
    teacher_logits = teacher_logits_array(validation.select(range(rows)))
    labels = np.asarray(validation["label"][:rows])
    by_method = {method: np.stack([predictions[d][:rows] for d in group.run_dir]) for method, group in students.groupby("method", sort=False)}
    regions = agreement_regions(teacher_logits)
    seeds = min(len(p) for p in by_method.values())  # per-example tables: the mean over the seeds all methods have
    per_seed = [{method: p[seed] for method, p in by_method.items()} for seed in range(seeds)]
    region_table = sum(accuracy_by_region(regions, predicted, labels) for predicted in per_seed) / seeds
    empty_regions = [region for region in region_table.columns if region_table.loc["examples", region] == 0]
    failures = sum(failure_table(teacher_logits, predicted, labels) for predicted in per_seed) / seeds
    best = {kind: aggregated[aggregated.type == kind].sort_values("mean").iloc[-1] for kind in STUDENT_TYPES
            if (aggregated.type == kind).any()}
    distilled = aggregated[aggregated.type.isin(["single", "multi"])].sort_values("mean").iloc[-1]
    tests = {}
    if "baseline" in best:
        tests["distilled_vs_baseline"] = dict(paired_bootstrap(by_method[distilled.method], by_method[best["baseline"].method],
                                                               labels, task.metric, resamples), a=distilled.method, b="none")
    if "multi" in best and "single" in best:
        tests["multi_vs_single"] = dict(paired_bootstrap(by_method[best["multi"].method], by_method[best["single"].method],
                                                         labels, task.metric, resamples), a=best["multi"].method, b=best["single"].method)
    confidence = teacher_confidence(teacher_logits, teacher_names)
    teachers = aggregated[aggregated.type == "teacher"]
    metrics = {
        "metric": task.metric, "validation_rows": int(rows), "train_rows": int(task_runs.train_rows.dropna().max()),
        "seeds": sorted(int(s) for s in students.seed.dropna().unique()),
        "train_minutes": {kind: {"minutes": float(runs.train_runtime.sum() / 60),
                                 "runs_timed": int(runs.train_runtime.notna().sum()), "runs": len(runs)}
                          for kind, runs in (("teachers", task_runs[task_runs.type == "teacher"]), ("students", students))},
        "best_teacher": float(teachers["mean"].max()) if not teachers.empty else None,
        "baseline": float(best["baseline"]["mean"]) if "baseline" in best else None,
        "best_single": {"method": best["single"].method, "mean": float(best["single"]["mean"])} if "single" in best else None,
        "best_multi": {"method": best["multi"].method, "mean": float(best["multi"]["mean"])} if "multi" in best else None,
        "distilled_students_above_baseline": int((aggregated[aggregated.type.isin(["single", "multi"])]["mean"]
                                                  > best["baseline"]["mean"]).sum()) if "baseline" in best else None,
        "tests": tests,
        "teacher_mean_max_prob": confidence.set_index("teacher").mean_max_prob.to_dict(),
        "teacher_agreement_rate": float((regions == "all_agree").mean()),
        "share_of_errors_all_teachers_wrong": float(failures.all_teachers_wrong.sum() / max(failures.errors.sum(), 1)),
    }
    return {"task": task_name, "metrics": metrics, "confidence": confidence,  # regions no example falls in are left out
            "regions": region_table.drop(columns=empty_regions), "empty_regions": empty_regions,
            "failures": failures, "aggregated": aggregated}


def grid_analysis(grids: pd.DataFrame, aggregated: pd.DataFrame, output_dir: str) -> list[dict]:
    """Per sweep: the best (T, alpha), the mean score per temperature (averaged over alpha) and a heatmap.

    Each cell is one seed, so the spread between temperatures is set beside the task's seed-to-seed standard
    deviation (median over the student methods with several seeds): a spread below two of those is noise.
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
        findings.append({
            "task": task_name, "grid": grid_name, "fusion": best.fusion, "metric": best.metric,
            "best_temperature": float(best.temperature), "best_alpha": float(best.alpha), "best_score": float(best.score),
            "mean_by_temperature": {float(t): float(v) for t, v in by_temperature.items()},
            "best_mean_temperature": float(by_temperature.idxmax()),
            "temperature_spread": float(by_temperature.max() - by_temperature.min()),
            "seed_std": float(seed_std.median()) if seed_std.notna().any() else None,
            "cells": int(len(grid)), "train_minutes": float(runtime.sum() / 60) if len(runtime) else None,
            "predictions_changed_by_temperature": predictions_changed_by_temperature(grid),
            "matrix": matrix,
            "figure": plots.heatmap(100 * matrix, os.path.join(output_dir, f"grid_{task_name}_{grid_name}.png"),
                                    f"{task_name} {grid_name}: {best.metric} (%)", xlabel="alpha", ylabel="temperature"),
        })
    return findings


def predictions_changed_by_temperature(grid: pd.DataFrame) -> dict[float, int] | None:
    """Per alpha: the most validation predictions on which two students of a grid that differ only in T (same
    alpha, same seed, deterministic training) disagree; None where the cells' validation logits are not saved.

    0 says the temperature changed nothing the metric can see: expected once T is past the teachers' logit
    margins, where KL * T^2 tends to plain logit matching (Hinton et al., 2015).
    """
    if "run" not in grid:
        return None
    changed = {}
    for alpha, cells in grid.groupby("alpha"):
        paths = [os.path.join(folder, run, VALIDATION_LOGITS_FILE) for folder, run in zip(cells.grid_dir, cells.run)]
        if not all(os.path.isfile(path) for path in paths):
            return None
        predictions = [np.load(path).argmax(-1) for path in paths]
        changed[float(alpha)] = max(int((a != b).sum()) for a in predictions for b in predictions)
    return changed


# ---- REPORT.md ------------------------------------------------------------------------------------


def percent(value: float) -> str:
    """A 0-1 score as a percentage with two decimals, as the study's tables print them."""
    return f"{100 * value:.2f}" if np.isfinite(value) else "n/a"


def pp(value: float) -> str:
    return f"{100 * value:+.2f} pp"


def verdict(test: dict, better: str, worse: str) -> str:
    if test["ci_low"] > 0:
        return f"{better} (95% CI excludes 0, p = {test['p_value']:.3f})"
    if test["ci_high"] < 0:
        return f"{worse} (95% CI excludes 0, p = {test['p_value']:.3f})"
    return f"no significant difference (95% CI includes 0, p = {test['p_value']:.3f})"


def render_report(gaps, advantage, sections, grid_findings, figures) -> str:
    lines = ["# Multi-teacher distillation study: report", "",
             "Generated by `recipes/analyze.py` from the runs' own files; every sentence below is computed from them.", ""]
    for section in sections:
        m, task = section["metrics"], section["task"]
        lines += [f"## {task} (validation {m['metric']}, {m['validation_rows']} rows; {m['train_rows']} training rows; "
                  f"seeds {', '.join(map(str, m['seeds']))})", ""]
        timed = [f"{kind} {t['minutes']:.1f} minutes ({t['runs_timed']} of {t['runs']} runs recorded it)"
                 for kind, t in m["train_minutes"].items() if t["runs_timed"]]
        if timed:
            lines += [f"Training time on this machine: {'; '.join(timed)}.", ""]
        table = section["aggregated"].assign(**{
            "mean": lambda f: [percent(v) for v in f["mean"]], "std": lambda f: [percent(v) for v in f["std"]],
            "95% CI": lambda f: [f"[{100 * lo:.2f}, {100 * hi:.2f}]" if np.isfinite(lo) else "n/a"
                                 for lo, hi in zip(f.ci_low, f.ci_high)]})
        lines += [markdown_table(table[["method", "type", "n", "mean", "std", "95% CI"]]), ""]
        lines += interpretation(m) + [""]
        confidence = section["confidence"].assign(
            mean_max_prob=lambda f: [f"{v:.3f}" for v in f.mean_max_prob],
            mean_entropy=lambda f: [f"{v:.3f}" for v in f.mean_entropy],
            pct_high_confidence=lambda f: [f"{v:.1f}%" for v in f.pct_high_confidence])
        lines += ["Teacher confidence on the validation rows (entropy in nats; high confidence: max probability > 0.95):", "",
                  markdown_table(confidence), ""]
        regions, empty = section["regions"], section["empty_regions"]
        shown = pd.concat([regions.drop(index="examples").map(percent), regions.loc[["examples"]].astype(int).astype(str)])
        lines += ["Student accuracy (%) by teacher agreement region (mean over seeds; last row: examples per region"
                  + (f"; no example falls in {', '.join(empty)}" if empty else "") + "):", "",
                  markdown_table(shown.reset_index().rename(columns={"index": "method"})), ""]
        lines += ["Student errors by cause (mean over seeds):", "",
                  markdown_table(section["failures"].map(lambda v: f"{v:.1f}").reset_index().rename(columns={"index": "method"})), ""]
        lines += [f"![]({os.path.basename(p)})" for p in figures.get(task, [])] + [""]
    if not advantage.empty:
        lines += ["## Multi-teacher advantage (best multi - best single, mean over seeds)", "",
                  markdown_table(advantage.assign(best_multi_mean=lambda f: [percent(v) for v in f.best_multi_mean],
                                                  best_single_mean=lambda f: [percent(v) for v in f.best_single_mean],
                                                  advantage=lambda f: [pp(v) for v in f.advantage])), ""]
    if not gaps.empty:
        lines += ["## Gap closed: (student - baseline) / (best teacher - baseline)", "",
                  markdown_table(gaps[["task", "method", "type"]].assign(
                      gap_closed=[f"{100 * v:.1f}%" if np.isfinite(v) else "n/a" for v in gaps.gap_closed])), ""]
    lines += [f"![]({os.path.basename(p)})" for p in figures.get("all", [])] + [""]
    if grid_findings:
        lines += ["## Temperature and alpha (T x alpha grids, one seed per cell)", ""] + grid_report(grid_findings)
    return "\n".join(lines) + "\n"


def grid_report(findings: list[dict]) -> list[str]:
    """Each grid as a table and a finding, then per task: which temperature suits which fusion, and whether
    the grid can tell at all (temperature spread against seed noise)."""
    lines = []
    for f in findings:
        timing = f" ({f['cells']} students, {f['train_minutes']:.1f} minutes of training)" if f["train_minutes"] else ""
        matrix = f["matrix"].map(percent).rename(columns=lambda a: f"alpha={a:g}")
        by_t = ", ".join(f"T={t:g}: {100 * v:.2f}" for t, v in f["mean_by_temperature"].items())
        lines += [f"### {f['task']} `{f['grid']}`: fusion {f['fusion']}{timing}", "",
                  markdown_table(matrix.reset_index().assign(temperature=lambda m: [f"T={t:g}" for t in m.temperature])), "",
                  f"Best cell T={f['best_temperature']:g}, alpha={f['best_alpha']:g} ({percent(f['best_score'])}). "
                  f"Mean over alpha by temperature: {by_t}; the best temperature on average is T={f['best_mean_temperature']:g}."
                  + ("" if f["predictions_changed_by_temperature"] is None else
                     " Validation rows on which students that differ only in T disagree (most, per alpha): "
                     + ", ".join(f"alpha={a:g}: {n}" for a, n in f["predictions_changed_by_temperature"].items()) + "."),
                  "", f"![]({os.path.basename(f['figure'])})", ""]
    for task in dict.fromkeys(f["task"] for f in findings):
        grids = [f for f in findings if f["task"] == task]
        preferred = "; ".join(f"{f['fusion']} (`{f['grid']}`) T={f['best_mean_temperature']:g}" for f in grids)
        spread = max(f["temperature_spread"] for f in grids)
        noise = grids[0]["seed_std"]
        if noise is None:
            judgement = "with no multi-seed runs of this task, the grid's differences cannot be set against seed noise."
        elif spread < 2 * noise:
            judgement = (f"the largest spread between temperatures ({100 * spread:.2f} pp) is below two seed standard "
                         f"deviations ({2 * 100 * noise:.2f} pp), so at one seed per cell the grid does not separate the temperatures.")
        else:
            judgement = (f"the largest spread between temperatures ({100 * spread:.2f} pp) exceeds two seed standard "
                         f"deviations ({2 * 100 * noise:.2f} pp).")
        lines += [f"- Which temperature suits which fusion on {task}? Best temperature on average: {preferred}; {judgement}"]
    return lines + [""]


def interpretation(m: dict) -> list[str]:
    lines = []
    tests = m["tests"]
    if "distilled_vs_baseline" in tests:
        t = tests["distilled_vs_baseline"]
        lines.append(f"- Does distillation help? The best distilled student (`{t['a']}`) vs the no-distillation baseline: "
                     f"{pp(t['difference'])}, 95% CI [{pp(t['ci_low'])}, {pp(t['ci_high'])}]: "
                     f"{verdict(t, 'distillation helps', 'distillation hurts')}. {m['distilled_students_above_baseline']} "
                     f"distilled students have a higher mean than the baseline. (The best student is picked on the "
                     f"same validation rows, so this comparison is optimistic.)")
    if "multi_vs_single" in tests:
        t = tests["multi_vs_single"]
        lines.append(f"- Does multi-teacher beat the best single teacher? `{t['a']}` vs `{t['b']}`: {pp(t['difference'])}, "
                     f"95% CI [{pp(t['ci_low'])}, {pp(t['ci_high'])}]: {verdict(t, 'multi-teacher wins', 'single-teacher wins')}.")
    probs = ", ".join(f"{name} {value:.3f}" for name, value in m["teacher_mean_max_prob"].items())
    softness = ("every teacher is softer than the reference study's teachers on any task (mean max probability "
                f"{REFERENCE_TEACHER_MAX_PROB} to 0.99), so their soft labels carry more than the argmax; "
                if max(m["teacher_mean_max_prob"].values()) < REFERENCE_TEACHER_MAX_PROB else "")
    lines.append(f"- Teachers' mean max probability: {probs}; {softness}all teachers agree on {100 * m['teacher_agreement_rate']:.1f}% "
                 f"of the rows. {100 * m['share_of_errors_all_teachers_wrong']:.0f}% of student errors are on rows where "
                 f"every teacher is wrong too.")
    return lines


def markdown_table(frame: pd.DataFrame) -> str:
    def cell(value):
        if isinstance(value, (float, np.floating)):
            return "n/a" if not np.isfinite(value) else f"{value:.4f}" if abs(value) < 1 else f"{value:.2f}"
        return str(value)

    header = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "|" + "---|" * len(frame.columns)
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *body])


def to_plain(value):
    """JSON-safe copy: numpy scalars to Python, NaN to None."""
    if isinstance(value, dict):
        return {str(k): to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return None if not np.isfinite(value) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    return value
