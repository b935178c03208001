"""The causal study's pre-registered analysis (issue 31) on synthetic study folders in the runner's layout, written
with the real record class: choices on dev only, the primary difference and its interval recomputed here, Holm,
the verdicts in nats, a partial study, a byte-identical report."""

import json
import math
import os
import shutil
import zlib

import numpy as np
import pandas as pd
import pytest

from distill_trainer.study.analysis import causal
from distill_trainer.study.analysis.causal import analyze_causal_study
from distill_trainer.study.analysis.causal_render import render_causal_report
from distill_trainer.study.analysis.figures import write_causal_figures
from distill_trainer.study.analysis.v3_stats import holm, verdict
from distill_trainer.study.cli import main as cli
from distill_trainer.study.runs import VALIDATION_NLL_FILE, StudentResult

RESAMPLES = 400  # one chunk of paired_seed_bootstrap (500): the draws below are its draws
SEEDS = (42, 43, 44)
ROWS = 60
# teacher: (dev token likelihood, validation token likelihood); teacher 2 is best on validation, 1 on dev
TEACHERS = {"SmolLM2-135M-Instruct": (0.20, 0.22), "task-1": (0.30, 0.35), "task-2": (0.28, 0.40)}
# run: (validation NLL, dev NLL). `weighted` is best on validation but not on dev; `confidence` is best on dev.
RUNS = {
    "none": (3.00, 3.10),
    "single-0-k128": (2.80, 2.90),
    "single-1-k128": (2.50, 2.60),
    "single-2-k128": (2.45, 2.70),
    "average-k128": (2.40, 2.50),
    "weighted-k128": (2.30, 2.45),
    "confidence-k128": (2.50, 2.20),
    "fitted-k128": (2.45, 2.40),
    "best_single-k8": (2.70, 2.80),
    "average-k8": (2.60, 2.70),
    "best_single-k32": (2.55, 2.65),
    "average-k32": (2.45, 2.55),
    "average-dense": (2.38, 2.48),
}


def write_study(root, task, runs=RUNS, seeds=SEEDS, seed_noise=0.01, shift=0.0):
    """`<root>/<task>/` as `distill-trainer causal-study` leaves it: students' eval_results.json and
    validation_nll.npy, logits-k<k>.json, teachers.json and results.csv."""
    folder = root / task
    folder.mkdir(parents=True)
    generator = np.random.default_rng(zlib.crc32(task.encode()))
    tokens = generator.integers(3, 13, ROWS).astype(np.float64)
    tokens[0] = 0  # a row cut at max_length before its completion: nothing scored
    row_effect = generator.normal(0, 0.3, ROWS)  # shared by every run: what pairing removes
    teachers = [
        {"name": n, "validation_score": v, "metric": "token_likelihood", "dev_score": d, "revision": None}
        for n, (d, v) in TEACHERS.items()
    ]
    table = []
    for run, (validation, dev) in runs.items():
        validation += shift if run == "confidence-k128" else 0
        for seed in seeds:
            nll = tokens * (validation + row_effect + generator.normal(0, seed_noise, ROWS))
            rows = np.stack([nll, tokens], 1)
            out = folder / f"student-{run}-seed{seed}"
            out.mkdir()
            np.save(out / VALIDATION_NLL_FILE, rows)
            fusion = run.split("-")[0].replace("best_single", "single").replace("fitted", "weighted")
            index = 1 if run.startswith("best_single") else (int(run.split("-")[1]) if fusion == "single" else None)
            loss, dev_loss = float(nll.sum() / tokens.sum()), dev + 0.001 * (seed - 43)
            StudentResult(
                task="causal_lm",
                metric="perplexity",
                score=math.exp(loss),
                fusion=fusion,
                temperature=1.0,
                alpha=0.5,
                seed=seed,
                teacher_index=index,
                metrics={"eval_loss": loss, "perplexity": math.exp(loss), "top1_agreement": [0.5, 0.6, 0.7]},
                teachers=teachers,
                train_runtime=100.0 + seed,
                dev_score=math.exp(dev_loss),
                dev_metrics={"eval_loss": dev_loss, "perplexity": math.exp(dev_loss)},
            ).save(str(out))
            table.append({"run": out.name, "type": "student", "eval_loss": loss, "dev_loss": dev_loss})
            table[-1]["train_wall_s"] = 100.0 + seed
    for k, size in ((8, 1000), (32, 4000), (128, 16000)):
        (folder / f"logits-k{k}.json").write_text(json.dumps({"question": {"k": k}, "wall_time_s": k, "bytes": size}))
    agreement = [[1.0, 0.5, 0.6], [0.5, 1.0, 0.7], [0.6, 0.7, 1.0]]
    names = list(TEACHERS)
    (folder / "teachers.json").write_text(
        json.dumps({"teachers": names, "top1_agreement": {"dev": agreement, "validation": agreement}})
    )
    pd.DataFrame(table).to_csv(folder / "results.csv", index=False)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("causal-analysis") / "study"
    write_study(root, "mnli")
    write_study(root, "qqp", shift=0.03)  # qqp: the secondary (`confidence`) worse than the single
    return root, analyze_causal_study(str(root), RESAMPLES)


