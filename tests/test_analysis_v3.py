"""Study v3's pre-registered analysis on synthetic run folders written with the real record classes: choices on dev
only, the paired bootstrap's verdicts, Holm, the gap closed both ways, MRPC's all-positive check, a byte-identical
report."""

import json
import shutil

import datasets
import numpy as np
import pytest

from distill_trainer import attach_teacher_logits
from distill_trainer.study.analysis.v3 import PRIMARY_ON_SECONDARY_SEEDS, analyze_v3_study
from distill_trainer.study.analysis.v3_format import interval, pct, pp, share
from distill_trainer.study.analysis.v3_parts import analyze_v3_parts
from distill_trainer.study.analysis.v3_parts_render import SIX_LAYER_CUTS
from distill_trainer.study.analysis.v3_render import render_v3_report, write_v3_report
from distill_trainer.study.analysis.v3_stats import (
    WITHIN_MARGIN,
    all_positive_check,
    all_positive_f1,
    apply_holm,
    holm,
    paired_seed_bootstrap,
    verdict,
)
from distill_trainer.study.runs import StudentResult, TeacherRecord
from distill_trainer.study.tasks import compute_task_metrics, get_task

RESAMPLES = 400
SEEDS = (42, 43, 44)


def wrong_on(labels, rows, classes=2):
    """The labels, wrong on `rows`."""
    predicted = labels.copy()
    predicted[rows] = (predicted[rows] + 1) % classes
    return predicted


def write_task(root, task, labels, teachers, students, classes=2):
    """A task folder as compare.py leaves it. `teachers`: name -> (dev, validation); `students`: method (`none`,
    `single-<i>`, a fusion) -> (dev score, {seed: predicted class ids})."""
    folder = root / task
    names = [f"{name}-{task}" for name in teachers]  # the runner's names: short_teacher_name drops the suffix
    n = len(labels)
    rows = datasets.Dataset.from_dict({"sentence": [f"s{i}" for i in range(n)], "label": labels.tolist()})
    label_names = [f"c{i}" for i in range(classes)]
    stored = np.stack([teacher_logits(task, labels, validation, classes) for _, validation in teachers.values()], 1)
    logits = attach_teacher_logits(rows, stored, names, label_names, ["sentence"], task=task)
    datasets.DatasetDict({"train": logits, "validation": logits}).save_to_disk(str(folder / "logits"))
    for name, (dev, validation) in zip(names, teachers.values(), strict=True):
        (folder / f"teacher-{name}").mkdir(parents=True)
        metric = get_task(task).metric
        record = TeacherRecord(name=name, base_model="b", task=task, metric=metric, validation_score=validation)
        record.dev_score = dev
        record.save(str(folder / f"teacher-{name}"))
    write_students(folder, task, labels, names, students, classes)


def teacher_logits(task, labels, score, classes):
    """One-hot logits scoring `score` on `labels` (within the analysis' 0.005 tolerance): wrong on the first rows."""
    metric = get_task(task).metric
    wrong = range(len(labels) + 1) if metric != "accuracy" else [round((1 - score) * len(labels))]
    candidates = [np.eye(classes)[wrong_on(labels, np.arange(k), classes)] for k in wrong]
    return min(candidates, key=lambda x: abs(compute_task_metrics(get_task(task), x, labels)[metric] - score))


def write_students(folder, task, labels, names, students, classes=2):
    """Student run folders as compare.py leaves them (`write_task`'s `students`), trained on teachers `names`."""
    folder.mkdir(parents=True, exist_ok=True)
    for method, (dev, by_seed) in students.items():
        for seed, predicted in by_seed.items():
            run = folder / f"student-{method}-seed{seed}"
            run.mkdir()
            np.save(run / "validation_logits.npy", np.eye(classes)[predicted].astype(np.float32))
            fusion, index = ("single", int(method[-1])) if method.startswith("single") else (method, None)
            StudentResult(
                task=task,
                metric=get_task(task).metric,
                score=compute_task_metrics(get_task(task), predicted, labels)[get_task(task).metric],
                fusion=fusion,
                teacher_index=index,
                seed=seed,
                temperature=6.0,
                alpha=0.7,
                teachers=[{"name": name} for name in names],
                dev_score=dev + 0.001 * (seed - 43),  # seeds differ on dev too; the mean is what chooses
            ).save(str(run))


def mrpc_students(labels, above: bool):
    """MRPC students near all-positive (seeds spread around it), or (`above`) `average` clearly beating it."""
    positives, negatives = np.flatnonzero(labels == 1), np.flatnonzero(labels == 0)

    def near(shift):  # shift > 0: that many negatives right; < 0: that many positives wrongly negative
        predicted = np.ones_like(labels)
        predicted[negatives[:shift] if shift > 0 else positives[:-shift]] = 0
        return predicted

    spread = {42: near(-3), 43: near(0), 44: near(3)}
    students = {method: (0.8, spread) for method in ("none", "single-0", "single-1", "weighted", "confidence")}
    students["average"] = (0.8, {seed: near(30 + seed - 43) for seed in SEEDS} if above else spread)
    return students


