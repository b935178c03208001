"""REPORT.md from the computed numbers: tables, and sentences whose verdicts follow from the numbers."""

from __future__ import annotations

import os

import jinja2
import numpy as np
import pandas as pd

from .compute import learned_from

# The reference study's teachers: mean max probability 0.92 (MRPC, its least confident task) to 0.99 (SST-2).
REFERENCE_TEACHER_MAX_PROB = 0.92


def percent(value: float) -> str:
    """A 0-1 score as a percentage with two decimals, as the study's tables print them.

    Args:
        value: The score (0-1); NaN or inf gives n/a.
    """
    return f"{100 * value:.2f}" if np.isfinite(value) else "n/a"


def pp(value: float) -> str:
    """A difference of two 0-1 scores in signed percentage points (`+1.15 pp`).

    Args:
        value: The difference, as a fraction (0.0115 is +1.15 pp).
    """
    return f"{100 * value:+.2f} pp"


def verdict(test: dict, better: str, worse: str) -> str:
    """A paired test's verdict: which side its 95% interval of A - B is on, with its p-value.

    Args:
        test: The test (`stats.paired_bootstrap`: `ci_low`, `ci_high`, `p_value`).
        better: What to say when A is better (the interval above 0).
        worse: What to say when A is worse (the interval below 0).
    """
    if test["ci_low"] > 0:
        return f"{better} (95% CI excludes 0, p = {test['p_value']:.3f})"
    if test["ci_high"] < 0:
        return f"{worse} (95% CI excludes 0, p = {test['p_value']:.3f})"
    return f"no significant difference (95% CI includes 0, p = {test['p_value']:.3f})"


def training_time(kind: str, t: dict) -> str:
    """'students 4.5 minutes on NVIDIA H200 (36 of 36 runs recorded it)', split by device where several.

    Args:
        kind: What was trained (`teachers`, `students`), the sentence's first word.
        t: Its training time (an entry of `compute.analyze_task`'s `train_minutes`: minutes, runs_timed, runs,
            by_device in minutes).
    """
    counted = f"{t['runs_timed']} of {t['runs']} runs recorded it"
    if len(t["by_device"]) == 1:
        return f"{kind} {t['minutes']:.1f} minutes on {next(iter(t['by_device']))} ({counted})"
    parts = [f"{m:.1f} on {d}" if m >= 0.05 else f"under 0.1 on {d}" for d, m in t["by_device"].items()]
    return f"{kind} {t['minutes']:.1f} minutes ({', '.join(parts)}; {counted})"


def render_report(gaps, advantage, sections, grid_findings, figures, comparison=None) -> str:
    """REPORT.md from `templates/report.md.j2`: the tables are formatted here, the sentences are the template's.

    Args:
        gaps: `stats.gap_table`'s table (empty: no gap table).
        advantage: `stats.multi_teacher_advantage`'s table (empty: no advantage table).
        sections: Each reported task's `compute.analyze_task` result, in report order.
        grid_findings: `compute.grid_analysis`'s findings.
        figures: Figure paths by task name, and under `all` those across tasks; only the file names are written.
        comparison: `reference.reference_comparison`'s table; None leaves the reference comparison out.
    """
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("distill_trainer.study.analysis", "templates"),
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters.update(percent=percent, pp=pp, g=lambda value: f"{value:g}")
    env.globals.update(verdict=verdict, reference_max_prob=REFERENCE_TEACHER_MAX_PROB)
    return env.get_template("report.md.j2").render(
        sections=[section_context(section, figures.get(section["task"], [])) for section in sections],
        reference_table=None if comparison is None else markdown_table(comparison),
        advantage_table=None
        if advantage.empty
        else markdown_table(
            advantage.assign(
                best_multi_mean=lambda f: [percent(v) for v in f.best_multi_mean],
                best_single_mean=lambda f: [percent(v) for v in f.best_single_mean],
                advantage=lambda f: [pp(v) for v in f.advantage],
            )
        ),
        gaps_table=None
        if gaps.empty
        else markdown_table(
            gaps[["task", "method", "type"]].assign(
                gap_closed=[f"{100 * v:.1f}%" if np.isfinite(v) else "n/a" for v in gaps.gap_closed]
            )
        ),
        figures_all=[os.path.basename(path) for path in figures.get("all", [])],
        grids=[grid_context(finding) for finding in grid_findings],
    )


def section_context(section: dict, figures: list[str]) -> dict:
    """One task's tables, formatted; its numbers go to the template as they are.

    Args:
        section: The task's `compute.analyze_task` result.
        figures: The task's figure paths (only their file names are written).
    """
    m = section["metrics"]
    defective = m.get("defective_teachers") or []
    marked = [learned_from(row.method, row.type, defective) for row in section["aggregated"].itertuples()]
    table = section["aggregated"].assign(
        method=[
            f"{method} †" if mark else method
            for method, mark in zip(section["aggregated"].method, marked, strict=False)
        ]
    )
    table = table.assign(
        **{
            "mean": lambda f: [percent(v) for v in f["mean"]],
            "std": lambda f: [percent(v) for v in f["std"]],
            "95% CI": lambda f: [
                f"[{100 * lo:.2f}, {100 * hi:.2f}]" if np.isfinite(lo) else "n/a"
                for lo, hi in zip(f.ci_low, f.ci_high, strict=False)
            ],
        }
    )
    return {
        "task": section["task"],
        "metrics": m,
        "defective": defective,
        "defective_methods": [
            method for method, mark in zip(section["aggregated"].method, marked, strict=False) if mark
        ],
        "timed": [training_time(kind, t) for kind, t in m["train_minutes"].items() if t["runs_timed"]],
        "results_table": markdown_table(table[["method", "type", "n", "mean", "std", "95% CI"]]),
        "teachers_table": teachers_table(m["teachers"]) if m["teachers"] else None,
        **(regression_tables(section) if m["regression"] else classification_tables(section)),
        "figures": [os.path.basename(path) for path in figures],
    }


