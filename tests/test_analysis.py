"""The analyses on hand-built cases whose answers are worked out by hand, and the report on a fixture study."""

import json
import shutil

import datasets
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import f1_score, matthews_corrcoef

from distill_trainer import attach_teacher_logits
from distill_trainer.study.analysis import (
    accuracy_by_region,
    aggregate_seeds,
    agreement_regions,
    failure_categories,
    failure_table,
    gap_closed,
    gap_table,
    multi_teacher_advantage,
    paired_bootstrap,
    teacher_confidence,
)
from distill_trainer.study.analysis.report import analyze_study
from distill_trainer.study.analysis.stats import metric_on_resamples
from distill_trainer.study.runs import StudentResult, TeacherRecord

# Six examples, three teachers, three labels. Teacher votes per example and why:
LABELS = np.array([0, 1, 2, 0, 1, 2])
VOTES = np.array(
    [
        [0, 0, 0],  # all agree, right
        [1, 1, 0],  # partial disagreement, two right
        [0, 1, 2],  # full disagreement, the third right
        [1, 1, 1],  # all agree, all wrong
        [1, 1, 1],  # all agree, right
        [0, 0, 1],  # partial disagreement, all wrong
    ]
)
STUDENT = np.array([0, 0, 1, 1, 0, 0])  # right only on example 0


def one_hot_logits(votes, labels=3):
    return 5.0 * np.eye(labels)[votes]  # [n, teachers, labels]


def test_agreement_regions_and_accuracy_in_each():
    regions = agreement_regions(one_hot_logits(VOTES))
    assert list(regions) == [
        "all_agree",
        "partial_disagree",
        "full_disagree",
        "all_agree",
        "all_agree",
        "partial_disagree",
    ]
    table = accuracy_by_region(regions, {"student": STUDENT, "oracle": LABELS}, LABELS)
    assert table.loc["student"].tolist() == pytest.approx([1 / 3, 0.0, 0.0])
    assert table.loc["oracle"].tolist() == [1.0, 1.0, 1.0]
    assert table.loc["examples"].tolist() == [3, 2, 1]
    two_teachers = agreement_regions(one_hot_logits(VOTES[:, :2]))  # with two teachers a disagreement is full
    assert list(two_teachers) == ["all_agree", "all_agree", "full_disagree", "all_agree", "all_agree", "all_agree"]


def test_failure_categories_by_hand():
    categories = failure_categories(one_hot_logits(VOTES), STUDENT, LABELS)
    assert list(categories) == [
        "",
        "error_on_disagreement",
        "error_on_disagreement",
        "all_teachers_wrong",
        "teachers_right",
        "all_teachers_wrong",
    ]
    table = failure_table(one_hot_logits(VOTES), {"student": np.eye(3)[STUDENT]}, LABELS)  # logits work too
    assert table.loc["student"].to_dict() == {
        "all_teachers_wrong": 2,
        "error_on_disagreement": 2,
        "teachers_right": 1,
        "errors": 5,
    }


def test_teacher_confidence_by_hand():
    logits = np.array([[[0.0, np.log(3.0)]], [[np.log(99.0), 0.0]]])  # probabilities .75 and .99
    table = teacher_confidence(logits, ["t"]).iloc[0]
    assert table.mean_max_prob == pytest.approx((0.75 + 0.99) / 2)
    entropy = lambda p: -(p * np.log(p) + (1 - p) * np.log(1 - p))  # noqa: E731
    assert table.mean_entropy == pytest.approx((entropy(0.75) + entropy(0.99)) / 2)
    assert table.pct_high_confidence == 50.0