@pytest.fixture
def v3_study(tmp_path):
    """SST-2: dev and validation disagree about the best teacher and the best multi-teacher method; `average`
    clearly above the chosen single, `weighted` (best multi by dev) within 1 pp of it. MNLI: both inconclusive.
    MRPC: no student beats the all-positive F1."""
    root = tmp_path / "study"
    generator = np.random.default_rng(0)
    n = 2000
    labels = generator.integers(0, 2, n)
    single_1 = {seed: wrong_on(labels, np.arange(250)) for seed in SEEDS}
    weighted = {  # single-1's errors but two fixed and two made: the same accuracy, 4 rows apart
        seed: wrong_on(labels, np.r_[np.arange(2, 250), [1000, 1001]]) for seed in (42, 43)
    }
    students = {
        "none": (0.70, {seed: wrong_on(labels, np.arange(400 + 2 * (seed - 42))) for seed in SEEDS}),
        "single-0": (0.85, {seed: wrong_on(labels, np.arange(300)) for seed in SEEDS}),
        "single-1": (0.86, single_1),
        "average": (0.88, {seed: wrong_on(labels, np.arange(50)) for seed in SEEDS}),
        "weighted": (0.95, weighted),  # best by dev (seed 44 missing: 2 paired seeds)
        "confidence": (0.70, {seed: wrong_on(labels, np.arange(20)) for seed in SEEDS}),  # best on validation
    }
    write_task(root, "sst2", labels, {"t0": (0.80, 0.95), "t1": (0.90, 0.90)}, students)
    labels = generator.integers(0, 3, 120)
    swapped = {seed: wrong_on(labels, np.arange(15, 45), 3) for seed in SEEDS}
    students = {
        "none": (0.50, {seed: wrong_on(labels, np.arange(60), 3) for seed in SEEDS}),
        "single-0": (0.66, {seed: wrong_on(labels, np.arange(30), 3) for seed in SEEDS}),
        "single-1": (0.50, {seed: wrong_on(labels, np.arange(50), 3) for seed in SEEDS}),
        "average": (0.62, swapped),  # 30 errors, 30 rows apart from single-0's: no detectable difference
        "weighted": (0.65, swapped),
        "confidence": (0.60, {seed: wrong_on(labels, np.arange(40), 3) for seed in SEEDS}),
    }
    write_task(root, "mnli", labels, {"t0": (0.70, 0.80), "t1": (0.55, 0.85)}, students, classes=3)
    labels = np.r_[np.ones(136, int), np.zeros(64, int)]
    write_task(root, "mrpc", labels, {"t0": (0.9, 0.9), "t1": (0.8, 0.85)}, mrpc_students(labels, above=False))
    return root


def test_choices_are_made_on_dev_and_the_comparisons_verdicts(v3_study):
    result = analyze_v3_study(str(v3_study), RESAMPLES)
    sst2 = result["tasks"]["sst2"]
    assert sst2["chosen"] == {  # validation would pick t0 (95%) and confidence (99%)
        "best_teacher": "t1",
        "teacher_index": 1,
        "single": "single: t1",
        "best_multi": "weighted",
        "best_student": "weighted",
        "ties": {},
    }
    primary, secondary = sst2["comparisons"]["primary"], sst2["comparisons"]["secondary"]
    assert (primary["a"], primary["b"], primary["paired_seeds"]) == ("average", "single: t1", [42, 43, 44])
    assert primary["difference"] == pytest.approx(0.10) and primary["verdict"] == "better, by more than 1 pp"
    assert primary["ci_low"] > 0.05 and primary["p_value"] == 0.0
    assert secondary["paired_seeds"] == [42, 43] and secondary["unpaired_seeds"] == {
        "single: t1": [44],
        "weighted": [],
    }
    assert secondary["difference"] == pytest.approx(0.0) and secondary["verdict"] == WITHIN_MARGIN
    assert -0.01 <= secondary["ci_low"] <= 0 <= secondary["ci_high"] <= 0.01 and secondary["tost_p"] < 0.05
    mnli = result["tasks"]["mnli"]
    assert mnli["chosen"]["best_teacher"] == "t0" and mnli["chosen"]["best_multi"] == "weighted"
    for test in mnli["comparisons"].values():
        assert test["verdict"] == "inconclusive" and test["ci_low"] < -0.01 and test["ci_high"] > 0.01
        assert test["tost_p"] > 0.05


def test_the_primary_is_repeated_on_the_secondarys_seeds_outside_the_plans_tests(v3_study, tmp_path):
    """sst2's secondary pairs seeds 42-43 (its single has 44 too): the primary repeated on 42-43 shows how much of
    the two comparisons' difference is the seeds; a task whose two comparisons pair the same seeds has no such row."""
    write_v3_report(str(v3_study), str(tmp_path / "out"), RESAMPLES)
    result = json.loads((tmp_path / "out" / "v3_results.json").read_text())
    comparisons = result["tasks"]["sst2"]["comparisons"]
    repeated, primary = comparisons[PRIMARY_ON_SECONDARY_SEEDS], comparisons["primary"]
    assert (repeated["a"], repeated["b"], repeated["paired_seeds"]) == ("average", "single: t1", [42, 43])
    assert "holm_p" not in repeated and result["holm_family"] == ["mnli", "mrpc", "sst2"]
    assert repeated["difference"] == pytest.approx(0.10) and primary["paired_seeds"] == [42, 43, 44]
    assert PRIMARY_ON_SECONDARY_SEEDS not in result["tasks"]["mnli"]["comparisons"]
    report = (tmp_path / "out" / "REPORT.md").read_text()
    assert report.count(f"| {PRIMARY_ON_SECONDARY_SEEDS} | `average` | `single: t1` | 2 (left out average: 44;") == 1
    assert f"Holm p below {2 * 3 / RESAMPLES:g} (the raw bound times the family's size), over the tasks" in report


def test_a_teachers_validation_score_never_chooses(tmp_path):
    labels = np.random.default_rng(0).integers(0, 2, 200)
    students = {method: (0.5, {42: labels}) for method in ("none", "single-0", "single-1", "average")}
    teachers = {"t0": (0.80, 0.95), "t1": (0.90, 0.10)}  # t1 far below t0 on validation: still chosen, on dev
    write_task(tmp_path / "study", "sst2", labels, teachers, students)
    assert analyze_v3_study(str(tmp_path / "study"), RESAMPLES)["tasks"]["sst2"]["chosen"]["best_teacher"] == "t1"