def test_choices_are_made_on_dev_only(study):
    _, result = study
    mnli = result["tasks"]["mnli"]
    # teacher 2 has the best validation likelihood, teacher 1 the best dev likelihood
    assert mnli["chosen"] == {"best_teacher": "task-1", "single": "single-1-k128", "best_multi": "confidence-k128"}
    assert mnli["comparisons"]["secondary"]["a"] == "confidence-k128"  # not `weighted`, best on validation
    assert mnli["comparisons"]["primary"]["b"] == "single-1-k128"
    teacher = mnli["teachers"][1]
    assert teacher["validation_nll"] == pytest.approx(-math.log(0.35)) and teacher["dev_nll"] == pytest.approx(
        -math.log(0.30)
    )
    assert not mnli["missing"] and not mnli["checks"] and result["missing_tasks"] == []


def test_the_primary_difference_and_interval_recomputed(study):
    root, result = study
    primary = result["tasks"]["mnli"]["comparisons"]["primary"]
    a, b = (
        [np.load(root / "mnli" / f"student-{r}-seed{s}" / VALIDATION_NLL_FILE) for s in SEEDS]
        for r in ("average-k128", "single-1-k128")
    )
    a, b = ([x[x[:, 1] > 0] for x in runs] for runs in (a, b))  # the row without a scored token is left out
    assert result["tasks"]["mnli"]["validation_rows"] == ROWS - 1 == len(a[0])
    per_seed = [x[:, 0].sum() / x[:, 1].sum() - y[:, 0].sum() / y[:, 1].sum() for x, y in zip(a, b, strict=True)]
    assert primary["difference"] == pytest.approx(np.mean(per_seed)) and primary["paired_seeds"] == list(SEEDS)
    generator = np.random.default_rng([0, zlib.crc32(b"mnli|average-k128|single-1-k128")])
    indices = generator.integers(0, ROWS - 1, size=(RESAMPLES, ROWS - 1))
    drawn_seeds = generator.integers(0, len(SEEDS), size=(len(SEEDS), RESAMPLES))
    differences = []
    for r in range(RESAMPLES):  # the same rows for every seed and both runs; the seeds drawn in pairs
        rows = indices[r]
        seed_differences = [
            x[rows, 0].sum() / x[rows, 1].sum() - y[rows, 0].sum() / y[rows, 1].sum()
            for x, y in zip(a, b, strict=True)
        ]
        differences.append(np.mean([seed_differences[s] for s in drawn_seeds[:, r]]))
    low, high = np.percentile(differences, [2.5, 97.5])
    assert primary["ci_low"] == pytest.approx(low) and primary["ci_high"] == pytest.approx(high)
    # average 0.1 nats below the single student, the whole interval beyond the margin
    assert high < -0.01 and primary["verdict"] == "better, by more than 0.01 nats"
    assert primary["tost_p"] == pytest.approx(
        max(np.mean(np.array(differences) <= -0.01), np.mean(np.array(differences) >= 0.01))
    )


def test_verdicts_in_nats_and_holm(study):
    _, result = study
    assert verdict(-0.05, -0.005, 0.01, "nats", False) == "better"  # crossing the margin: no size
    assert verdict(0.005, 0.05, 0.01, "nats", False) == "worse"
    assert verdict(-0.008, -0.001, 0.01, "nats", False) == "better, by less than 0.01 nats"
    assert verdict(0.001, 0.009, 0.01, "nats", False) == "worse, by less than 0.01 nats"
    assert verdict(0.02, 0.05, 0.01, "nats", False) == "worse, by more than 0.01 nats"
    assert verdict(-0.005, 0.005, 0.01, "nats", False) == "no difference detected within +-0.01 nats"
    assert verdict(-0.02, 0.005, 0.01, "nats", False) == "inconclusive"
    mnli, qqp = (result["tasks"][t]["comparisons"]["secondary"] for t in ("mnli", "qqp"))
    assert mnli["verdict"] == "no difference detected within +-0.01 nats"  # same validation NLL as the single
    assert qqp["difference"] == pytest.approx(0.03, abs=0.005) and qqp["verdict"].startswith("worse")
    low, high = sorted([mnli, qqp], key=lambda c: c["p_value"])
    assert low["holm_p"] == pytest.approx(min(1, 2 * low["p_value"]))
    assert high["holm_p"] == pytest.approx(max(low["holm_p"], high["p_value"]))
    assert {"mnli": mnli["holm_p"], "qqp": qqp["holm_p"]} == holm({"mnli": mnli["p_value"], "qqp": qqp["p_value"]})
    assert (
        result["holm_family"] == ["mnli", "qqp"] and "holm_p" not in result["tasks"]["mnli"]["comparisons"]["primary"]
    )