def test_gap_closed_and_seed_aggregation():
    assert gap_closed(0.8, 0.7, 0.9) == pytest.approx(0.5)
    assert np.isnan(gap_closed(0.8, 0.7, 0.7))  # no gap to close
    runs = pd.DataFrame(
        {
            "task": "sst2",
            "seed": [None, None, 1, 2, 3, 1, 2, 3, 1, 2, 3],
            "method": ["teacher: a", "teacher: b"] + ["none"] * 3 + ["single: a"] * 3 + ["average"] * 3,
            "type": ["teacher", "teacher"] + ["baseline"] * 3 + ["single"] * 3 + ["multi"] * 3,
            "score": [0.90, 0.85, 0.70, 0.70, 0.70, 0.80, 0.82, 0.84, 0.75, 0.80, 0.85],
        }
    )
    aggregated = aggregate_seeds(runs).set_index("method")
    single = aggregated.loc["single: a"]
    assert (single.n, single["mean"], single["std"]) == (3, pytest.approx(0.82), pytest.approx(0.02))
    half_width = 4.302653 * 0.02 / np.sqrt(3)  # t(0.975, df=2)
    assert (single.ci_low, single.ci_high) == (
        pytest.approx(0.82 - half_width, abs=1e-6),
        pytest.approx(0.82 + half_width, abs=1e-6),
    )
    assert np.isnan(aggregated.loc["teacher: a", "std"])  # one run: no interval
    gaps = gap_table(aggregate_seeds(runs)).set_index("method")
    assert gaps.loc["single: a", "gap_closed"] == pytest.approx((0.82 - 0.70) / (0.90 - 0.70))
    advantage = multi_teacher_advantage(aggregate_seeds(runs)).iloc[0]
    assert (advantage.best_multi, advantage.best_single) == ("average", "single: a")
    assert advantage.advantage == pytest.approx(0.80 - 0.82)


def test_vectorised_metrics_match_scikit_learn():
    generator = np.random.default_rng(0)
    predictions, labels = generator.integers(0, 2, 200), generator.integers(0, 2, 200)
    everything = np.arange(200)[None]
    assert metric_on_resamples("accuracy", predictions, labels, everything)[0] == pytest.approx(
        (predictions == labels).mean()
    )
    assert metric_on_resamples("f1", predictions, labels, everything)[0] == pytest.approx(
        f1_score(labels, predictions)
    )
    assert metric_on_resamples("matthews_correlation", predictions, labels, everything)[0] == pytest.approx(
        matthews_corrcoef(labels, predictions)
    )


def test_paired_bootstrap_known_answers():
    labels = np.arange(100) % 2
    same = paired_bootstrap(labels, labels, labels, resamples=500)
    assert (same["difference"], same["p_value"]) == (0.0, 1.0)
    better = paired_bootstrap(labels, 1 - labels, labels, resamples=500)  # always right vs always wrong
    assert (better["difference"], better["ci_low"], better["p_value"]) == (1.0, 1.0, 0.0)
    noisy = labels.copy()
    noisy[:3] = 1 - noisy[:3]  # three errors out of 100: not distinguishable from perfect
    close = paired_bootstrap(np.stack([labels, labels]), np.stack([noisy, noisy]), labels, resamples=2000)
    assert close["difference"] == pytest.approx(0.03) and close["ci_low"] <= 0 < close["ci_high"]
    assert close["p_value"] > 0.05 and close["seeds"] == (2, 2)
    with pytest.raises(ValueError, match="cover"):
        paired_bootstrap(labels[:10], labels, labels)


