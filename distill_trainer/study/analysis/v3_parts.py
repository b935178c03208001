"""Study v3's two other parts, each a study folder of its own (results/v3/PREREGISTRATION.md, the last "Changes"
entry): the low-resource regime (SST-2, teachers fine-tuned on 1,000 labelled rows) and the 6-layer student (MNLI
and SST-2, on the main study's teachers). Both are analysed with `v3`'s functions, every choice on their own dev
scores, and never pooled with the main study: the low-resource regime's tests are a family of their own, and so are
the 6-layer student's secondary tests. A folder not given or not there is "not run yet"; a partial one is reported
with what it lacks.
"""

from __future__ import annotations

import glob
import os
import zlib

import numpy as np

from ..runs import StudentResult
from ..tasks import get_task
from .render import to_plain
from .v3 import (
    BASELINE_METHOD,
    PRIMARY_METHOD,
    analyze_task,
    analyze_v3_study,
    compare,
    load_task,
    task_folders,
)
from .v3_stats import adjust_secondary, apply_holm, paired_seed_bootstrap

NOT_RUN = "not run yet"
PLANNED_SEEDS = (42, 43, 44, 45, 46)  # 5 seeds for every method of both parts, but for the cut ones below
CUT_SEEDS = (42, 43, 44)  # the plan's third cut (Changes, 2026-12-05): `fitted` and `confidence` of the 6-layer part
PLANNED_TEACHERS = 3  # all-mpnet-base-v2, all-MiniLM-L6-v2, the TF-IDF teacher: a `single` student of each
LOW_RESOURCE_TASK = "sst2"
LOW_RESOURCE_MULTI = ("average", "confidence")
SIX_LAYER_TASKS = ("mnli",)  # SST-2's 6-layer student was the plan's first cut (Changes, 2026-12-05)
SIX_LAYER_MULTI = ("average", "confidence", "fitted", "weighted")
SIX_LAYER_CUT_SEEDS = ("confidence", "fitted")
MAIN_TASKS = ("mrpc", "mnli", "qqp", "sst2")  # the main study's tasks, in the order `make study-v3` runs them
MAIN_MULTI = ("average", "weighted", "fitted", "confidence")  # every task; the others on MRPC and MNLI only (cut 2)
OTHER_MULTI = ("min_entropy", "gating", "average+calibrated", "average_to_confidence")
MAIN_THREE_SEEDS = ("fitted", "confidence", *OTHER_MULTI)  # 3 seeds (42-44): the plan's cut 3, and its own plan
LAYER_DIFFERENCE_KEYS = ("difference", "per_seed", "ci_low", "ci_high", "resamples")  # the interval, no test


def recorded_teachers(folder: str, task: str) -> int:
    """How many of a task's teachers have a record in a study folder (a folder linked from another study counts).

    Args:
        folder: A study folder (`<task>/teacher-*`).
        task: The task's folder name.
    """
    return len(glob.glob(os.path.join(folder, task, "teacher-*", "teacher_info.json")))


def not_ready(folder: str, task: str) -> str | None:
    """Why a task of a part's folder cannot be analysed yet (no teacher record, no logit dataset, no student
    record), or None when it can.

    Args:
        folder: The part's study folder.
        task: The task's folder name.
    """
    root = os.path.join(folder, task)
    if not recorded_teachers(folder, task):
        return NOT_RUN
    if not os.path.isdir(os.path.join(root, "logits")):
        return "teachers only: no logit dataset yet, no student"
    if not glob.glob(os.path.join(root, "student-*", StudentResult.FILE)):
        return "teachers only: no student run yet"
    return None


def planned_missing(
    task: dict | None, multi: tuple[str, ...], cut: tuple[str, ...] = (), teachers_recorded: int = 0
) -> list[str]:
    """What the plan asks of a task that its folder lacks: teachers, and each method's seeds (`none`, a `single`
    student per teacher, the `multi` methods; seeds 42-46, or 42-44 for the methods whose seeds were cut).

    Args:
        task: The task's results (`analyze_task`); None when nothing of it could be analysed.
        multi: The plan's multi-teacher methods for this part.
        cut: The methods the plan's third cut left with 3 seeds in this part.
        teachers_recorded: The teachers recorded where `task` is None (the task's teachers ran, no student yet).
    """
    recorded = teachers_recorded if task is None else len(task["teachers"])
    if not recorded:
        return [f"everything: {PLANNED_TEACHERS} teachers and every student (seeds 42-46)"]
    missing = [f"{PLANNED_TEACHERS - recorded} of {PLANNED_TEACHERS} teachers"] if recorded < PLANNED_TEACHERS else []
    if task is None:
        return [*missing, "every student (seeds 42-46)"]
    teachers = [t["method"] for t in task["teachers"]]
    have = {m["method"]: m["seeds"] for m in task["methods"]}
    for method in (BASELINE_METHOD, *(f"single: {t}" for t in teachers), *multi):
        lacking = sorted(set(CUT_SEEDS if method in cut else PLANNED_SEEDS) - set(have.get(method, [])))
        if lacking:
            missing.append(f"`{method}` seed{'s' if len(lacking) > 1 else ''} {', '.join(map(str, lacking))}")
    return missing