def test_gap_closed_storage_and_wall_times(study):
    _, result = study
    mnli = result["tasks"]["mnli"]
    runs = {r["run"]: r for r in mnli["runs"]}
    none, student = runs["none"]["validation_nll_mean"], runs["average-k128"]["validation_nll_mean"]
    expected = (none - student) / (none + math.log(0.35))  # the best teacher by dev, its validation NLL
    assert (
        mnli["gap"]["primary"]["gap_closed"] == pytest.approx(expected)
        and mnli["gap"]["secondary"]["run"] == "confidence-k128"
    )
    assert runs["average-k8"]["bytes"] == 1000 and runs["average-dense"]["bytes"] is None
    assert runs["average-k8"]["train_s_mean"] == pytest.approx(143.0) and runs["none"]["seeds"] == list(SEEDS)
    assert runs["average-k128"]["top1_best_teacher"] == pytest.approx(0.6)
    assert mnli["topk"] == [
        {"k": 8, "wall_time_s": 8, "bytes": 1000},
        {"k": 32, "wall_time_s": 32, "bytes": 4000},
        {"k": 128, "wall_time_s": 128, "bytes": 16000},
    ]
    assert set(mnli["comparisons"]) == {
        "primary",
        "secondary",
        "dense",
        "best_single-k8",
        "average-k8",
        "best_single-k32",
        "average-k32",
    }
    assert mnli["comparisons"]["dense"]["difference"] == pytest.approx(-0.02, abs=0.005)


def test_the_report_rebuilds_byte_identically(study, tmp_path):
    root, _ = study
    outputs = []
    for name in ("one", "two"):
        argv = ["analyze", "--plan", "causal", "--study_dir", str(root), "--output_dir", str(tmp_path / name)]
        cli([*argv, "--resamples", str(RESAMPLES)])
        outputs.append({f: (tmp_path / name / f).read_bytes() for f in ("REPORT.md", "causal_results.json")})
    assert outputs[0] == outputs[1]
    report = outputs[0]["REPORT.md"].decode()
    assert "| mnli | `average-k128` -0.1" in report and 'never "equal"' in report and "not finished" not in report
    for figure in ("comparisons.png", "nll_by_k_mnli.png"):  # drawn beside the report, and linked from it
        assert f"]({figure})" in report and (tmp_path / "one" / figure).read_bytes().startswith(b"\x89PNG")
    assert " equal" not in report.replace('never "equal"', "")


def test_a_partial_study_says_what_is_missing(study, tmp_path):
    root, _ = study
    partial = tmp_path / "study"
    shutil.copytree(root / "mnli", partial / "mnli")
    shutil.rmtree(partial / "mnli" / "student-average-k128-seed44")
    for seed in SEEDS:
        shutil.rmtree(partial / "mnli" / f"student-confidence-k128-seed{seed}")
    (partial / "mnli" / "results.csv").unlink()  # written when the whole task is done
    result = causal.analyze_causal_study(str(partial), RESAMPLES)
    mnli = result["tasks"]["mnli"]
    assert result["missing_tasks"] == ["qqp"] and result["task_order"] == ["mnli"]
    assert mnli["missing"] == {"average-k128": [44], "confidence-k128": [42, 43, 44]}
    primary = mnli["comparisons"]["primary"]
    assert primary["paired_seeds"] == [42, 43] and primary["unpaired_seeds"] == {
        "average-k128": [],
        "single-1-k128": [44],
    }
    assert mnli["chosen"]["best_multi"] == "fitted-k128"  # the best on dev among those there
    report = render_causal_report(result)
    assert (
        "**This study is not finished**: qqp: no student record yet; mnli: 4 of the plan's runs (run x seed) missing"
        in report
    )
    assert "`confidence-k128` seed 42, 43, 44" in report and "left out single-1-k128: 44" in report
    shutil.rmtree(partial / "mnli" / "student-average-k128-seed42")
    shutil.rmtree(partial / "mnli" / "student-average-k128-seed43")
    result = causal.analyze_causal_study(str(partial), RESAMPLES)
    assert result["tasks"]["mnli"]["comparisons"]["primary"]["verdict"] == "not run: no `average-k128` student"
    render_causal_report(result)  # still a report, with its figures
    assert sorted(os.path.basename(f) for f in write_causal_figures(result, str(tmp_path / "figures"))) == [
        "comparisons.png",
        "nll_by_k_mnli.png",
    ]


def test_results_csv_disagreeing_with_the_records_is_flagged(study, tmp_path):
    root, _ = study
    shutil.copytree(root / "mnli", tmp_path / "mnli")
    table = pd.read_csv(tmp_path / "mnli" / "results.csv")
    table.loc[0, "eval_loss"] += 0.5
    table.to_csv(tmp_path / "mnli" / "results.csv", index=False)
    checks = causal.load_task(str(tmp_path / "mnli"))["checks"]
    assert len(checks) == 1 and checks[0].startswith("student-none-seed42: results.csv eval_loss")
