"""The reference study's main table (../shared/reference: validation set, one seed), set beside ours by role.

The teachers differ (the reference fine-tuned BERT-large, RoBERTa-large and DeBERTa-base; this study uses
MPNet, MiniLM and a TF-IDF model), so rows are matched by role: the best teacher, the baseline, the best
single-teacher student, each multi-teacher fusion both studies ran, the best multi-teacher student, and the
two derived numbers the reference headlines (multi - single advantage; gap closed).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

REFERENCE_TASKS = ("sst2", "mnli", "qqp", "mrpc")
REFERENCE_MAIN_TABLE = {  # percent; the reference's "best-per-sample" is our min_entropy
    "best teacher": {"sst2": 95.76, "mnli": 90.10, "qqp": 88.24, "mrpc": 92.71},
    "baseline (no distillation)": {"sst2": 90.60, "mnli": 81.80, "qqp": 87.07, "mrpc": 89.17},
    "best single-teacher student": {"sst2": 91.40, "mnli": 82.70, "qqp": 87.87, "mrpc": 91.12},
    "average": {"sst2": 92.55, "mnli": 82.70, "qqp": 87.93, "mrpc": 89.73},
    "weighted": {"sst2": 91.06, "mnli": 82.61, "qqp": 87.81, "mrpc": 90.45},
    "min_entropy": {"sst2": 90.94, "mnli": 82.40, "qqp": 87.72, "mrpc": 90.14},
    "gating": {"sst2": 91.63, "mnli": 82.72, "qqp": 87.94, "mrpc": 89.80},
    "best multi-teacher student": {"sst2": 92.55, "mnli": 82.72, "qqp": 87.94, "mrpc": 90.45},
}
# The reference states a multi - single advantage of +1.15 (SST-2), +0.02 (MNLI), +0.07 (QQP), -0.67 (MRPC) pp,
# which its table gives back, and that the best distilled student closes "~28%" of the gap, which its table
# does not (the per-task gaps closed by its best students average 45%): both are shown.
REFERENCE_GAP_CLOSED_STATED = 0.28
# The reference's own definition of gap closed, on its AVG column (each row's mean over the four tasks; its full
# table, docs/study-v2.md): (best distilled row - baseline) / (best teacher row - baseline), best by AVG, in
# percent. Reference: single DeBERTa-base and RoBERTa-large, 28.3%; study v2 (means over seeds, the same four
# tasks): best row `average+calibrated`, 20.2%. Study v3's is computed the same way (`analysis.v3`).
REFERENCE_AVG_GAP = {"best_student_avg": 88.24, "baseline_avg": 87.16, "best_teacher_avg": 90.98}
V2_AVG_GAP = {"best_student_avg": 77.00, "baseline_avg": 74.56, "best_teacher_avg": 86.65}


def our_roles(aggregated: pd.DataFrame, task: str) -> dict[str, tuple[float, float, int]]:
    """(mean, sd, seeds) in percent for each role of one task's aggregated results (absent roles left out).

    Args:
        aggregated: The results table aggregated over seeds (`stats.aggregate_seeds`), scores 0-1.
        task: The task whose rows are used.
    """
    rows = aggregated[aggregated.task == task]

    def best(kind: str):
        group = rows[rows.type == kind]
        return None if group.empty else group.loc[group["mean"].idxmax()]

    picked = {
        "best teacher": best("teacher"),
        "baseline (no distillation)": best("baseline"),
        "best single-teacher student": best("single"),
        **{
            method: rows[rows.method == method].iloc[0]
            for method in ("average", "weighted", "min_entropy", "gating")
            if (rows.method == method).any()
        },
        "best multi-teacher student": best("multi"),
    }
    return {
        role: (100 * row["mean"], 100 * row["std"], int(row["n"])) for role, row in picked.items() if row is not None
    }


def reference_comparison(aggregated: pd.DataFrame) -> pd.DataFrame | None:
    """One row per role, and for each reference task this study ran: the reference's number, ours (mean ± sd
    over seeds) and the difference; then the average over those tasks of both, and the derived rows.

    Args:
        aggregated: The results table aggregated over seeds (`stats.aggregate_seeds`); None is returned when it
            has none of the reference's tasks.
    """
    tasks = [task for task in REFERENCE_TASKS if (aggregated.task == task).any()]
    if not tasks:
        return None
    ours = {task: our_roles(aggregated, task) for task in tasks}
    table = []
    for role, reference in REFERENCE_MAIN_TABLE.items():
        row = {"role": role}
        for task in tasks:
            mean, sd, n = ours[task].get(role, (np.nan, np.nan, 0))
            row[f"{task} reference"] = f"{reference[task]:.2f}"
            row[f"{task} ours"] = "n/a" if not np.isfinite(mean) else f"{mean:.2f}" + (f" ± {sd:.2f}" if n > 1 else "")
        means = [ours[task].get(role, (np.nan,))[0] for task in tasks]
        row["avg reference"] = f"{np.mean([reference[task] for task in tasks]):.2f}"
        row["avg ours"] = f"{np.mean(means):.2f}" if np.all(np.isfinite(means)) else "n/a"
        table.append(row)
    reference = {
        task: {role: (values[task], np.nan, 1) for role, values in REFERENCE_MAIN_TABLE.items()} for task in tasks
    }
    table.append(derived_row("multi - single (pp)", tasks, ours, reference, advantage, lambda v: f"{v:+.2f}"))
    gap = derived_row("gap closed by the best distilled student", tasks, ours, reference, gap_closed, percent)
    gap["avg reference"] += f" (stated: ~{percent(REFERENCE_GAP_CLOSED_STATED)})"
    table.append(gap)
    return pd.DataFrame(table)


def percent(value: float) -> str:
    """A fraction as a whole percentage (`0.283` -> `28%`).

    Args:
        value: The fraction (0-1).
    """
    return f"{100 * value:.0f}%"


def advantage(roles: dict) -> float:
    """Best multi-teacher minus best single-teacher student, in percentage points; NaN where either is missing.

    Args:
        roles: One task's roles (`our_roles`, or the reference's in the same form).
    """
    multi, single = roles.get("best multi-teacher student"), roles.get("best single-teacher student")
    return multi[0] - single[0] if multi and single else np.nan


def gap_closed(roles: dict) -> float:
    """The share (0-1) of the teacher-baseline gap the best distilled student closes, the best of the single and
    multi-teacher students; NaN where a role is missing or the best teacher is not above the baseline.

    Args:
        roles: One task's roles (`our_roles`, or the reference's in the same form).
    """
    teacher, baseline = roles.get("best teacher"), roles.get("baseline (no distillation)")
    students = [roles[r][0] for r in ("best single-teacher student", "best multi-teacher student") if r in roles]
    if not (teacher and baseline and students) or teacher[0] <= baseline[0]:
        return np.nan
    return (max(students) - baseline[0]) / (teacher[0] - baseline[0])


def derived_row(name: str, tasks, ours: dict, reference: dict, compute, fmt) -> dict:
    """A row computed from the roles, for the reference's table and ours alike, per task and on average.

    The average is the mean of the per-task numbers (n/a if any is NaN).

    Args:
        name: The row's `role` cell.
        tasks: The reference tasks this study ran, in column order.
        ours: Per task, our roles (`our_roles`).
        reference: Per task, the reference's roles in the same form.
        compute: Roles -> the derived number (`advantage`, `gap_closed`); NaN is written n/a.
        fmt: The derived number -> its cell.
    """
    row = {"role": name}
    both = {"reference": [compute(reference[t]) for t in tasks], "ours": [compute(ours[t]) for t in tasks]}
    for study, values in both.items():
        for task, value in zip(tasks, values, strict=False):
            row[f"{task} {study}"] = fmt(value) if np.isfinite(value) else "n/a"
        row[f"avg {study}"] = fmt(np.mean(values)) if np.all(np.isfinite(values)) else "n/a"
    return {key: row[key] for key in ["role", *[f"{t} {s}" for t in tasks for s in both], "avg reference", "avg ours"]}