def test_a_tie_on_dev_is_broken_by_sort_order_and_named_in_the_report(v3_study, tmp_path):
    for method in ("confidence", "weighted"):  # the same dev score for every seed of both: a tie on the mean
        for path in (v3_study / "sst2").glob(f"student-{method}-seed*/eval_results.json"):
            path.write_text(json.dumps({**json.loads(path.read_text()), "dev_score": 0.97}))
    chosen = analyze_v3_study(str(v3_study), RESAMPLES)["tasks"]["sst2"]["chosen"]
    assert (chosen["best_multi"], chosen["best_student"]) == ("confidence", "confidence")
    assert chosen["ties"] == {"best_multi": ["weighted"], "best_student": ["weighted"]}
    write_v3_report(str(v3_study), str(tmp_path / "out"), RESAMPLES)
    report = (tmp_path / "out" / "REPORT.md").read_text()
    assert (
        "The best multi-teacher method `confidence` ties on dev with `weighted`; a tie goes to the first name in "
        "sort order." in report
    )


def test_a_record_without_a_dev_score_is_refused(v3_study):
    path = v3_study / "mnli" / "student-average-seed42" / "eval_results.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "dev_score": None}))
    with pytest.raises(ValueError, match="no dev_score.*never falls back to validation"):
        analyze_v3_study(str(v3_study), RESAMPLES)


def test_verdicts_from_the_interval():
    assert verdict(0.001, 0.02) == "better" and verdict(-0.02, -0.001) == "worse"  # crossing the margin: no size
    assert verdict(0.015, 0.03) == "better, by more than 1 pp" and verdict(-0.03, -0.02) == "worse, by more than 1 pp"
    assert (
        verdict(0.001, 0.008) == "better, by less than 1 pp" and verdict(-0.009, -0.002) == "worse, by less than 1 pp"
    )
    assert verdict(-0.005, 0.008) == WITHIN_MARGIN == "no difference detected within +-1 pp"
    assert verdict(-0.02, 0.005) == "inconclusive" and verdict(-0.005, 0.011) == "inconclusive"
    # an end on the margin is not inside it (TOST at 2.5% a side: p >= 0.025 there; found by a review)
    assert verdict(-0.009, 0.01) == "inconclusive" and verdict(0.001, 0.01) == "better"


def test_a_difference_holm_does_not_pass_is_not_called_better():
    """A secondary test whose interval excludes 0 (raw p 0.03) but whose Holm p does not pass (3 x 0.03 = 0.09) reads
    as if its interval included 0, "after Holm": inside the margin, no difference detected; across it, inconclusive.
    The test that passes keeps its verdict, as does one whose interval includes 0; the margin's unit is kept."""
    test = {"ci_low": 0.0001, "ci_high": 0.0095, "margin": 0.01, "verdict": "better, by less than 1 pp"}
    tests = {
        "a": test | {"difference": 0.005, "p_value": 0.03},
        "b": test | {"difference": 0.005, "p_value": 0.001},
        "c": test | {"difference": 0.02, "p_value": 0.04, "ci_high": 0.04, "verdict": "better"},
        "d": {"difference": None, "verdict": "not run"},
    }
    assert apply_holm(tests) == ["a", "b", "c"] and "holm_p" not in tests["d"]
    assert tests["b"]["holm_p"] == pytest.approx(0.003) and tests["b"]["verdict"] == "better, by less than 1 pp"
    assert tests["a"]["holm_p"] == pytest.approx(0.06) and tests["a"]["verdict"] == f"{WITHIN_MARGIN} after Holm"
    assert tests["c"]["verdict"] == "inconclusive after Holm" and tests["d"]["verdict"] == "not run"
    within_nats = "no difference detected within +-0.01 nats"
    nats = {
        "x": test | {"difference": 0.005, "p_value": 0.2},
        "y": test | {"difference": 0.004, "p_value": 0.3, "ci_low": -0.001, "verdict": within_nats},
    }
    assert apply_holm(nats, unit="nats") == ["x", "y"]
    assert nats["x"]["verdict"] == f"{within_nats} after Holm" and nats["y"]["verdict"] == within_nats
    assert verdict(0.001, 0.008, holm_p=0.06) == f"{WITHIN_MARGIN} after Holm"
    assert verdict(-0.02, -0.015, holm_p=0.01) == "worse, by more than 1 pp"
    assert verdict(-0.005, 0.008, holm_p=0.9) == WITHIN_MARGIN  # includes 0: Holm changes nothing


def test_tost_p_is_the_larger_one_sided_tail():
    labels = np.zeros(400, int)
    a, b = labels.copy(), labels.copy()
    a[:40], b[40:80] = 1, 1  # both 90%, 80 rows apart
    test = paired_seed_bootstrap(a, b, labels, "accuracy", resamples=2000, margin=0.01)
    assert test["difference"] == 0 and test["verdict"] == "inconclusive"
    assert test["tost_p"] == max(test["tost_p_lower"], test["tost_p_upper"]) > 0.05
    wide = paired_seed_bootstrap(a, b, labels, "accuracy", resamples=2000, margin=0.10)
    assert wide["tost_p"] < 0.05 and wide["verdict"] == "no difference detected within +-10 pp"


def test_float_noise_decides_no_verdict():
    """Scores equal but for float rounding (0.1 + 0.2 against 0.3, 5.6e-17 apart) are equal: an interval of
    exactly [0, 0], not "better" (the low-resource regime once printed a lower end of -2.8e-17)."""
    a, b = np.full((2, 20), 0.1 + 0.2), np.full((2, 20), 0.3)
    test = paired_seed_bootstrap(a, b, None, "accuracy", resamples=200, scorer=lambda rows, drawn: rows[drawn].mean(1))
    assert (test["ci_low"], test["ci_high"], test["p_value"]) == (0.0, 0.0, 1.0)
    assert test["verdict"] == WITHIN_MARGIN and str(test["ci_low"]) == "0.0"


