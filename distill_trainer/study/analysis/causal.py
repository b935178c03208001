"""The causal study's pre-registered analysis (results/causal/PREREGISTRATION.md, issue 31) over its study folder.

Reads run records only, never a model: each student's `eval_results.json` (dev NLL, what chooses; its teachers'
dev and validation token likelihoods) and `validation_nll.npy` (per validation row: summed NLL, scored tokens; the
validation NLL and every interval come from it), `logits-k<k>.json` (extraction wall time and bytes on disk),
`teachers.json` (pairwise top-1 agreement). Everything chosen is chosen on dev: the best single teacher (highest
dev token likelihood) and the best multi-teacher method (lowest mean student dev NLL). Differences are per-token
NLL (nats), student minus comparison: negative is better. A study still running gives a report of what is there
and of what is missing. `analyze_causal_study` returns a JSON-able dict; `causal_render` writes REPORT.md.
"""

from __future__ import annotations

import glob
import json
import math
import os
import re
import zlib

import numpy as np
import pandas as pd

from ..runs import VALIDATION_NLL_FILE, StudentResult
from .render import to_plain
from .stats import gap_closed
from .v3_stats import adjust_secondary, paired_seed_bootstrap

PLAN = "results/causal/PREREGISTRATION.md"
PLAN_TASKS = ("mnli", "qqp")
PLAN_SEEDS = (42, 43, 44)
PLAN_K = (8, 32, 128)
MULTI_METHODS = ("average", "weighted", "confidence", "fitted")  # the secondary's candidates, at the largest k
K_GRID_METHODS = ("best_single", "average")
MARGIN = 0.01  # nats per token (about 1% perplexity)
UNIT = "nats"
RUN_FOLDER = re.compile(r"^student-(?P<run>.+)-seed(?P<seed>\d+)$")


