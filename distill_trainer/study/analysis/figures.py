"""The figures of study v3's and the causal study's reports, drawn from the same result dict as the report's text
(nothing is recomputed), so an auditor can redraw them from `v3_results.json` or `causal_results.json`.

The file names are functions of the result alone, so a renderer can link a figure without having drawn it.
"""

from __future__ import annotations

import math
import os

from . import plots

COMPARISONS_FIGURE = "comparisons.png"


def scores_figure(task: str) -> str:
    """The file name of a v3 task's figure of its students' and teachers' validation scores.

    Args:
        task: The task's name.
    """
    return f"scores_{task}.png"


def nll_by_k_figure(task: str) -> str:
    """The file name of a causal task's figure of its students' NLL and storage against k.

    Args:
        task: The task's name.
    """
    return f"nll_by_k_{task}.png"


def compared(tasks: dict) -> list[tuple[str, dict]]:
    """The primary and secondary comparisons that have a difference, as (label, comparison), in task order.

    Args:
        tasks: The result's tasks by name, in report order.
    """
    rows = []
    for name, t in tasks.items():
        for key in ("primary", "secondary"):
            c = t["comparisons"].get(key) or {}
            if c.get("difference") is not None:
                rows.append((f"{name} {key}: {c['a']} - {c['b']}", c))
    return rows


def write_comparisons(tasks: dict, output_dir: str, margin: float, scale: float, unit: str, title: str) -> list[str]:
    """Every task's primary and secondary differences with their intervals against the margin, as one figure
    (`COMPARISONS_FIGURE`); none where no comparison has a difference.

    Args:
        tasks: The result's tasks by name, in report order.
        output_dir: Where the PNG file goes.
        margin: The plan's equivalence margin, in the results' unit.
        scale: What the values are multiplied by for the axis (100: a 0-1 score difference in pp).
        unit: The axis' unit after scaling.
        title: The figure's title.
    """
    rows = [(label, *(scale * c[k] for k in ("difference", "ci_low", "ci_high"))) for label, c in compared(tasks)]
    if not rows:
        return []
    path = os.path.join(output_dir, COMPARISONS_FIGURE)
    band = (-scale * margin, scale * margin)
    return [plots.intervals(rows, path, f"difference ({unit})", title, [("zero", 0.0)], band)]


def interval(mean: float, bounds: list | None) -> tuple[float, float]:
    """An interval's ends, or the mean twice where it has none (one seed: no t-interval).

    Args:
        mean: The estimate.
        bounds: [low, high], None, or NaN ends.
    """
    if not bounds or any(b is None or math.isnan(b) for b in bounds):
        return mean, mean
    return bounds[0], bounds[1]


def k_curves(t: dict) -> dict[str, list[tuple[int, float, float]]]:
    """A causal task's k grid as curves: per method (`average`, the best single by dev), (k, validation NLL mean,
    sd over seeds) of each of its runs with a k; empty where none has a record.

    Args:
        t: The task's results (`causal.analyze_task`).
    """
    single = t["chosen"]["single"]
    names = {"average": "average", "single": f"best single ({single.rsplit('-k', 1)[0]} at k = {t['largest_k']})"}
    curves = {}
    for run in t["runs"]:
        if not isinstance(run["k"], int):
            continue
        point = (run["k"], run["validation_nll_mean"], run["validation_nll_sd"] or 0.0)
        if run["run"].startswith("average-"):
            curves.setdefault(names["average"], []).append(point)
        elif run["run"].startswith("best_single-") or run["run"] == single:
            curves.setdefault(names["single"], []).append(point)
    return curves


def write_v3_figures(result: dict, output_dir: str) -> list[str]:
    """Per task, its students' validation means with their 95% t-intervals over seeds against its teachers' scores
    (and MRPC's all-positive F1); then every task's primary and secondary differences against the margin.

    Args:
        result: `analyze_v3_parts`'s dict (or its JSON read back).
        output_dir: Where the PNG files go (created if missing).
    """
    os.makedirs(output_dir, exist_ok=True)
    tasks = {name: result["tasks"][name] for name in result["task_order"]}
    written = []
    for name, t in tasks.items():
        if not t["methods"]:
            continue
        rows = [
            (
                m["method"],
                100 * m["validation_mean"],
                *(100 * x for x in interval(m["validation_mean"], m["validation_ci"])),
            )
            for m in t["methods"]
        ]
        lines = [(f"teacher {r['method']}", 100 * r["validation_score"]) for r in t["teachers"]]
        if t["all_positive"]:
            lines.append(("all-positive F1", 100 * t["all_positive"]["all_positive_f1"]))
        title = f"{name}: students' validation {t['metric']}, mean and 95% interval over seeds"
        path = os.path.join(output_dir, scores_figure(name))
        written.append(plots.intervals(rows, path, f"validation {t['metric']} (%)", title, lines))
    title = "A - B on validation, mean over seeds and paired 95% bootstrap interval"
    return written + write_comparisons(tasks, output_dir, result["margin"], 100, "pp", title)


def write_causal_figures(result: dict, output_dir: str) -> list[str]:
    """Per task, the k grid's students' validation NLL (mean +- sd over seeds) and the logit datasets' size against
    k, beside no distillation and dense teachers; then every task's primary and secondary differences.

    Args:
        result: `analyze_causal_study`'s dict (or its JSON read back).
        output_dir: Where the PNG files go (created if missing).
    """
    os.makedirs(output_dir, exist_ok=True)
    tasks = {name: result["tasks"][name] for name in result["task_order"]}
    written = []
    for name, t in tasks.items():
        curves = k_curves(t)
        if not curves:
            continue
        runs = {r["run"]: r for r in t["runs"]}
        lines = [
            (label, runs[run]["validation_nll_mean"])
            for label, run in (("no distillation", "none"), ("dense average", "average-dense"))
            if run in runs
        ]
        storage = [(s["k"], s["bytes"] / 1e6) for s in t["topk"]]
        title = f"{name}: students' validation NLL (mean +- sd over seeds)"
        path = os.path.join(output_dir, nll_by_k_figure(name))
        written.append(plots.by_k(curves, storage, path, f"validation NLL ({result['unit']})", title, lines))
    title = "A - B validation NLL (negative: A better), mean over seeds and paired 95% bootstrap interval"
    return written + write_comparisons(tasks, output_dir, result["margin"], 1, result["unit"], title)