def analyze_low_resource(folder: str | None, resamples: int, seed: int) -> dict:
    """The low-resource regime: the primary comparison as in the main study (`average` vs the single student of
    the teacher with the best dev score, dev = 100 of the 1,000 labelled rows), each distilled method vs `none`
    (the baseline given the same optimizer steps) with Holm over those tests, and its gap closed.

    Args:
        folder: Its study folder (`sst2/teacher-*`, `sst2/logits`, `sst2/student-*`); None: not run yet.
        resamples: Bootstrap resamples per comparison.
        seed: The bootstrap's base seed.
    """
    task = LOW_RESOURCE_TASK
    reason = not_ready(folder, task) if folder else NOT_RUN
    if reason == NOT_RUN:
        return {"status": NOT_RUN}
    if reason:
        missing = planned_missing(None, LOW_RESOURCE_MULTI, teachers_recorded=recorded_teachers(folder, task))
        return {"status": reason, "task": task, "missing": missing}
    result = analyze_task(folder, task, resamples, seed, secondary=False)
    data = load_task(folder, task)
    distilled = {m["method"] for m in result["methods"] if m["type"] != "baseline"}
    distilled |= {f"single: {t['method']}" for t in result["teachers"]} | set(LOW_RESOURCE_MULTI)
    singles = sorted(m for m in distilled if m.startswith("single: "))
    order = [*singles, *sorted(distilled - set(singles))]  # the singles, then the multi-teacher methods
    tests = [compare(task, m, BASELINE_METHOD, data, resamples, seed) for m in order]
    family = apply_holm({c["a"]: c for c in tests})
    return {
        "status": "analyzed",
        "task": task,
        "results": result,
        "vs_none": tests,
        "holm_family": family,
        "missing": planned_missing(result, LOW_RESOURCE_MULTI),
    }


def layer_difference(task: str, method: str, six: dict, three: dict, resamples: int, seed: int) -> dict:
    """6-layer minus 3-layer student of one method: the mean over seeds of validation score differences, with the
    paired bootstrap's 95% interval (rows drawn once for both, seeds paired by seed number); descriptive, no test.

    Args:
        task: The task.
        method: The method's name (the same in both studies).
        six: The 6-layer study's task records (`load_task`).
        three: The main study's.
        resamples: Bootstrap resamples.
        seed: The bootstrap's base seed (with a checksum of the task and method, as `compare` does).
    """
    runs = [d["predictions"].get(method, {}) for d in (six, three)]
    paired = sorted(set(runs[0]) & set(runs[1]))
    unpaired = {kind: sorted(set(r) - set(paired)) for kind, r in zip(("6-layer", "3-layer"), runs, strict=True)}
    result = {"method": method, "paired_seeds": paired, "unpaired_seeds": unpaired}
    if not paired:
        lacking = [kind for kind, r in zip(("6-layer", "3-layer"), runs, strict=True) if not r]
        reason = f"no {' or '.join(lacking)} `{method}` student" if lacking else "no seed both have"
        return {**result, "difference": None, "note": f"not run: {reason}"}
    labels = six["labels"]
    predictions = [np.stack([r[s] for s in paired]) for r in runs]
    bootstrap_seed = [seed, zlib.crc32(f"{task}|6-layer|3-layer|{method}".encode())]
    test = paired_seed_bootstrap(*predictions, labels, get_task(task).metric, resamples, bootstrap_seed)
    return {**result, **{key: test[key] for key in LAYER_DIFFERENCE_KEYS}}


def layer_differences(folder: str, study_dir: str, task: str, six_task: dict, resamples: int, seed: int) -> dict:
    """6-layer minus 3-layer for `none`, the chosen single (chosen on the 6-layer study's dev scores; its teachers
    are the main study's, so the main study chooses the same one unless its records differ) and `average`.

    Args:
        folder: The 6-layer study folder.
        study_dir: The main (3-layer) study folder.
        task: The task.
        six_task: The 6-layer task's results (`analyze_task`).
        resamples: Bootstrap resamples.
        seed: The bootstrap's base seed.
    """
    if not_ready(study_dir, task):
        return {"note": "no 3-layer student of this task in the main study yet", "rows": []}
    six, three = load_task(folder, task), load_task(study_dir, task)
    if not np.array_equal(six["labels"], three["labels"]):
        return {"note": "not comparable: the two studies' validation rows differ", "rows": []}
    single = six_task["chosen"]["single"] or f"single: {six_task['chosen']['best_teacher']}"
    methods = [BASELINE_METHOD, single, PRIMARY_METHOD]
    return {"note": None, "rows": [layer_difference(task, m, six, three, resamples, seed) for m in methods]}