@pytest.fixture
def fixture_study(tmp_path):
    """A study folder as compare.py + sweep.py leave it: 2 teachers, baseline, 2 singles, average; 2 seeds."""
    task_dir = tmp_path / "study" / "sst2"
    generator = np.random.default_rng(1)
    labels = generator.integers(0, 2, 40)
    teacher_votes = np.stack([labels, np.where(np.arange(40) < 30, labels, 1 - labels)], 1)  # teacher 1: 10 errors
    validation = datasets.Dataset.from_dict({"sentence": [f"s{i}" for i in range(40)], "label": labels.tolist()})
    logits = attach_teacher_logits(
        validation, 3.0 * np.eye(2)[teacher_votes], ["t0", "t1"], ["negative", "positive"], ["sentence"], task="sst2"
    )
    datasets.DatasetDict({"train": logits, "validation": logits}).save_to_disk(str(task_dir / "logits"))
    for name, score in (("t0", 1.0), ("t1", 0.75)):
        (task_dir / f"teacher-{name}").mkdir(parents=True)
        TeacherRecord(
            name=name,
            base_model="base",
            task="sst2",
            metric="accuracy",
            validation_score=score,
            train_rows=40,
            train_runtime=120.0 if name == "t0" else None,  # t1: from before runtimes were recorded
            device="cpu" if name == "t0" else None,
            learning_rate=3e-5 if name == "t0" else 1e-5,
            epochs_trained=3.0 if name == "t0" else 6.0,  # t0: early-stopped; t1: still improving at its cap
            best_epoch=2.0 if name == "t0" else 6.0,
            collapsed_learning_rates=None if name == "t0" else [3e-5],
        ).save(str(task_dir / f"teacher-{name}"))
    teachers = [{"name": "t0", "validation_score": 1.0}, {"name": "t1", "validation_score": 0.75}]
    wrong = {"none": 12, "single-0": 4, "single-1": 8, "average": 6}  # errors per student, on the last rows
    for method, errors in wrong.items():
        for seed in (1, 2):
            folder = task_dir / f"student-{method}-seed{seed}"
            folder.mkdir()
            predicted = labels.copy()
            predicted[40 - errors - seed + 1 :] = 1 - predicted[40 - errors - seed + 1 :]
            np.save(folder / "validation_logits.npy", np.eye(2)[predicted].astype(np.float32))
            fusion, index = (method.split("-")[0], int(method[-1])) if method.startswith("single") else (method, None)
            StudentResult(
                task="sst2",
                metric="accuracy",
                score=float((predicted == labels).mean()),
                fusion=fusion,
                teacher_index=index,
                seed=seed,
                temperature=6.0,
                alpha=0.7,
                teachers=teachers,
                train_rows=40,
                train_runtime=30.0,
                device="NVIDIA H200" if seed == 1 else None,  # seed 2: from before devices were recorded
            ).save(str(folder))
    cells = []
    for t in (3, 6):
        for a in (0.5, 0.7):
            cell = task_dir / "sweep-average" / f"T{t}-alpha{a}"
            cell.mkdir(parents=True)
            predicted = labels.copy()
            predicted[: t // 3] = 1 - predicted[: t // 3]  # T=3: 1 error, T=6: 2 errors -> 1 row changed by T
            np.save(cell / "validation_logits.npy", np.eye(2)[predicted].astype(np.float32))
            cells.append(
                {
                    "task": "sst2",
                    "fusion": "average",
                    "teacher_index": None,
                    "seed": 1,
                    "temperature": t,
                    "alpha": a,
                    "metric": "accuracy",
                    "score": 0.8 + 0.01 * t - 0.02 * a,
                    "run": cell.name,
                }
            )
    pd.DataFrame(cells).to_csv(task_dir / "sweep-average" / "grid.csv", index=False)
    return tmp_path / "study"


def test_report_on_a_fixture_study(fixture_study, tmp_path):
    out = tmp_path / "results"
    (fixture_study / "mrpc" / "teacher-t0").mkdir(parents=True)  # a task whose students have not run yet
    TeacherRecord(name="t0", base_model="base", task="mrpc", metric="f1", validation_score=0.8).save(
        str(fixture_study / "mrpc" / "teacher-t0")
    )
    metrics = analyze_study(str(fixture_study), str(out), resamples=500)
    assert "mrpc" not in metrics
    sst2 = metrics["sst2"]
    assert sst2["baseline"] == pytest.approx(((40 - 12) / 40 + (40 - 13) / 40) / 2)
    assert sst2["best_single"] == {"method": "single: t0", "mean": pytest.approx(((40 - 4) / 40 + (40 - 5) / 40) / 2)}
    assert sst2["best_multi"]["method"] == "average" and sst2["seeds"] == [1, 2]
    assert sst2["tests"]["multi_vs_single"]["difference"] == pytest.approx(-0.05)  # 2 more errors per seed
    (each,) = sst2["tests"]["each_multi_vs_single"]  # one multi-teacher method here
    assert each["a"] == "average" and each["difference"] == pytest.approx(-0.05)
    assert sst2["teacher_agreement_rate"] == 0.75 and sst2["multi_teacher_advantage"] == pytest.approx(-0.05)
    assert metrics["grids"][0]["best_temperature"] == 6 and metrics["grids"][0]["best_alpha"] == 0.5
    master = pd.read_csv(out / "master_results.csv")
    assert len(master) == 3 + 4 * 2 and set(master.type) == {
        "teacher",
        "baseline",
        "single",
        "multi",
    }  # mrpc teacher too
    for png in (
        "gap_analysis.png",
        "ranking_heatmap.png",
        "agreement_breakdown_sst2.png",
        "failure_categories_sst2.png",
        "grid_sst2_sweep-average.png",
    ):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"
    report = (out / "REPORT.md").read_text()
    assert "single-teacher wins" in report or "no significant difference" in report
    assert f"{100 * sst2['baseline']:.2f}" in report and "Best cell T=6, alpha=0.5" in report
    # 2 teachers, 2 classes: every disagreement is a full one, and the empty region is named, not tabled
    assert "| method | all_agree | full_disagree |" in report and "no example falls in partial_disagree" in report
    # spread between temperatures 3 pp; seed std 1.77 pp (one error in 40 between the two seeds)
    grid = metrics["grids"][0]
    assert grid["temperature_spread"] == pytest.approx(0.03) and grid["seed_std"] == pytest.approx(0.025 / np.sqrt(2))
    assert "does not separate the temperatures" in report
    assert "| average | -5.00 pp |" in report
    assert "Multi-teacher methods significantly above the best single-teacher student: none.\n\n" in report
    assert grid["predictions_changed_by_temperature"] == {0.5: 1, 0.7: 1} and "alpha=0.5: 1, alpha=0.7: 1." in report
    assert "softer than the reference" not in report
    assert (
        "teachers 2.0 minutes on cpu (1 of 2 runs recorded it); students 4.0 minutes (2.0 on NVIDIA H200, 2.0 on "
        "an unrecorded device; 8 of 8 runs recorded it)" in report
    )  # these teachers have 0.953 mean max probability
    assert "| t0 | 100.00 | 3 | 2 | early stopping: no gain for 1 epoch(s) | 3e-05 | cpu | 2.0 |" in report
    t1_row = "| t1 | 75.00 | 6 | 6 | epoch cap, still improving | 1e-05 (collapsed at 3e-05) | unrecorded | n/a |"
    assert t1_row in report
    assert json.loads((out / "success_metrics.json").read_text())["sst2"]["seeds"] == [1, 2]
    # side by side with the reference, by role; the derived rows computed from both tables alike
    assert "## Side by side with the reference study" in report and "| role | sst2 reference | sst2 ours |" in report
    rows = {row["role"]: row for row in metrics["reference_comparison"]}
    assert rows["baseline (no distillation)"]["sst2 reference"] == "90.60"
    assert rows["baseline (no distillation)"]["sst2 ours"] == f"{100 * sst2['baseline']:.2f} ± 1.77"
    assert (
        rows["multi - single (pp)"]["sst2 reference"] == "+1.15"
        and rows["multi - single (pp)"]["sst2 ours"] == "-5.00"
    )
    assert (
        rows["gap closed by the best distilled student"]["sst2 reference"] == "38%"
    )  # (92.55 - 90.6) / (95.76 - 90.6)


def test_a_study_whose_distilled_students_have_not_run_yet_is_reported(fixture_study, tmp_path):
    for folder in (fixture_study / "sst2").glob("student-*"):
        if not folder.name.startswith("student-none-"):
            shutil.rmtree(folder)
    metrics = analyze_study(str(fixture_study), str(tmp_path / "results"), resamples=50)
    assert metrics["sst2"]["baseline"] == pytest.approx(((40 - 12) / 40 + (40 - 13) / 40) / 2)
    assert metrics["sst2"]["best_single"] is None and metrics["sst2"]["tests"] == {}


def test_a_sweep_over_several_methods_is_one_grid_per_method(tmp_path):
    from distill_trainer.study.analysis.collect import collect_grids

    folder = tmp_path / "sst2" / "sweep-methods"
    folder.mkdir(parents=True)
    cells = [(m, t) for m in ("average", "gating") for t in (3.0, 9.0)]
    pd.DataFrame(
        {"method": [m for m, _ in cells], "temperature": [t for _, t in cells], "alpha": 0.7, "score": 0.8}
    ).to_csv(folder / "grid.csv", index=False)
    grids = collect_grids(str(tmp_path))
    assert sorted(set(grids.grid)) == ["sweep-methods: average", "sweep-methods: gating"]


def test_paired_bootstrap_counts_seed_noise():
    """A 2 pp difference in mean over seeds that disagree by 10 pp among themselves is not significant."""
    labels = np.arange(1000) % 2

    def with_accuracy(accuracy, offset):  # errors on a block of rows that moves with the seed
        predicted = labels.copy()
        wrong = (offset + np.arange(int(round((1 - accuracy) * 1000)))) % 1000
        predicted[wrong] = 1 - predicted[wrong]
        return predicted

    a = np.stack([with_accuracy(acc, 100 * i) for i, acc in enumerate((0.70, 0.90, 0.80))])
    b = np.stack([with_accuracy(acc, 100 * i + 50) for i, acc in enumerate((0.78, 0.77, 0.79))])
    result = paired_bootstrap(a, b, labels, resamples=2000)
    assert result["difference"] == pytest.approx(0.02) and result["ci_low"] < 0 < result["ci_high"]


# ---- what must not be tabulated (issue 27) ----------------------------------------------------------------


def edit_record(folder, **changes) -> None:
    record = json.loads((folder / "eval_results.json").read_text())
    record.update(changes)
    (folder / "eval_results.json").write_text(json.dumps(record))


@pytest.mark.parametrize(
    "changes",
    [{"temperature": 3.0}, {"alpha": 0.5}, {"student_layers": "0,1"}, {"labelled_rows": 10}, {"max_length": 32}],
)
def test_runs_of_one_method_with_other_settings_are_not_pooled_as_seeds(fixture_study, tmp_path, changes):
    edit_record(fixture_study / "sst2" / "student-average-seed2", **changes)
    with pytest.raises(ValueError, match=r"sst2 'average': .*seed1 and .*seed2 were trained with other settings"):
        analyze_study(str(fixture_study), str(tmp_path / "out"), resamples=50)


def test_runs_scored_on_other_validation_rows_are_not_compared(fixture_study, tmp_path):
    folder = fixture_study / "sst2" / "student-none-seed1"
    for method in ("none", "single-0", "single-1", "average"):
        for seed in (1, 2):
            edit_record(fixture_study / "sst2" / f"student-{method}-seed{seed}", eval_rows=40)
    edit_record(folder, eval_rows=24)
    with pytest.raises(
        ValueError, match=r"sst2: the students were scored on different validation rows .*1 runs scored 24 rows"
    ):
        analyze_study(str(fixture_study), str(tmp_path / "out"), resamples=50)


def test_an_edited_score_is_refused_against_the_runs_own_logits(fixture_study, tmp_path):
    folder = fixture_study / "sst2" / "student-average-seed1"
    recorded = json.loads((folder / "eval_results.json").read_text())["score"]
    edit_record(folder, score=recorded + 0.05)
    with pytest.raises(ValueError, match=rf"student-average-seed1: .*records accuracy {recorded + 0.05:.6f}.*scores"):
        analyze_study(str(fixture_study), str(tmp_path / "out"), resamples=50)


def test_students_of_a_teacher_whose_stored_logits_do_not_reproduce_it_are_marked(fixture_study, tmp_path):
    record = json.loads((fixture_study / "sst2" / "teacher-t1" / "teacher_info.json").read_text())
    record["validation_score"] = 0.9  # its stored logits score 0.75
    (fixture_study / "sst2" / "teacher-t1" / "teacher_info.json").write_text(json.dumps(record))
    analyze_study(str(fixture_study), str(tmp_path / "out"), resamples=50)
    report = (tmp_path / "out" / "REPORT.md").read_text()
    assert "stored logits of teacher `t1` score 75.00%, but its record says 90.00%" in report
    assert "| average † | multi |" in report and "| single: t1 † | single |" in report
    assert "| single: t0 | single |" in report and "| none | baseline |" in report


def test_the_analysis_never_runs_a_model_and_refuses_a_run_without_its_logits(fixture_study, tmp_path):
    folder = fixture_study / "sst2" / "student-average-seed1"
    (folder / "validation_logits.npy").unlink()
    with pytest.raises(
        FileNotFoundError, match=r"student-average-seed1 has no validation_logits.npy.*save_validation"
    ):
        analyze_study(str(fixture_study), str(tmp_path / "out"), resamples=50)


def test_save_validation_logits_writes_what_the_analysis_reads(tmp_path):
    from helpers import tiny_student, tiny_tokenizer

    from distill_trainer.study.analysis.collect import student_predictions
    from distill_trainer.study.training import save_validation_logits

    tiny_student().save_pretrained(tmp_path)
    tiny_tokenizer().save_pretrained(tmp_path)
    StudentResult(
        task="sst2", metric="accuracy", score=0.5, fusion="none", temperature=1.0, alpha=0.0, seed=0, eval_rows=3
    ).save(str(tmp_path))
    validation = datasets.Dataset.from_dict(
        {"sentence": ["good film", "bad plot", "the actor", "dull"], "label": [1, 0, 1, 0]}
    )
    logits = save_validation_logits(str(tmp_path), validation, "sst2")
    assert logits.shape == (3, 2)
    np.testing.assert_array_equal(student_predictions(str(tmp_path), "sst2"), logits.argmax(-1))
    dev_logits = save_validation_logits(str(tmp_path), validation, "sst2", split="dev")  # every dev row: no eval_rows
    np.testing.assert_array_equal(np.load(tmp_path / "dev_logits.npy"), dev_logits)
    assert dev_logits.shape == (4, 2) and not (tmp_path / "predict-tmp").exists()
    with pytest.raises(ValueError, match="split must be one of \\['dev', 'validation'\\]"):
        save_validation_logits(str(tmp_path), validation, "sst2", split="test")


def test_a_regression_student_that_predicts_one_value_is_not_called_edited(tmp_path):
    """Found by a review: its Pearson correlation is NaN in its record and from its logits, which never compared
    equal, so the report refused it as an edited record."""
    from distill_trainer.study.analysis.collect import check_recorded_score

    labels = datasets.Dataset.from_dict({"label": [0.0, 1.0, 2.5, 4.0]})
    datasets.DatasetDict({"validation": labels}).save_to_disk(str(tmp_path / "stsb" / "logits"))
    run = tmp_path / "stsb" / "student-none-seed42"
    run.mkdir()
    np.save(run / "validation_logits.npy", np.full((4, 1), 2.0, dtype=np.float32))
    record = StudentResult(task="stsb", metric="pearson", score=float("nan"), fusion="none", temperature=6.0,
                           alpha=0.0, seed=42)  # fmt: skip
    check_recorded_score(str(tmp_path), str(run), record)
    with pytest.raises(ValueError, match="records pearson 0.500000, but its own validation_logits.npy scores nan"):
        check_recorded_score(str(tmp_path), str(run), StudentResult(**{**record.__dict__, "score": 0.5}))


def test_saved_logits_of_other_rows_than_the_scores_are_named(tmp_path):
    """Found by a review: logits longer than the labels failed inside the metric with an unclear length error, and
    a file of fewer rows than the record's eval_rows was scored on a prefix of the labels."""
    from distill_trainer.study.analysis.collect import check_recorded_score

    labels = datasets.Dataset.from_dict({"label": [0, 1, 1, 0]})
    datasets.DatasetDict({"validation": labels, "dev": labels}).save_to_disk(str(tmp_path / "sst2" / "logits"))
    run = tmp_path / "sst2" / "student-none-seed42"
    run.mkdir()
    record = StudentResult(task="sst2", metric="accuracy", score=1.0, fusion="none", temperature=6.0, alpha=0.0,
                           seed=42, eval_rows=4, dev_score=1.0)  # fmt: skip
    right = np.asarray([[1, 0], [0, 1], [0, 1], [1, 0]], dtype=np.float32)
    np.save(run / "validation_logits.npy", right)
    np.save(run / "dev_logits.npy", right)
    check_recorded_score(str(tmp_path), str(run), record)
    for file, logits, rows in (
        ("validation_logits.npy", np.concatenate([right, right[:1]]), "5 rows, and its record's accuracy .* 4"),
        ("validation_logits.npy", right[:3], "3 rows, and its record's accuracy .* 4"),
        ("dev_logits.npy", right[:2], "2 rows, and its record's dev_score .* 4"),
    ):
        np.save(run / "validation_logits.npy", right)
        np.save(run / "dev_logits.npy", right)
        np.save(run / file, logits)
        with pytest.raises(ValueError, match=f"{file} holds {rows}"):
            check_recorded_score(str(tmp_path), str(run), record)
