"""Study v3's pre-registered analysis (results/v3/PREREGISTRATION.md, issue 28) over a v3 study folder.

Everything chosen is chosen on dev scores only (the best single teacher, the best multi-teacher method, the best
student and teacher of the gap closed); validation scores are read for the reported numbers alone. Reads run
records and saved validation logits (`collect`): no model is run. `analyze_v3_study` returns a JSON-able dict;
`v3_render` writes REPORT.md from it.
"""

from __future__ import annotations

import glob
import json
import os
import zlib
from collections.abc import Collection

import datasets
import numpy as np
import pandas as pd

from ...logits import read_metadata
from ..runs import StudentResult, TeacherRecord, short_teacher_name
from ..tasks import get_task
from .collect import check_students, check_teacher_scores, processor_counts, student_predictions
from .reference import REFERENCE_TASKS
from .render import to_plain
from .stats import aggregate_seeds, gap_closed
from .v3_stats import (
    MARGIN,
    adjust_secondary,
    all_positive_check,
    best_by_dev,
    identical_predictions,
    paired_seed_bootstrap,
    tied_with,
)

PRIMARY_METHOD = "average"
PRIMARY_ON_SECONDARY_SEEDS = "primary on the secondary's seeds"  # a comparison's key and its row's label
BASELINE_METHOD = "none"
ALL_POSITIVE_TASKS = ("mrpc",)  # the plan's check: does any student beat predicting "equivalent" everywhere?


def task_folders(study_dir: str) -> list[str]:
    """The study's tasks with any run record, the reference's four first in its order, then the rest by name.

    Args:
        study_dir: The v3 study folder (`<task>/teacher-*`, `<task>/student-*`).
    """
    found = {
        os.path.basename(os.path.dirname(os.path.dirname(path)))
        for pattern in (f"teacher-*/{TeacherRecord.FILE}", f"student-*/{StudentResult.FILE}")
        for path in glob.glob(os.path.join(study_dir, "*", pattern))
    }
    return [task for task in REFERENCE_TASKS if task in found] + sorted(found - set(REFERENCE_TASKS))


def load_task(study_dir: str, task: str) -> dict:
    """One task's records: teachers, students (checked by `collect.check_students`), validation labels, the
    teachers' column names in the logit dataset and each student's validation predictions by method and seed (read
    once here, for every comparison and check); refuses a record without the dev score v3 chooses by.

    Args:
        study_dir: The v3 study folder (`--study_dir` of compare.py).
        task: The task's folder name.
    """
    root = os.path.join(study_dir, task)
    teachers = {
        os.path.dirname(p): TeacherRecord.load(p)
        for p in sorted(glob.glob(os.path.join(root, "teacher-*", TeacherRecord.FILE)))
    }
    students = {
        os.path.dirname(p): StudentResult.load(p)
        for p in sorted(glob.glob(os.path.join(root, "student-*", StudentResult.FILE)))
    }
    check_students(study_dir, students)
    for kind, records in (("teachers", teachers), ("students", students)):  # dev scores compared within each
        splits = {json.dumps(r.dev_split, sort_keys=True): folder for folder, r in records.items()}
        if len(splits) > 1:
            first, second = list(splits.values())[:2]
            raise ValueError(
                f"{task}: the {kind} were scored on different dev splits (e.g. {first} and {second}): their dev "
                "scores are not comparable, so nothing can be chosen by them."
            )
    undecided = [folder for folder, r in {**teachers, **students}.items() if r.dev_score is None]
    if undecided:
        raise ValueError(
            f"{task}: {len(undecided)} record(s) have no dev_score (e.g. {undecided[0]}); study v3 chooses on dev "
            "scores only and never falls back to validation scores. Were they run with a dev split?"
        )
    logit_data = datasets.load_from_disk(os.path.join(root, "logits"))
    check_teacher_scores(teachers, logit_data, task)
    validation = logit_data["validation"]
    metadata = read_metadata(validation)
    columns = [short_teacher_name(t.name, task) for t in metadata.teachers] if metadata else []
    labels = np.asarray(validation["label"][:])
    predictions = {}
    for folder, s in sorted(students.items()):
        predictions.setdefault(s.method[0], {})[s.seed] = student_predictions(folder, task)[: len(labels)]
    return {
        "teachers": list(teachers.values()),
        "students": students,
        "labels": labels,
        "columns": columns,
        "predictions": predictions,
    }