def per_token_nll(rows: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """Per-token NLL of each resample: the drawn rows' summed NLL over their summed tokens.

    Args:
        rows: `[n, 2]`, one student's validation rows (summed NLL, scored tokens), `validation_nll.npy`.
        indices: `[resamples, n]` drawn row indices.
    """
    return rows[:, 0][indices].sum(1) / rows[:, 1][indices].sum(1)


def read_json(path: str) -> dict | None:
    """The JSON object in a file, or None where the file does not exist (a study still running).

    Args:
        path: The JSON file's path.
    """
    if not os.path.isfile(path):
        return None
    with open(path) as handle:
        return json.load(handle)


def load_task(root: str) -> dict:
    """One task folder's records: students by run and seed (record and validation rows), teachers, the top-k
    records by k, the teachers' agreement, and checks (`results.csv` against the records, the rows' tokens).

    Args:
        root: `<study_dir>/<task>`.
    """
    students, checks = {}, []
    for path in sorted(glob.glob(os.path.join(root, "student-*", StudentResult.FILE))):
        folder = os.path.dirname(path)
        match = RUN_FOLDER.match(os.path.basename(folder))
        if not match:
            continue
        record = StudentResult.load(folder)
        if record.seed != int(match["seed"]):
            raise ValueError(f"{folder}: its record says seed {record.seed}, its folder seed {match['seed']}.")
        if (record.dev_metrics or {}).get("eval_loss") is None:
            raise ValueError(f"{folder}: no dev NLL (dev_metrics.eval_loss); the plan chooses on dev only.")
        rows = np.load(os.path.join(folder, VALIDATION_NLL_FILE))
        nll = float(rows[:, 0].sum() / rows[:, 1].sum())
        if not math.isclose(nll, record.metrics["eval_loss"], rel_tol=1e-5):
            found = record.metrics["eval_loss"]
            checks.append(f"{os.path.basename(folder)}: validation_nll.npy gives {nll:.6f}, its eval_loss {found:.6f}")
        students.setdefault(match["run"], {})[record.seed] = {"record": record, "rows": rows, "nll": nll}
    every = [s for seeds in students.values() for s in seeds.values()]
    tokens = {s["rows"][:, 1].tobytes() for s in every}
    if len(tokens) > 1:
        raise ValueError(f"{root}: the students' validation rows differ (row counts or tokens): not one split.")
    scored = every[0]["rows"][:, 1] > 0 if every else np.zeros(0, bool)  # a row cut before its completion: no token
    for student in every:  # it adds nothing to either sum, and a resample of only such rows would have no NLL
        student["rows"] = student["rows"][scored]
    named = {json.dumps(s["record"].teachers, sort_keys=True) for s in every}
    if len(named) > 1:
        raise ValueError(f"{root}: the students' records name different teachers: not one study.")
    topk = {}
    for path in sorted(glob.glob(os.path.join(root, "logits-k*.json"))):
        found = re.fullmatch(r"logits-k(\d+)\.json", os.path.basename(path))
        if found:
            record = read_json(path)
            topk[int(found[1])] = {"wall_time_s": record["wall_time_s"], "bytes": record["bytes"]}
    checks += csv_disagreements(root, students)
    return {
        "unscored_rows": int((~scored).sum()),
        "scored_rows": int(scored.sum()),
        "students": students,
        "teachers": every[0]["record"].teachers if every else [],
        "topk": topk,
        "agreement": read_json(os.path.join(root, "teachers.json")),
        "checks": checks,
    }


def csv_disagreements(root: str, students: dict) -> list[str]:
    """`results.csv` (written when a task's study finishes) against the records: validation and dev NLL, wall time.

    Args:
        root: `<study_dir>/<task>`; without a `results.csv` there, nothing is checked.
        students: The task's students by run and seed (`load_task`'s `students`).
    """
    path = os.path.join(root, "results.csv")
    if not os.path.isfile(path):
        return []
    found, problems = pd.read_csv(path), []
    for row in found[found["type"] == "student"].itertuples():
        match = RUN_FOLDER.match(row.run)
        student = students.get(match["run"], {}).get(int(match["seed"])) if match else None
        if student is None:
            problems.append(f"results.csv has {row.run}, whose record is missing")
            continue
        record = student["record"]
        pairs = {
            "eval_loss": (row.eval_loss, record.metrics.get("eval_loss")),
            "dev_loss": (row.dev_loss, record.dev_metrics["eval_loss"]),
            "train_wall_s": (row.train_wall_s, record.train_runtime),
        }
        problems += [
            f"{row.run}: results.csv {key} {a} vs {b} in its record"
            for key, (a, b) in pairs.items()
            if not np.isclose(a, np.nan if b is None else b, equal_nan=True)
        ]
    return problems


def run_k(run: str) -> int | str | None:
    """The k a run name says (`-k128`), "dense" for the live teachers, None for `none`.

    Args:
        run: The run's name, its folder name without `student-` and `-seed<s>` (`average-k128`).
    """
    found = re.search(r"-k(\d+)$", run)
    return int(found[1]) if found else ("dense" if run.endswith("-dense") else None)


def planned_runs(n_teachers: int, ks: list[int]) -> list[str]:
    """The plan's runs, in the runner's order (`causal_study.student_runs` with the plan's config).

    Args:
        n_teachers: How many teachers (one `single-<i>` run each).
        ks: The top-k grid; the largest k is the one the single and multi-teacher runs use.
    """
    largest = max(ks)
    runs = ["none", *(f"single-{i}-k{largest}" for i in range(n_teachers))]
    runs += [f"{m}-k{largest}" for m in MULTI_METHODS]
    runs += [f"{m}-k{k}" for k in ks if k != largest for m in K_GRID_METHODS]
    return [*runs, "average-dense"]


def run_table(data: dict, order: list[str], best: int | None) -> list[dict]:
    """Every run found: its seeds, validation NLL and perplexity (mean and sd over seeds, sd with n - 1), mean dev
    NLL (what chooses), mean training wall time, mean top-1 agreement with the best teacher, k and bytes on disk.

    Args:
        data: The task's records (`load_task`).
        order: Run names in the order the table lists them (`planned_runs`); runs not in it come last, by name.
        best: The best teacher's index (the column of each record's `top1_agreement`); None where there is no
            teacher record yet, and then no agreement is given.
    """
    table = []
    for run in sorted(data["students"], key=lambda r: (order.index(r) if r in order else len(order), r)):
        seeds = data["students"][run]
        nll = np.array([seeds[s]["nll"] for s in sorted(seeds)])
        records = [seeds[s]["record"] for s in sorted(seeds)]
        agreement = [r.metrics.get("top1_agreement") for r in records]
        k = run_k(run)
        table.append(
            {
                "run": run,
                "k": k,
                "seeds": sorted(seeds),
                "validation_nll_mean": float(nll.mean()),
                "validation_nll_sd": float(nll.std(ddof=1)) if len(nll) > 1 else None,
                "perplexity_mean": float(np.exp(nll).mean()),
                "perplexity_sd": float(np.exp(nll).std(ddof=1)) if len(nll) > 1 else None,
                "dev_nll_mean": float(np.mean([r.dev_metrics["eval_loss"] for r in records])),
                "train_s_mean": float(np.mean([r.train_runtime or np.nan for r in records])),
                "top1_best_teacher": float(np.mean([a[best] for a in agreement]))
                if best is not None and all(agreement)
                else None,
                "bytes": data["topk"].get(k, {}).get("bytes") if isinstance(k, int) else None,
            }
        )
    return table


def compare(task: str, a: str, b: str | None, data: dict, resamples: int, seed: int) -> dict:
    """A - B in validation per-token NLL, seeds paired by seed number (only the seeds both have; how many is said).

    Args:
        task: The task (part of the bootstrap seed).
        a: Run A's name (`average-k128`).
        b: Run B's name; None where it cannot be named (no teacher record yet).
        data: The task's records (`load_task`).
        resamples: Bootstrap resamples.
        seed: The base seed; each comparison's generator is seeded with it and a checksum of its names (as v3).
    """
    runs = data["students"]
    paired = sorted(set(runs.get(a, {})) & set(runs.get(b, {})))
    result = {"a": a, "b": b, "paired_seeds": paired}
    result["unpaired_seeds"] = {m: sorted(set(runs.get(m, {})) - set(paired)) for m in (a, b) if m}
    if not paired:
        missing = [f"`{m}`" for m in (a, b) if m not in runs]
        reason = f"no {' or '.join(missing)} student" if missing else "no seed both runs have"
        return {**result, "difference": None, "verdict": f"not run: {reason}"}
    rows = {m: np.stack([runs[m][s]["rows"] for s in paired]) for m in (a, b)}
    generator_seed = [seed, zlib.crc32(f"{task}|{a}|{b}".encode())]
    options = {"margin": MARGIN, "scorer": per_token_nll, "unit": UNIT, "higher_is_better": False}
    return {**result, **paired_seed_bootstrap(rows[a], rows[b], None, None, resamples, generator_seed, **options)}


def analyze_task(study_dir: str, task: str, resamples: int, seed: int) -> dict:
    """One task: teachers, runs, the dev choices, the primary, secondary and storage comparisons, the gap closed
    and what the plan asks that is not there yet.

    Args:
        study_dir: The study folder.
        task: The task's folder name.
        resamples: Bootstrap resamples per comparison.
        seed: The bootstrap's base seed.
    """
    data = load_task(os.path.join(study_dir, task))
    ks = sorted(set(data["topk"]) | {k for r in data["students"] if isinstance(k := run_k(r), int)}) or list(PLAN_K)
    largest = max(ks)
    teachers = [
        {"index": i, "name": t["name"], "dev_score": t["dev_score"], "validation_score": t["validation_score"]}
        | {"dev_nll": -math.log(t["dev_score"]), "validation_nll": -math.log(t["validation_score"])}
        for i, t in enumerate(data["teachers"])
    ]
    best = min(teachers, key=lambda t: (-t["dev_score"], t["index"])) if teachers else None
    order = planned_runs(len(teachers), ks)
    runs = run_table(data, order, best and best["index"])
    by_name = {r["run"]: r for r in runs}
    single = f"single-{best['index']}-k{largest}" if best else None
    candidates = [by_name[f"{m}-k{largest}"] for m in MULTI_METHODS if f"{m}-k{largest}" in by_name]
    best_multi = min(candidates, key=lambda r: (r["dev_nll_mean"], r["run"]))["run"] if candidates else None
    primary = f"average-k{largest}"
    comparisons = {
        "primary": compare(task, primary, single, data, resamples, seed),
        "secondary": compare(task, best_multi or "a multi-teacher method", single, data, resamples, seed),
        "dense": compare(task, "average-dense", primary, data, resamples, seed),
    }
    for k in ks[:-1]:
        comparisons[f"best_single-k{k}"] = compare(task, f"best_single-k{k}", single, data, resamples, seed)
        comparisons[f"average-k{k}"] = compare(task, f"average-k{k}", primary, data, resamples, seed)
    gaps = {}
    for key, run in (("primary", primary), ("secondary", best_multi)):
        if best and run in by_name and "none" in by_name:
            nll = (by_name["none"]["validation_nll_mean"], by_name[run]["validation_nll_mean"], best["validation_nll"])
            gaps[key] = {"run": run, "none": nll[0], "student": nll[1], "teacher": nll[2]}
            gaps[key]["gap_closed"] = gap_closed(-nll[1], -nll[0], -nll[2])  # lower NLL is better
    seeds = sorted(set(PLAN_SEEDS) | {s for r in runs for s in r["seeds"]})
    missing = {run: [s for s in seeds if s not in data["students"].get(run, {})] for run in order}
    grid = [{"k": k, **data["topk"].get(k, {})} for k in ks]
    checks = data["checks"] + [
        f"{run}-seed{s}: its teacher ({x['record'].teacher_index}) is not the best by dev ({best['index']})"
        for run, by_seed in sorted(data["students"].items())
        for s, x in sorted(by_seed.items())
        if run.startswith("best_single-") and best and x["record"].teacher_index != best["index"]
    ]
    return {
        "validation_rows": data["scored_rows"],
        "unscored_rows": data["unscored_rows"],
        "largest_k": largest,
        "teachers": teachers,
        "agreement": data["agreement"],
        "runs": runs,
        "chosen": {"best_teacher": best and best["name"], "single": single, "best_multi": best_multi},
        "comparisons": comparisons,
        "gap": gaps,
        "topk": grid,
        "missing": {run: s for run, s in missing.items() if s},
        "checks": checks,
        "devices": sorted(
            {x["record"].device or "unrecorded" for by in data["students"].values() for x in by.values()}
        ),
    }


def task_folders(study_dir: str) -> list[str]:
    """The plan's tasks, then any other folder holding a student or top-k record, by name.

    Args:
        study_dir: The study folder (`<task>/student-*`, `<task>/logits-k<k>.json`).
    """
    found = {os.path.basename(os.path.dirname(p)) for p in glob.glob(os.path.join(study_dir, "*", "logits-k*.json"))}
    students = glob.glob(os.path.join(study_dir, "*", "student-*", StudentResult.FILE))
    found |= {os.path.basename(os.path.dirname(os.path.dirname(p))) for p in students}
    return [*PLAN_TASKS, *sorted(found - set(PLAN_TASKS))]


def analyze_causal_study(study_dir: str, resamples: int = 10_000, seed: int = 0) -> dict:
    """The causal study's pre-registered comparisons for every task under `study_dir`, as a JSON-able dict; a task
    with no record yet is listed as missing.

    Args:
        study_dir: The study folder (`<task>/student-<run>-seed<s>`, `<task>/logits-k<k>.json`, `teachers.json`).
        resamples: Bootstrap resamples per comparison.
        seed: The bootstrap's base seed (fixed: the same records give the same dict, and the same REPORT.md).
    """
    names = task_folders(study_dir)
    present = [n for n in names if glob.glob(os.path.join(study_dir, n, "student-*", StudentResult.FILE))]
    tasks = {name: analyze_task(study_dir, name, resamples, seed) for name in present}
    family = adjust_secondary(tasks, UNIT)
    result = {
        "plan": PLAN,
        "resamples": resamples,
        "bootstrap_seed": seed,
        "margin": MARGIN,
        "unit": UNIT,
        "tasks": tasks,
        "task_order": present,
        "missing_tasks": [n for n in names if n not in present],
        "holm_family": family,
    }
    return to_plain(result)