def analyze_six_layer(folder: str | None, study_dir: str, main: dict, resamples: int, seed: int) -> dict:
    """The 6-layer student: per task the primary and secondary comparisons as for the 3-layer student (its own
    choices on dev), Holm over its own secondary tests, and the 6-layer minus 3-layer differences.

    Args:
        folder: Its study folder (the main study's layout; teachers and logits linked from the main study); None:
            not run yet.
        study_dir: The main study folder (the 3-layer students).
        main: The main study's results (`analyze_v3_study`): the 3-layer choice of single, beside the 6-layer's.
        resamples: Bootstrap resamples per comparison.
        seed: The bootstrap's base seed.
    """
    names = task_folders(folder) if folder and os.path.isdir(folder) else []
    if not names:
        return {"status": NOT_RUN}
    tasks, differences, missing = {}, {}, {}
    for name in names:
        reason = not_ready(folder, name)
        if reason:
            tasks[name] = {"status": reason}
            continue
        tasks[name] = {**analyze_task(folder, name, resamples, seed), "gap": None}  # the plan: comparisons only
        differences[name] = layer_differences(folder, study_dir, name, tasks[name], resamples, seed)
        three = main["tasks"].get(name, {}).get("chosen", {}).get("single")
        differences[name]["three_layer_single"] = three
    for name in sorted(set(SIX_LAYER_TASKS) | set(names)):
        ran = tasks.get(name, {}).get("methods") is not None
        recorded = recorded_teachers(folder, name)
        missing[name] = planned_missing(tasks[name] if ran else None, SIX_LAYER_MULTI, SIX_LAYER_CUT_SEEDS, recorded)
    return {
        "status": "analyzed",
        "tasks": tasks,
        "task_order": names,
        "holm_family": adjust_secondary({n: t for n, t in tasks.items() if "comparisons" in t}),
        "layer_differences": differences,
        "missing": missing,
    }


def main_missing(result: dict) -> list[list]:
    """What the plan asks of the main study that its folder lacks: [task, [what it lacks]] pairs in the order the
    study runs its tasks (a list, so that its JSON keeps that order); empty when the main study is complete.

    Args:
        result: `analyze_v3_study`'s dict.
    """
    missing = []
    for task in MAIN_TASKS:
        if task not in result["tasks"]:
            missing.append([task, ["every run"]])
            continue
        multi = (*MAIN_MULTI, *OTHER_MULTI) if task in ("mrpc", "mnli") else MAIN_MULTI
        lacking = planned_missing(result["tasks"][task], multi, MAIN_THREE_SEEDS)
        if lacking:
            missing.append([task, lacking])
    return missing


def analyze_v3_parts(
    study_dir: str,
    low_resource_dir: str | None = None,
    six_layer_dir: str | None = None,
    resamples: int = 10_000,
    seed: int = 0,
) -> dict:
    """The main study (`analyze_v3_study`) with its two parts under `low_resource` and `six_layer`.

    Args:
        study_dir: The main v3 study folder.
        low_resource_dir: The low-resource regime's folder (runs/v3-low-resource); None: not run yet. A path that
            is not a folder is refused (a mistyped path must not read as "not run yet").
        six_layer_dir: The 6-layer student's folder (runs/v3-6layer); None: not run yet; refused likewise.
        resamples: Bootstrap resamples per comparison.
        seed: The bootstrap's base seed.
    """
    parts = (
        ("low_resource_dir", low_resource_dir, (LOW_RESOURCE_TASK,)),
        ("six_layer_dir", six_layer_dir, SIX_LAYER_TASKS),
    )
    for option, folder, tasks in parts:
        if folder is None:
            continue
        if not os.path.isdir(folder):
            raise ValueError(f"{option} {folder!r} is not a folder; leave it out while that part has not run.")
        if os.path.realpath(folder) == os.path.realpath(study_dir):
            raise ValueError(f"{option} {folder!r} is the main study's folder: give the part's own.")
        if os.listdir(folder) and not any(os.path.isdir(os.path.join(folder, task)) for task in tasks):
            raise ValueError(f"{option} {folder!r} holds no {' or '.join(tasks)}/ folder: not that part's study.")
    result = analyze_v3_study(study_dir, resamples, seed)
    result["main_missing"] = main_missing(result)
    result["low_resource"] = to_plain(analyze_low_resource(low_resource_dir, resamples, seed))
    result["six_layer"] = to_plain(analyze_six_layer(six_layer_dir, study_dir, result, resamples, seed))
    return result