def test_an_exact_half_prints_the_same_however_the_mean_was_summed():
    """A mean of four seeds' scores on 1,000 rows ending in 5 at the third decimal (65.275) prints 65.28 whether the
    float came out just above or just below it; an auditor's own code gets the report's digits."""
    scores = [0.633, 0.665, 0.662, 0.651]  # mean 0.65275: summed in two orders, two floats f"{:.2f}" prints apart
    forward, backward = sum(scores) / 4, sum(reversed(scores)) / 4
    assert f"{100 * forward:.2f}" != f"{100 * backward:.2f}"
    assert pct(forward) == pct(backward) == pct(0.65275 + 1e-15) == "65.28" and pct(0.65925 - 1e-15) == "65.93"
    assert pp(-0.07725 + 1e-15) == "-7.73 pp" and pp(-1e-15) == "+0.00 pp" and share(0.1125) == "11.3%"
    assert interval({"ci_low": -0.0018, "ci_high": 0.01725}) == "[-0.18, +1.73]"


def test_holm_against_a_manual_computation(v3_study):
    raw = {"a": 0.01, "b": 0.04, "c": 0.03, "d": 0.005}
    # sorted d, a, c, b: 4 x .005 = .02, 3 x .01 = .03, 2 x .03 = .06, max(.06, 1 x .04) = .06
    assert holm(raw) == pytest.approx({"d": 0.02, "a": 0.03, "c": 0.06, "b": 0.06})
    assert holm({"x": 0.6, "y": 0.5}) == {"x": 1.0, "y": 1.0}
    result = analyze_v3_study(str(v3_study), RESAMPLES)
    tests = {task: t["comparisons"]["secondary"] for task, t in result["tasks"].items()}
    assert result["holm_family"] == ["mnli", "mrpc", "sst2"]
    order = sorted(tests, key=lambda task: tests[task]["p_value"])
    running = 0.0
    for rank, task in enumerate(order):
        running = max(running, min(1.0, (3 - rank) * tests[task]["p_value"]))
        assert tests[task]["holm_p"] == pytest.approx(running)


def test_gap_closed_both_ways_by_hand(v3_study):
    result = analyze_v3_study(str(v3_study), RESAMPLES)
    none_sst2 = np.mean([1 - 400 / 2000, 1 - 402 / 2000, 1 - 404 / 2000])
    weighted_sst2 = 1 - 250 / 2000
    # per task: best student (weighted) and best teacher (t1, 90%) by dev, not confidence (99%) and t0 (95%)
    assert result["tasks"]["sst2"]["gap"]["gap_closed"] == pytest.approx(
        (weighted_sst2 - none_sst2) / (0.90 - none_sst2)
    )
    assert result["tasks"]["mnli"]["gap"]["gap_closed"] == pytest.approx((0.75 - 0.5) / (0.80 - 0.5))
    assert result["excluded_from_averages"] == ["mrpc"]
    per_task = [result["tasks"][t]["gap"]["gap_closed"] for t in ("sst2", "mnli")]
    assert result["mean_gap_closed"] == {"tasks": ["sst2", "mnli"], "value": pytest.approx(np.mean(per_task))}
    # the AVG columns over SST-2 and MNLI: t0 (dev .80, .70) beats t1 (.90, .55); weighted (.95, .65) every student
    avg = result["avg_column_gap"]
    teacher, student, baseline = (0.95 + 0.80) / 2, (weighted_sst2 + 0.75) / 2, (none_sst2 + 0.5) / 2
    assert (avg["best_teacher"], avg["best_student"], avg["tasks"]) == ("t0", "weighted", ["sst2", "mnli"])
    assert avg["gap_closed"] == pytest.approx((student - baseline) / (teacher - baseline))
    assert result["avg_column_gap_all_tasks"]["tasks"] == ["sst2", "mnli", "mrpc"]


def test_mrpc_all_positive_check(v3_study, tmp_path):
    labels = np.r_[np.ones(136, int), np.zeros(64, int)]
    assert all_positive_f1(labels) == pytest.approx(2 * 136 / (2 * 136 + 64))
    check = analyze_v3_study(str(v3_study), RESAMPLES)["tasks"]["mrpc"]["all_positive"]
    assert check == {
        "all_positive_f1": pytest.approx(272 / 336),
        "methods_above": [],
        "excluded_from_averages": True,
        "label_positive_share": 0.68,
        "predicted_positive_share": [197 / 200, 1.0],  # three rows predicted negative; none
    }
    root = tmp_path / "beaten"
    write_task(root, "mrpc", labels, {"t0": (0.9, 0.9), "t1": (0.8, 0.85)}, mrpc_students(labels, above=True))
    result = analyze_v3_study(str(root), RESAMPLES)
    assert result["tasks"]["mrpc"]["all_positive"]["methods_above"] == ["average"]
    assert result["excluded_from_averages"] == [] and result["mean_gap_closed"]["tasks"] == ["mrpc"]
    one_seed = {"method": "x", "validation_ci": [float("nan"), float("nan")]}  # one seed: no interval, no claim
    assert all_positive_check(labels, [one_seed], {})["excluded_from_averages"]