def teachers_table(teachers: list[dict]) -> str:
    """How far each teacher was fine-tuned and how its training ended. Early stopping ends a run only after an
    epoch without improvement, so a teacher whose best epoch is its last one was still improving when the epoch
    cap ended it: the table says so rather than leaving the reader to compare two columns.

    Args:
        teachers: The teachers' records (`compute.analyze_task`'s `teachers`: the `TEACHER_FACTS` of each); a
            missing number is NaN or None and is written n/a.
    """

    def known(value) -> bool:
        return value is not None and np.isfinite(value)

    def epochs(value) -> str:
        return f"{round(value, 1):g}" if known(value) else "n/a"

    rows = []
    for t in teachers:
        trained, best = t["epochs_trained"], t["best_epoch"]
        if not known(trained):
            ended = "fitted once (no epochs)"
        elif known(best) and round(best, 1) >= round(trained, 1):
            ended = "epoch cap, still improving"
        else:
            ended = f"early stopping: no gain for {epochs(trained - best)} epoch(s)" if known(best) else "n/a"
        rate = f"{t['learning_rate']:g}" if known(t["learning_rate"]) else "n/a"
        if isinstance(t["collapsed_learning_rates"], list) and t["collapsed_learning_rates"]:
            rate += f" (collapsed at {', '.join(f'{r:g}' for r in t['collapsed_learning_rates'])})"
        rows.append(
            {
                "teacher": t["method"].removeprefix("teacher: "),
                "score": percent(t["score"]),
                "epochs trained": epochs(trained),
                "best epoch": epochs(best),
                "ended by": ended,
                "learning rate": rate,
                "trained on": t["device"] if isinstance(t["device"], str) else "unrecorded",
                "minutes": f"{t['train_runtime'] / 60:.1f}" if known(t["train_runtime"]) else "n/a",
            }
        )
    return markdown_table(pd.DataFrame(rows))


def classification_tables(section: dict) -> dict:
    """A classification task's per-example tables, formatted: teacher confidence, accuracy by agreement region
    (with each region's size) and errors by cause.

    Args:
        section: The task's `compute.analyze_task` result (`confidence`, `regions`, `empty_regions`, `failures`).
    """
    confidence = section["confidence"].assign(
        mean_max_prob=lambda f: [f"{v:.3f}" for v in f.mean_max_prob],
        mean_entropy=lambda f: [f"{v:.3f}" for v in f.mean_entropy],
        pct_high_confidence=lambda f: [f"{v:.1f}%" for v in f.pct_high_confidence],
    )
    regions = section["regions"]
    shown = pd.concat([regions.drop(index="examples").map(percent), regions.loc[["examples"]].astype(int).astype(str)])
    return {
        "confidence_table": markdown_table(confidence),
        "regions_table": markdown_table(shown.reset_index().rename(columns={"index": "method"})),
        "empty_regions": section["empty_regions"],
        "failures_table": markdown_table(
            section["failures"].map(lambda v: f"{v:.1f}").reset_index().rename(columns={"index": "method"})
        ),
    }


def regression_tables(section: dict) -> dict:
    """A regression task's per-example table, formatted: mean absolute error by teacher-spread bucket.

    Args:
        section: The task's `compute.analyze_task` result (`spread`).
    """
    spread = section["spread"]
    shown = pd.concat(
        [spread.drop(index="examples").map(lambda v: f"{v:.3f}"), spread.loc[["examples"]].astype(int).astype(str)]
    )
    return {"spread_table": markdown_table(shown.reset_index().rename(columns={"index": "method"}))}


def grid_context(finding: dict) -> dict:
    """A T x alpha grid's finding with its table formatted.

    Args:
        finding: One of `compute.grid_analysis`'s findings (its `matrix` of 0-1 scores and `figure` path).
    """
    matrix = finding["matrix"].map(percent).rename(columns=lambda a: f"alpha={a:g}")
    table = markdown_table(matrix.reset_index().assign(temperature=lambda m: [f"T={t:g}" for t in m.temperature]))
    return {**finding, "table": table, "figure_name": os.path.basename(finding["figure"])}


def markdown_table(frame: pd.DataFrame) -> str:
    """A Markdown table of a frame's columns and rows (not its index); a float is written with four decimals below
    1 and two from 1, NaN as n/a.

    Args:
        frame: The table; cells already formatted as strings are written as they are.
    """

    def cell(value):
        if isinstance(value, (float, np.floating)):
            return "n/a" if not np.isfinite(value) else f"{value:.4f}" if abs(value) < 1 else f"{value:.2f}"
        return str(value)

    header = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "|" + "---|" * len(frame.columns)
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *body])


def to_plain(value):
    """JSON-safe copy: numpy scalars to Python, NaN to None.

    Args:
        value: A scalar, or nested dicts, lists and tuples of them; dict keys become strings, tuples lists, and
            any other value is kept as it is.
    """
    if isinstance(value, dict):
        return {str(k): to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return None if not np.isfinite(value) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    return value