def method_table(task: str, students: dict[str, StudentResult]) -> list[dict]:
    """Every student method: its seeds, validation mean, sd and t-interval over seeds (`aggregate_seeds`), and
    its mean dev score (what chooses), sorted by type then name.

    Args:
        task: The task's name (the rows' `task`).
        students: Each student run folder's record (`load_task`'s `students`); none yet (a task whose teachers and
            logits are recorded, its students still to run) gives no rows.
    """
    if not students:
        return []
    rows = pd.DataFrame(
        [
            {"task": task, "method": s.method[0], "type": s.method[1], "seed": s.seed, "score": s.score}
            for s in students.values()
        ]
    )
    dev = {}
    for s in students.values():
        dev.setdefault(s.method[0], []).append(s.dev_score)
    table = []
    for row in aggregate_seeds(rows).itertuples():
        seeds = sorted(int(s.seed) for s in students.values() if s.method[0] == row.method)
        table.append(
            {
                "method": row.method,
                "type": row.type,
                "seeds": seeds,
                "validation_mean": row.mean,
                "validation_sd": row.std,
                "validation_ci": [row.ci_low, row.ci_high],
                "dev_mean": float(np.mean(dev[row.method])),
            }
        )
    order = {"baseline": 0, "single": 1, "multi": 2}
    return sorted(table, key=lambda r: (order[r["type"]], r["method"]))


def compare(
    task: str, a: str, b: str, data: dict, resamples: int, seed: int, seeds: Collection[int] | None = None
) -> dict:
    """A vs B on the validation rows, seeds paired by seed number (only the seeds both have; how many is said).

    Args:
        task: The task (its metric, and part of the bootstrap seed).
        a: Method A's name (the study's method names); None where none could be chosen yet (no multi-teacher
            student recorded), which the verdict says.
        b: Method B's name.
        data: The task's records (`load_task`).
        resamples: Bootstrap resamples.
        seed: The bootstrap's base seed; each comparison's generator is seeded with it and a checksum of its
            names, so one comparison's numbers do not depend on which others ran.
        seeds: Only these seeds (of those both have); None: every seed both have. The primary is repeated on the
            secondary's seeds this way, so a reader can tell a method's lead from its seeds'.
    """
    runs = data["predictions"]
    paired = set(runs.get(a, {})) & set(runs.get(b, {}))
    paired = sorted(paired if seeds is None else paired & set(seeds))
    result = {"a": a, "b": b, "paired_seeds": paired, "unpaired_seeds": {}}
    result["unpaired_seeds"] = {m: sorted(set(runs.get(m, {})) - set(paired)) for m in (a, b) if m}
    if not paired:
        missing = [f"`{m}`" if m else "a multi-teacher method" for m in (a, b) if m not in runs]
        reason = f"no student yet of {' or '.join(missing)}" if missing else "no seed both methods have"
        return {**result, "difference": None, "verdict": f"not run: {reason}"}
    labels = data["labels"]
    predictions = {m: np.stack([runs[m][s] for s in paired]) for m in (a, b)}
    bootstrap_seed = [seed, zlib.crc32(f"{task}|{a}|{b}".encode())]
    metric = get_task(task).metric
    test = paired_seed_bootstrap(predictions[a], predictions[b], labels, metric, resamples, bootstrap_seed)
    return {**result, **test}


def analyze_task(study_dir: str, task: str, resamples: int, seed: int, secondary: bool = True) -> dict:
    """One task: teachers and methods (dev and validation), the dev choices, the primary and secondary
    comparisons, the per-task gap closed and (MRPC) the all-positive check.

    Args:
        study_dir: The study folder.
        task: The task's folder name.
        resamples: Bootstrap resamples per comparison.
        seed: The bootstrap's base seed.
        secondary: Whether to run the secondary comparison (the low-resource regime's plan defines none).
    """
    data = load_task(study_dir, task)
    teachers = sorted(
        (
            {
                "method": short_teacher_name(t.name, task),
                "dev_score": t.dev_score,
                "validation_score": t.validation_score,
            }
            for t in data["teachers"]
        ),
        key=lambda r: r["method"],
    )
    methods = method_table(task, data["students"])
    by_name = {m["method"]: m for m in methods}
    candidates = {  # each choice: (its rows, the dev score's key)
        "best_teacher": (teachers, "dev_score"),
        "best_multi": ([m for m in methods if m["type"] == "multi"], "dev_mean"),
        "best_student": ([m for m in methods if m["type"] in ("single", "multi")], "dev_mean"),
    }
    best = {role: best_by_dev(rows, key) for role, (rows, key) in candidates.items()}
    ties = {role: tied_with(rows, best[role], key) for role, (rows, key) in candidates.items()}
    best_teacher, best_multi, best_student = best["best_teacher"], best["best_multi"], best["best_student"]
    single = f"single: {best_teacher['method']}" if best_teacher else None
    chosen = {
        "best_teacher": best_teacher and best_teacher["method"],
        "teacher_index": data["columns"].index(best_teacher["method"])
        if best_teacher and best_teacher["method"] in data["columns"]
        else None,
        "single": single if single in by_name else None,
        "best_multi": best_multi and best_multi["method"],
        "best_student": best_student and best_student["method"],
        "ties": {role: names for role, names in ties.items() if names},  # broken by sort order (`best_by_dev`)
    }
    comparisons = {}  # a method not (yet) run is said so, by name, in the comparison's verdict
    if best_teacher:
        comparisons["primary"] = compare(task, PRIMARY_METHOD, single, data, resamples, seed)
        multi = best_multi["method"] if best_multi else None
        if secondary:
            comparisons["secondary"] = compare(task, multi, single, data, resamples, seed)
            seeds = comparisons["secondary"]["paired_seeds"]
            if seeds and seeds != comparisons["primary"]["paired_seeds"]:  # outside the plan's tests: descriptive
                comparisons[PRIMARY_ON_SECONDARY_SEEDS] = compare(
                    task, PRIMARY_METHOD, single, data, resamples, seed, seeds
                )
    baseline = by_name.get(BASELINE_METHOD)
    gap = None
    if baseline and best_teacher and best_student:
        gap = {
            "baseline": baseline["validation_mean"],
            "best_teacher": best_teacher["validation_score"],
            "best_student": best_student["validation_mean"],
            "gap_closed": gap_closed(
                best_student["validation_mean"], baseline["validation_mean"], best_teacher["validation_score"]
            ),
        }
    records = [*data["teachers"], *data["students"].values()]
    return {
        "metric": get_task(task).metric,
        "validation_rows": int(len(data["labels"])),
        "devices": sorted({r.device or "unrecorded" for r in records}),
        "processors": processor_counts(records),
        "teachers": teachers,
        "methods": methods,
        "chosen": chosen,
        "comparisons": comparisons,
        "gap": gap,
        "all_positive": all_positive_check(data["labels"], methods, data["predictions"])
        if task in ALL_POSITIVE_TASKS
        else None,
        "identical_predictions": identical_predictions(data["predictions"]),
    }