def test_the_report_rebuilds_byte_identically(v3_study, tmp_path):
    from distill_trainer.study.cli.analyze import main

    write_v3_report(str(v3_study), str(tmp_path / "one"), RESAMPLES)
    main(["--plan", "v3", "--study_dir", str(v3_study), "--output_dir", str(tmp_path / "two"), "--resamples", "400"])
    for name in ("REPORT.md", "v3_results.json"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()
    report = (tmp_path / "one" / "REPORT.md").read_text()
    assert render_v3_report(json.loads((tmp_path / "one" / "v3_results.json").read_text())) == report
    for figure in ("comparisons.png", "scores_mnli.png", "scores_mrpc.png", "scores_sst2.png"):  # linked, drawn
        assert f"]({figure})" in report and (tmp_path / "one" / figure).read_bytes().startswith(b"\x89PNG")
    named = json.loads((tmp_path / "one" / "v3_results.json").read_text())
    named["tasks"]["sst2"]["teachers"][0]["method"] = "all-mpnet-base-v2"
    assert "Teachers `all-mpnet-base-v2`: their sentence-embedding pretraining included MNLI" in render_v3_report(
        named
    )
    assert "Teachers `" not in report
    assert "best teacher `t1` (column 1)" in report and "| t1 * | 90.00 | 90.00 |" in report
    assert "| secondary | `weighted` | `single: t1` | 2 (left out single: t1: 44) |" in report
    assert "Trained on: unrecorded." in report  # the fixture's records name no device
    assert "mrpc is left out of the averages across tasks" in report and WITHIN_MARGIN in report
    assert (
        "| reference (recomputed; 4 tasks) | single DeBERTa-base | 88.24 | RoBERTa-large | 90.98 | 87.16 | 28.3% |"
        in report
    )
    assert "| study v2 (4 tasks) | `average+calibrated` | 77.00 | n/a | 86.65 | 74.56 | 20.2% |" in report


def test_records_scored_on_other_dev_splits_are_refused(v3_study):
    path = v3_study / "sst2" / "teacher-t0-sst2" / "teacher_info.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "dev_split": {"positions": [1, 2]}}))
    with pytest.raises(ValueError, match="sst2: the teachers were scored on different dev splits"):
        analyze_v3_study(str(v3_study), RESAMPLES)


def test_runs_a_report_would_mix_are_refused_naming_them(v3_study):
    """Found by a review, each reproduced first: a second run of one seed was pooled (and replaced the other in the
    comparisons), a student of another task or size was compared, and a teacher's record edited after extraction
    (its stored logits score otherwise) was chosen and reported."""
    sst2 = v3_study / "sst2"
    shutil.copytree(sst2 / "student-average-seed42", sst2 / "student-average-seed42-backup")
    with pytest.raises(ValueError, match="'average' seed 42: .* are two runs of one seed"):
        analyze_v3_study(str(v3_study), RESAMPLES)
    shutil.rmtree(sst2 / "student-average-seed42-backup")
    shutil.copytree(v3_study / "mnli" / "student-none-seed42", sst2 / "student-none-seed99")
    with pytest.raises(ValueError, match="holds a mnli student in another task's folder"):
        analyze_v3_study(str(v3_study), RESAMPLES)
    shutil.rmtree(sst2 / "student-none-seed99")
    records = {path: path.read_text() for path in sst2.glob("student-average-seed*/eval_results.json")}
    for path, text in records.items():  # every seed of `average` is a 6-layer student, the other methods 3-layer
        path.write_text(json.dumps({**json.loads(text), "student_layers": "0,1,2,3,4,5"}))
    with pytest.raises(ValueError, match="sst2: .* are other students .*student_layers"):
        analyze_v3_study(str(v3_study), RESAMPLES)
    for path, text in records.items():
        path.write_text(text)
    path = sst2 / "teacher-t0-sst2" / "teacher_info.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "validation_score": 0.99}))
    with pytest.raises(ValueError, match="teacher t0 .* records validation accuracy 0.9900, and its logits .* 0.9500"):
        analyze_v3_study(str(v3_study), RESAMPLES)


def test_a_method_not_run_yet_is_named_and_the_rest_is_reported(v3_study, tmp_path):
    for seed in SEEDS:
        shutil.rmtree(v3_study / "mnli" / f"student-average-seed{seed}")
    result = write_v3_report(str(v3_study), str(tmp_path / "out"), RESAMPLES)
    primary = result["tasks"]["mnli"]["comparisons"]["primary"]
    assert primary["difference"] is None and primary["verdict"] == "not run: no student yet of `average`"
    assert result["holm_family"] == ["mnli", "mrpc", "sst2"]  # the secondary tests all ran
    report = (tmp_path / "out" / "REPORT.md").read_text()
    assert "| mnli (interim) | n/a | not run |" in report  # a task with planned runs missing is marked interim
    assert "Interim: a task whose planned runs are not all recorded yet" in report
    assert not (tmp_path / "out" / "scores_qqp.png").exists()  # a task without a record has no figure
    # and what the plan asks that no record has yet is said before any number, task by task
    missing = dict(result["main_missing"])
    assert missing["qqp"] == ["every run"] and "`average` seeds 42, 43, 44, 45, 46" in missing["mnli"]
    assert "1 of 3 teachers" in missing["sst2"] and "`fitted` seeds 42, 43, 44" in missing["sst2"]
    assert "`gating` seeds 42, 43, 44" in missing["mrpc"] and not any("gating" in m for m in missing["sst2"])
    assert report.index("**This study is not finished.**") < report.index("| task | primary")


def test_a_task_with_its_teachers_and_no_student_yet_is_reported(v3_study, tmp_path):
    for run in (v3_study / "mnli").glob("student-*"):  # teachers and logits recorded, the students still to run
        shutil.rmtree(run)
    result = write_v3_report(str(v3_study), str(tmp_path / "out"), RESAMPLES)
    mnli = result["tasks"]["mnli"]
    assert mnli["methods"] == [] and mnli["chosen"]["best_teacher"] == "t0" and mnli["gap"] is None
    secondary = mnli["comparisons"]["secondary"]
    assert secondary["a"] is None and secondary["difference"] is None
    assert secondary["verdict"] == "not run: no student yet of a multi-teacher method or `single: t0`"
    assert result["holm_family"] == ["mrpc", "sst2"]
    report = (tmp_path / "out" / "REPORT.md").read_text()
    section = report[report.index("## mnli") : report.index("## mrpc")]
    assert "its single student not run yet; best multi-teacher method not run yet" in section
    assert "No student recorded yet." in section and "| t0 * | 70.00 | 80.00 |" in section


def test_a_task_trained_on_several_devices_is_flagged(v3_study, tmp_path):
    for method, device in (("none", "cpu"), ("average", "NVIDIA H200")):
        path = v3_study / "mnli" / f"student-{method}-seed42" / "eval_results.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), "device": device}))
    result = write_v3_report(str(v3_study), str(tmp_path / "out"), RESAMPLES)
    assert result["tasks"]["mnli"]["devices"] == ["NVIDIA H200", "cpu", "unrecorded"]
    assert (
        "Trained on 3 devices (NVIDIA H200, cpu, unrecorded): the plan asks for one device"
        in (tmp_path / "out" / "REPORT.md").read_text()
    )


# The plan's two other parts (its last "Changes" entry): the low-resource regime and the 6-layer student.


def low_resource_students(labels):
    """SST-2 on 400 rows, seeds 42-44 (45 and 46 missing). Dev chooses t1 (validation would choose t0) and, as the
    best student, `confidence` (validation: `average`). Errors are nested, so each method vs `none` is exact."""
    errors = {  # method: (dev score, wrong rows)
        "none": (0.50, np.arange(120)),
        "single-0": (0.60, np.arange(100)),
        "single-1": (0.70, np.arange(110)),
        "single-2": (0.55, np.arange(5, 125)),  # as many errors as `none`, 10 rows apart: no difference
        "average": (0.75, np.arange(60)),
        "confidence": (0.80, np.arange(116)),  # 4 errors fewer than `none`: a small difference
    }
    return {m: (dev, {seed: wrong_on(labels, rows) for seed in SEEDS}) for m, (dev, rows) in errors.items()}


@pytest.fixture
def low_resource(tmp_path):
    root = tmp_path / "low-resource"
    labels = np.random.default_rng(1).integers(0, 2, 400)
    teachers = {"t0": (0.70, 0.85), "t1": (0.80, 0.75), "t2": (0.60, 0.80)}
    write_task(root, "sst2", labels, teachers, low_resource_students(labels))
    return root


def test_low_resource_primary_and_each_method_vs_none_with_holm(v3_study, low_resource):
    part = analyze_v3_parts(str(v3_study), str(low_resource), None, RESAMPLES)["low_resource"]
    assert part["status"] == "analyzed" and "secondary" not in part["results"]["comparisons"]
    chosen = part["results"]["chosen"]
    assert (chosen["best_teacher"], chosen["single"], chosen["best_student"]) == ("t1", "single: t1", "confidence")
    # the primary, recomputed here from the saved validation logits: average - single: t1, per seed
    labels = np.asarray(datasets.load_from_disk(str(low_resource / "sst2" / "logits"))["validation"]["label"])

    def accuracy(run):
        return float((np.load(low_resource / "sst2" / run / "validation_logits.npy").argmax(-1) == labels).mean())

    per_seed = [accuracy(f"student-average-seed{s}") - accuracy(f"student-single-1-seed{s}") for s in SEEDS]
    primary = part["results"]["comparisons"]["primary"]
    assert (primary["a"], primary["b"], primary["paired_seeds"]) == ("average", "single: t1", list(SEEDS))
    assert primary["per_seed"] == pytest.approx(per_seed) and primary["difference"] == pytest.approx(50 / 400)
    assert primary["ci_low"] > 0 and primary["verdict"] == "better, by more than 1 pp"
    tests = {c["a"]: c for c in part["vs_none"]}
    assert [c["a"] for c in part["vs_none"]] == [
        "single: t0",
        "single: t1",
        "single: t2",
        "average",
        "confidence",
    ]
    assert all(c["b"] == "none" for c in part["vs_none"]) and part["holm_family"] == sorted(tests)
    differences = {"single: t0": 20, "single: t1": 10, "single: t2": 0, "average": 60, "confidence": 4}
    for method, rows in differences.items():
        assert tests[method]["difference"] == pytest.approx(rows / 400)
    raw = {m: c["p_value"] for m, c in tests.items()}
    assert raw["average"] == raw["single: t1"] == 0.0 and raw["single: t2"] > 0.5 and 0 < raw["confidence"] < 0.2
    order = sorted(raw, key=lambda m: (raw[m], m))  # Holm by hand: the i-th smallest times (5 - i), running max
    expected, running = {}, 0.0
    for rank, method in enumerate(order):
        running = max(running, min(1.0, (5 - rank) * raw[method]))
        expected[method] = running
    assert {m: c["holm_p"] for m, c in tests.items()} == pytest.approx(expected)
    assert raw["single: t0"] == 0.0  # three p-values of 0, then confidence's (x 2), then single: t2's (x 1)
    assert tests["confidence"]["holm_p"] == pytest.approx(2 * raw["confidence"])
    assert tests["single: t2"]["holm_p"] == pytest.approx(max(2 * raw["confidence"], raw["single: t2"]))
    none, best = 1 - 120 / 400, 1 - 116 / 400  # the gap: confidence and t1 chosen on dev
    assert part["results"]["gap"]["gap_closed"] == pytest.approx((best - none) / (0.75 - none))
    assert part["missing"] == [f"`{m}` seeds 45, 46" for m in ["none", *list(tests)[:3], "average", "confidence"]]


def link_teachers(six, main, task):
    """The 6-layer study's task folder: its teachers and logits linked from the main study's, as compare.py's
    --teachers_from does; returns the teachers' names."""
    (six / task).mkdir(parents=True)
    for source in [*sorted((main / task).glob("teacher-*")), main / task / "logits"]:
        (six / task / source.name).symlink_to(source)
    return [p.name.removeprefix("teacher-") for p in sorted((main / task).glob("teacher-*"))]


@pytest.fixture
def six_layer(v3_study, tmp_path):
    """SST-2: every 6-layer student better than its 3-layer one; `average` without seed 44. MNLI: as the main
    study's, so its secondary test is inconclusive. No MRPC (not in this part's plan)."""
    root = tmp_path / "six-layer"
    labels = np.asarray(datasets.load_from_disk(str(v3_study / "sst2" / "logits"))["validation"]["label"])
    names = link_teachers(root, v3_study, "sst2")
    students = {
        "none": (0.70, {seed: wrong_on(labels, np.arange(300)) for seed in SEEDS}),
        "single-0": (0.85, {seed: wrong_on(labels, np.arange(300)) for seed in SEEDS}),
        "single-1": (0.86, {seed: wrong_on(labels, np.arange(200)) for seed in SEEDS}),
        "average": (0.88, {seed: wrong_on(labels, np.arange(40)) for seed in (42, 43)}),
        "weighted": (0.90, {seed: wrong_on(labels, np.arange(190)) for seed in SEEDS}),
    }
    write_students(root / "sst2", "sst2", labels, names, students)
    labels = np.asarray(datasets.load_from_disk(str(v3_study / "mnli" / "logits"))["validation"]["label"])
    names = link_teachers(root, v3_study, "mnli")
    swapped = {seed: wrong_on(labels, np.arange(15, 45), 3) for seed in SEEDS}
    students = {
        "none": (0.50, {seed: wrong_on(labels, np.arange(50), 3) for seed in SEEDS}),
        "single-0": (0.66, {seed: wrong_on(labels, np.arange(30), 3) for seed in SEEDS}),
        "single-1": (0.50, {seed: wrong_on(labels, np.arange(50), 3) for seed in SEEDS}),
        "average": (0.62, swapped),
        "weighted": (0.65, swapped),
    }
    write_students(root / "mnli", "mnli", labels, names, students, classes=3)
    return root


def test_six_layer_is_a_family_of_its_own_and_its_differences_from_three_layers(v3_study, six_layer):
    result = analyze_v3_parts(str(v3_study), None, str(six_layer), RESAMPLES)
    main = analyze_v3_study(str(v3_study), RESAMPLES)
    assert {k: result[k] for k in main} == main  # the main study's numbers and its Holm family untouched
    part = result["six_layer"]
    assert part["tasks"]["mnli"]["identical_predictions"] == [  # two names, one set of predictions: said
        {"methods": ["average", "weighted"], "seeds": list(SEEDS)},
        {"methods": ["none", "single: t1"], "seeds": list(SEEDS)},
    ]
    assert part["task_order"] == ["sst2", "mnli"] and part["holm_family"] == ["mnli", "sst2"]
    tests = {task: part["tasks"][task]["comparisons"]["secondary"] for task in ("mnli", "sst2")}
    assert (tests["sst2"]["a"], tests["sst2"]["b"]) == ("weighted", "single: t1")
    low, high = sorted(tests, key=lambda task: (tests[task]["p_value"], task))
    assert tests[low]["holm_p"] == pytest.approx(min(1.0, 2 * tests[low]["p_value"]))  # a family of two
    assert tests[high]["holm_p"] == pytest.approx(max(tests[low]["holm_p"], tests[high]["p_value"]))
    assert tests["sst2"]["holm_p"] != main["tasks"]["sst2"]["comparisons"]["secondary"]["holm_p"]
    rows = {d["method"]: d for d in part["layer_differences"]["sst2"]["rows"]}
    assert list(rows) == ["none", "single: t1", "average"]
    three_none = [1 - (400 + 2 * (seed - 42)) / 2000 for seed in SEEDS]  # the main study's `none`, per seed
    assert rows["none"]["per_seed"] == pytest.approx([1 - 300 / 2000 - a for a in three_none])
    assert rows["none"]["difference"] == pytest.approx(np.mean([1 - 300 / 2000 - a for a in three_none]))
    assert rows["single: t1"]["difference"] == pytest.approx(50 / 2000)
    assert rows["average"]["paired_seeds"] == [42, 43] and rows["average"]["unpaired_seeds"] == {
        "3-layer": [44],
        "6-layer": [],
    }
    assert rows["average"]["difference"] == pytest.approx(10 / 2000) and "p_value" not in rows["average"]
    assert rows["none"]["ci_low"] <= rows["none"]["difference"] <= rows["none"]["ci_high"]
    assert "`confidence` seeds 42, 43, 44" in part["missing"]["sst2"]  # the plan's third cut: 3 seeds
    assert "`average` seeds 44, 45, 46" in part["missing"]["sst2"]
    assert "gap" not in part["tasks"]["sst2"] or part["tasks"]["sst2"]["gap"] is None


def test_parts_not_run_yet_partial_and_byte_identical(v3_study, low_resource, six_layer, tmp_path):
    from distill_trainer.study.cli.analyze import main

    write_v3_report(str(v3_study), str(tmp_path / "plain"), RESAMPLES)
    empty = {"low_resource_dir": str(tmp_path / "empty"), "six_layer_dir": str(tmp_path / "empty")}
    (tmp_path / "empty").mkdir()
    write_v3_report(str(v3_study), str(tmp_path / "empty-parts"), RESAMPLES, **empty)
    plain = (tmp_path / "plain" / "REPORT.md").read_text()
    assert plain == (tmp_path / "empty-parts" / "REPORT.md").read_text()
    assert "## Low-resource regime (SST-2, 1,000 labelled rows; dev = 100 of them)\n\nNot run yet.\n" in plain
    assert "\n\nCut for the compute budget, in the plan's order" in plain
    assert plain.endswith(f"## 6-layer student (MNLI)\n\n{SIX_LAYER_CUTS}\n\nNot run yet.\n")
    results = json.loads((tmp_path / "plain" / "v3_results.json").read_text())
    assert results["low_resource"] == results["six_layer"] == {"status": "not run yet"}
    options = ["--low_resource_dir", str(low_resource), "--six_layer_dir", str(six_layer), "--resamples", "400"]
    for out in ("one", "two"):
        main(["--plan", "v3", "--study_dir", str(v3_study), "--output_dir", str(tmp_path / out), *options])
    for name in ("REPORT.md", "v3_results.json"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()
    report = (tmp_path / "one" / "REPORT.md").read_text()
    main_part = plain.split("## Low-resource regime")[0]
    assert report.startswith(main_part) and report != plain  # the main study's part as without the parts
    assert render_v3_report(json.loads((tmp_path / "one" / "v3_results.json").read_text())) == report
    assert "| `none` | 79.90 (3 seeds) | 70.00 (3 seeds) |" in report  # full labels beside the low-resource
    assert "(SST-2, 1,000 labelled rows; dev = 100 of them)\n\n**Interim**: not every run the plan asks" in report
    assert "| single of the best teacher by dev | `single: t1` 87.50 (3 seeds) | `single: t1` 72.50 (3 seeds) |" in (
        report
    )
    assert "| vs `none` | `confidence` | `none` | 3 | +1.00 pp |" in report
    assert "### sst2, 6-layer student (accuracy, 2000 validation rows)" in report
    assert "`average` and `weighted` predicted the same validation labels on every seed both have (42, 43, 44)." in (
        report
    )
    assert "| `average` | 2 (left out 3-layer: 44) | +0.50 pp |" in report
    assert (
        "Missing from the 6-layer student's sst2 (the plan: 3 teachers, seeds 42-46 of each method, 42-44 of "
        "`confidence` and `fitted`): 1 of 3 teachers" in report  # the one not recorded
    )
    # students, but not yet the chosen teacher's single student
    for seed in SEEDS:
        shutil.rmtree(low_resource / "sst2" / f"student-single-1-seed{seed}")
    result = write_v3_report(str(v3_study), str(tmp_path / "no-single"), RESAMPLES, low_resource_dir=str(low_resource))
    no_single = (tmp_path / "no-single" / "REPORT.md").read_text()
    assert "| single of the best teacher by dev | `single: t1` 87.50 (3 seeds) | not run yet |" in no_single
    # a partial folder: teachers and logits, no student yet; a part's folder without the plan's task
    shutil.rmtree(low_resource / "sst2")
    write_task(low_resource, "sst2", np.zeros(40, int), {"t0": (0.7, 0.8)}, {})
    shutil.rmtree(six_layer / "sst2")
    parts = {"low_resource_dir": str(low_resource), "six_layer_dir": str(six_layer)}
    result = write_v3_report(str(v3_study), str(tmp_path / "partial"), RESAMPLES, **parts)
    assert result["low_resource"]["status"] == "teachers only: no student run yet"
    assert result["six_layer"]["task_order"] == ["mnli"] and "sst2" not in result["six_layer"]["missing"]  # cut
    partial = (tmp_path / "partial" / "REPORT.md").read_text()
    assert "Teachers only: no student run yet.\n\nMissing from the low-resource regime" in partial
    assert ": 2 of 3 teachers; every student (seeds 42-46)." in partial  # its one teacher is recorded


def test_analyze_refuses_a_part_folder_that_is_not_there_or_a_part_without_plan_v3(v3_study, tmp_path):
    """A mistyped part folder must not read as "not run yet", and a part's option must not be ignored by another
    plan: both are refused before anything is written."""
    from distill_trainer.study.cli.analyze import main

    output = tmp_path / "out"
    for option in ("--low_resource_dir", "--six_layer_dir"):
        typo = ["--plan", "v3", "--study_dir", str(v3_study), option, str(tmp_path / "v3-6layr")]
        with pytest.raises(ValueError, match=f"{option.removeprefix('--')} .*v3-6layr.* is not a folder"):
            main([*typo, "--output_dir", str(output)])
        other_plan = ["--plan", "causal", "--study_dir", str(v3_study), option, str(v3_study)]
        with pytest.raises(ValueError, match=f"{option} is a part of study v3's report: it needs --plan v3"):
            main([*other_plan, "--output_dir", str(output)])
    with pytest.raises(ValueError, match="--study_dir .*no-study.* is not a folder"):
        main(["--plan", "v3", "--study_dir", str(tmp_path / "no-study"), "--output_dir", str(output)])
    v3 = ["--plan", "v3", "--study_dir", str(v3_study), "--output_dir", str(output)]
    with pytest.raises(ValueError, match="low_resource_dir .* is the main study's folder"):  # found by a review
        main([*v3, "--low_resource_dir", str(v3_study)])
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "qnli").mkdir()
    with pytest.raises(ValueError, match="six_layer_dir .*other.* holds no mnli/ folder"):
        main([*v3, "--six_layer_dir", str(tmp_path / "other")])
    with pytest.raises(ValueError, match="--resamples 0: the paired bootstrap needs at least 1"):
        main([*v3, "--resamples", "0"])
    assert not output.exists()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "REPORT.md").write_text("my own report")
    with pytest.raises(ValueError, match="holds a REPORT.md that this plan did not write .no v3_results.json"):
        main(["--plan", "v3", "--study_dir", str(v3_study), "--output_dir", str(mine)])
    assert (mine / "REPORT.md").read_text() == "my own report"