def avg_column_gap(tasks: dict, names: list[str]) -> dict | None:
    """The reference's own definition on the averaged columns: every row (a teacher, a student method) that all
    `names` tasks have is averaged over them; (best distilled row - baseline row) / (best teacher row - baseline
    row), the best rows chosen by their averaged dev scores (the reference chose by AVG on validation; v3 never
    chooses on validation) and the gap measured on the averaged validation scores.

    Args:
        tasks: The per-task results (`analyze_task`).
        names: The tasks averaged over.
    """
    if not names:
        return None
    rows = {}
    for name in names:
        for t in tasks[name]["teachers"]:
            rows.setdefault(("teacher", t["method"]), []).append((t["dev_score"], t["validation_score"]))
        for m in tasks[name]["methods"]:
            rows.setdefault((m["type"], m["method"]), []).append((m["dev_mean"], m["validation_mean"]))
    averaged = [
        {"type": kind, "method": method, "dev_mean": float(np.mean([d for d, _ in v])), "validation": np.mean(v, 0)[1]}
        for (kind, method), v in sorted(rows.items())
        if len(v) == len(names)
    ]
    teacher = best_by_dev([r for r in averaged if r["type"] == "teacher"])
    student = best_by_dev([r for r in averaged if r["type"] in ("single", "multi")])
    baseline = next((r for r in averaged if r["method"] == BASELINE_METHOD), None)
    if not (teacher and student and baseline):
        return None
    return {
        "tasks": names,
        "best_teacher": teacher["method"],
        "best_teacher_avg": float(teacher["validation"]),
        "best_student": student["method"],
        "best_student_avg": float(student["validation"]),
        "baseline_avg": float(baseline["validation"]),
        "gap_closed": gap_closed(student["validation"], baseline["validation"], teacher["validation"]),
    }


def analyze_v3_study(study_dir: str, resamples: int = 10_000, seed: int = 0) -> dict:
    """Study v3's pre-registered comparisons for every task under `study_dir`, as a JSON-able dict.

    Args:
        study_dir: The v3 study folder (`<task>/teacher-*`, `<task>/logits`, `<task>/student-*`).
        resamples: Bootstrap resamples per comparison.
        seed: The bootstrap's base seed (fixed: the same records give the same dict, and the same REPORT.md).
    """
    names = task_folders(study_dir)
    if not names:
        raise FileNotFoundError(f"No teacher_info.json or eval_results.json under {study_dir}/<task>/.")
    tasks = {name: analyze_task(study_dir, name, resamples, seed) for name in names}
    family = adjust_secondary(tasks)
    excluded = [n for n, t in tasks.items() if t["all_positive"] and t["all_positive"]["excluded_from_averages"]]
    included = [n for n in names if n not in excluded and tasks[n]["gap"]]
    gaps = [tasks[n]["gap"]["gap_closed"] for n in included]
    result = {
        "plan": "results/v3/PREREGISTRATION.md",
        "resamples": resamples,
        "bootstrap_seed": seed,
        "margin": MARGIN,
        "tasks": tasks,
        "task_order": names,
        "holm_family": family,
        "excluded_from_averages": excluded,
        "mean_gap_closed": {
            "tasks": included,
            "value": float(np.mean(gaps)) if gaps and np.all(np.isfinite(gaps)) else None,
        },
        "avg_column_gap": avg_column_gap(tasks, included),
        "avg_column_gap_all_tasks": avg_column_gap(tasks, [n for n in names if tasks[n]["gap"]]),
    }
    return to_plain(result)
