"""Every GLUE task through the recipes on real rows of ../shared/data/glue (small row limits, tiny models), and
STS-B's regression distillation: the loss against an independent computation, the fusions that apply to
scalar predictions, the ones refused, and the regression analyses."""

import json
import os
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import tiny_config, tiny_student, tiny_tokenizer
from scipy.stats import pearsonr

from distill_trainer import DistillationTrainer, fit_fusion_weights, fit_teacher_temperatures, kd_loss
from distill_trainer.study.tasks import TASKS, load_task_split

ROOT = Path(__file__).resolve().parents[1]
GLUE = ROOT.parent / "shared" / "data" / "glue"
sys.path.insert(0, str(ROOT / "recipes"))
import analyze  # noqa: E402
import compare  # noqa: E402
import distill  # noqa: E402
import extract_logits  # noqa: E402
import sweep  # noqa: E402
import train_teacher  # noqa: E402

needs_glue = pytest.mark.skipif(not GLUE.is_dir(), reason="needs ../shared/data/glue")
PRIMARY = {
    "cola": "matthews_correlation",
    "sst2": "accuracy",
    "mrpc": "f1",
    "qqp": "f1",
    "stsb": "pearson",
    "mnli": "accuracy",
    "qnli": "accuracy",
    "rte": "accuracy",
    "wnli": "accuracy",
}
QUIET = ["--report_to", "none", "--use_cpu", "true", "--disable_tqdm", "true", "--save_strategy", "no"]


def common(task: str, train_rows: int = 96, eval_rows: int = 48, training: bool = True) -> list[str]:
    rows = ["--max_train_rows", str(train_rows), "--max_eval_rows", str(eval_rows)]
    return ["--task", task, "--data", str(GLUE), "--max_length", "32", *rows, *(QUIET if training else [])]


def save_tiny_model(folder: Path) -> str:
    tiny_student().save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    return str(folder)


def test_every_task_names_its_primary_metric():
    assert {name: task.metric for name, task in TASKS.items()} == PRIMARY
    assert [name for name, task in TASKS.items() if task.is_regression] == ["stsb"]


def test_regression_kd_loss_against_an_independent_computation():
    student, teacher = torch.tensor([[1.0], [2.5], [-0.5]]), torch.tensor([[1.5], [2.0], [0.5]])
    labels = torch.tensor([1.2, 3.0, -100.0])  # the last row is unlabelled: it learns from the teacher only
    to_teacher = ((1.0 - 1.5) ** 2 + (2.5 - 2.0) ** 2 + (-0.5 - 0.5) ** 2) / 3
    to_label = ((1.0 - 1.2) ** 2 + (2.5 - 3.0) ** 2) / 2
    loss = kd_loss(student, teacher, labels, temperature=6.0, alpha=0.3)
    assert loss.item() == pytest.approx(0.3 * to_teacher + 0.7 * to_label)
    assert kd_loss(student, teacher, labels, temperature=6.0, alpha=1.0).item() == pytest.approx(to_teacher)


def test_regression_ignores_the_temperature_and_says_so_once(caplog):
    student, teacher, labels = torch.zeros(2, 1), torch.ones(2, 1), torch.zeros(2)
    with caplog.at_level("WARNING"):
        losses = [kd_loss(student, teacher, labels, temperature=t, alpha=0.5).item() for t in (2.0, 9.0, 2.0)]
    assert losses == [pytest.approx(0.5)] * 3
    assert sum("does not apply to regression" in r.message for r in caplog.records) <= 1


def test_fitted_regression_weights_minimise_the_squared_error():
    rng = np.random.default_rng(0)
    truth = rng.normal(size=400)
    logits = np.stack([truth + rng.normal(scale=s, size=400) for s in (0.2, 1.0, 3.0)], axis=1)[..., None]
    weights = fit_fusion_weights(logits, truth)
    assert sum(weights) == pytest.approx(1.0) and weights[0] > weights[1] > weights[2]
    mse = lambda w: np.mean((logits[..., 0] @ np.asarray(w) - truth) ** 2)  # noqa: E731
    assert mse(weights) <= min(mse([1, 0, 0]), mse([1 / 3] * 3)) + 1e-9
    with pytest.raises(ValueError, match="regression predictions"):
        fit_teacher_temperatures(logits, truth)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"fusion": "min_entropy"}, "fusion='min_entropy' does not apply to regression"),
        ({"fusion": "confidence"}, "fusion='confidence' does not apply to regression .* use 'fitted'"),
        ({"fusion": "average", "calibrate_teachers": True}, "calibrate_teachers does not apply to regression"),
        ({"fusion": "average", "label_smoothing_factor": 0.1}, "label_smoothing_factor does not apply"),
    ],
)
def test_fusions_without_meaning_for_regression_are_refused_before_training(tmp_path, options, message):
    tokenizer = tiny_tokenizer()
    import datasets

    rows = datasets.Dataset.from_dict(
        {
            "sentence": ["good film", "bad film"],
            "label": [4.5, 0.5],
            "teacher_logits": [[[4.0], [3.0]], [[1.0], [0.0]]],
        }
    ).map(lambda b: tokenizer(b["sentence"]), batched=True)
    with pytest.raises(ValueError, match=message):
        DistillationTrainer(
            model=tiny_student(num_labels=1),
            args=tiny_config(tmp_path, **options),
            train_dataset=rows,
            eval_dataset=rows,
            processing_class=tokenizer,
        )


@needs_glue
@pytest.mark.slow
@pytest.mark.parametrize("task", sorted(TASKS))
def test_every_task_through_every_recipe(task, tmp_path):
    """train_teacher (a transformer and the scikit-learn teacher), extract_logits, distill, sweep and analyze,
    in the study's folder layout, then compare.py (the same steps in one recipe)."""
    root = tmp_path / "study" / task
    base = save_tiny_model(tmp_path / "base")
    tiny = train_teacher.main(
        common(task) + ["--model_name_or_path", base, "--output_dir", str(root / "teacher-tiny"), "--max_steps", "3"]
    )
    tfidf = train_teacher.main(
        common(task, train_rows=2000)
        + ["--model_name_or_path", "sklearn_tfidf", "--output_dir", str(root / "teacher-tfidf")]
    )
    assert tiny.metric == tfidf.metric == PRIMARY[task] and np.isfinite(tfidf.validation_score)
    teachers = f"{root / 'teacher-tiny'},{root / 'teacher-tfidf'}"
    logits = extract_logits.main(
        common(task, training=False) + ["--teachers", teachers, "--output_dir", str(root / "logits")]
    )
    assert logits["train"].features["teacher_logits"].shape == (2, TASKS[task].num_labels)
    student = [
        "--logit_dataset",
        str(root / "logits"),
        "--student_model",
        str(root / "teacher-tiny"),
        "--max_steps",
        "2",
    ]
    fusion = "fitted" if task == "stsb" else "confidence"
    for name, options in (("none", []), ("single", ["--teacher_index", "1"]), (fusion, [])):
        distill.main(
            common(task) + student + ["--fusion", name, *options, "--output_dir", str(root / f"student-{name}")]
        )
    saved = json.loads((root / f"student-{fusion}" / "eval_results.json").read_text())
    assert saved["metric"] == PRIMARY[task] and saved["fusion"] == fusion
    expected = {"pearson", "spearman", "mse"} if task == "stsb" else {"accuracy", PRIMARY[task]}
    assert expected <= set(saved["metrics"])
    sweep.main(
        common(task)
        + student
        + ["--fusion", "average", "--temperatures", "3", "--alphas", "0.5"]
        + ["--output_dir", str(root / "sweep-average")]
    )
    metrics = analyze.main(
        ["--study_dir", str(tmp_path / "study"), "--output_dir", str(tmp_path / "results"), "--resamples", "100"]
    )
    assert metrics[task]["metric"] == PRIMARY[task] and metrics["grids"][0]["cells"] == 1
    assert np.isfinite(metrics[task]["tests"]["multi_vs_single"]["difference"])
    table = compare.main(  # and the whole study in one recipe (one cheap teacher here)
        common(task)
        + ["--teachers", "sklearn_tfidf", "--student_model", base, "--student_layers", "0", "--methods", "none,single"]
        + ["--seeds", "1", "--study_dir", str(tmp_path / "compare"), "--results_csv", str(tmp_path / "compare.csv")]
        + ["--output_dir", str(tmp_path / "unused"), "--max_steps", "2"]
    )
    assert list(table.type) == ["teacher", "baseline", "single"] and set(table.metric) == {PRIMARY[task]}


@needs_glue
@pytest.mark.slow
def test_stsb_study_sweep_and_report(tmp_path):
    """compare.py with every fusion that applies to regression, sweep.py, and analyze.py's regression analyses."""
    base = save_tiny_model(tmp_path / "base")
    study = tmp_path / "study"
    table = compare.main(
        common("stsb")
        + ["--teachers", f"{base},sklearn_tfidf", "--teacher_epochs", "0.3", "--student_model", base]
        + ["--student_layers", "0", "--methods", "none,single,average,weighted,fitted,gating,average_to_fitted"]
        + ["--seeds", "1,2", "--study_dir", str(study), "--results_csv", str(tmp_path / "master.csv")]
        + ["--output_dir", str(tmp_path / "unused"), "--max_steps", "3"]
    )
    assert set(table.metric) == {"pearson"} and table.score.between(-1, 1).all()
    student = json.loads((study / "stsb" / "student-fitted-seed1" / "eval_results.json").read_text())
    assert len(student["fusion_weights"]) == 2 and student["teacher_temperatures"] is None
    grid = sweep.main(
        common("stsb")
        + ["--logit_dataset", str(study / "stsb" / "logits"), "--student_model", base, "--fusion", "average"]
        + ["--temperatures", "6", "--alphas", "0.3,0.7", "--max_steps", "2", "--output_dir", str(study / "grid")]
    )
    assert len(grid) == 2 and grid.score.notna().all()
    results = tmp_path / "results"
    analyze.main(["--study_dir", str(study), "--output_dir", str(results), "--resamples", "200"])
    report = (results / "REPORT.md").read_text()
    metrics = json.loads((results / "success_metrics.json").read_text())["stsb"]
    assert "by teacher agreement region" not in report and "Student errors by cause" not in report
    assert "A regression task" in report and "by teacher spread" in report
    assert metrics["regression"] and np.isfinite(metrics["teacher_mean_spread"])
    assert metrics["tests"]["multi_vs_single"]["resamples"] == 200
    assert (results / "error_by_teacher_spread_stsb.png").is_file()


def test_paired_bootstrap_on_pearson_matches_scipy():
    from distill_trainer.study.analysis.stats import paired_bootstrap

    rng = np.random.default_rng(1)
    labels = rng.normal(size=200)
    a, b = labels + rng.normal(scale=0.5, size=200), labels + rng.normal(scale=2.0, size=200)
    result = paired_bootstrap(a, b, labels, "pearson", resamples=500)
    assert result["difference"] == pytest.approx(pearsonr(a, labels)[0] - pearsonr(b, labels)[0])
    assert result["ci_low"] > 0 and result["p_value"] < 0.01


@needs_glue
@pytest.mark.parametrize("fusion", ["average", "gating"])
def test_library_api_distils_a_regression_student_on_real_stsb_rows(tmp_path, fusion):
    """A user's own script: two TF-IDF + ridge teachers fitted on other STS-B rows, their predictions attached
    with `attach_teacher_logits`, a one-output student trained by `DistillationTrainer`."""
    from distill_trainer import attach_teacher_logits
    from distill_trainer.study.args import TaskArguments
    from distill_trainer.study.teachers import SklearnTeacher

    task_args = TaskArguments(task="stsb", data=str(GLUE))
    train = task_args.load("train")
    texts = [(a, b) for a, b in zip(train["sentence1"], train["sentence2"], strict=False)]
    labels = np.asarray(train["label"][:])
    teachers = [SklearnTeacher.fit(texts[200 + i :: 2], labels[200 + i :: 2], regression=True) for i in (0, 1)]
    rows = train.select(range(200))
    predictions = np.stack([teacher(texts[:200]) for teacher in teachers], axis=1)
    tokenizer = tiny_tokenizer()
    rows = attach_teacher_logits(
        rows, predictions, ["ridge-a", "ridge-b"], ["score"], ["idx", "sentence1", "sentence2"]
    )
    rows = rows.map(lambda b: tokenizer(b["sentence1"], b["sentence2"], truncation=True, max_length=32), batched=True)
    args = tiny_config(tmp_path, fusion=fusion, max_steps=4, logging_strategy="steps", logging_steps=1)
    trainer = DistillationTrainer(
        model=tiny_student(num_labels=1), args=args, train_dataset=rows, processing_class=tokenizer
    )
    trainer.train()
    logged = [log for log in trainer.state.log_history if "loss" in log]
    assert len(logged) == 4 and all(np.isfinite([log["loss_kd"], log["loss_mse"]]).all() for log in logged)
    assert "loss_ce" not in logged[0]
    output = trainer.predict(rows.select(range(16)))
    assert output.predictions.shape == (16, 1) and np.isfinite(output.predictions).all()


@needs_glue
@pytest.mark.slow
def test_teachers_stop_early_keep_the_best_epoch_and_leave_no_checkpoints(tmp_path):
    base = save_tiny_model(tmp_path / "base")
    output = tmp_path / "teacher"
    record = train_teacher.main(
        common("mrpc")
        + ["--model_name_or_path", base, "--output_dir", str(output), "--num_train_epochs", "3"]
        + ["--early_stopping_patience", "1", "--learning_rate", "1e-3", "--per_device_train_batch_size", "32"]
    )
    assert record.epochs_trained in (2.0, 3.0) and record.best_epoch in (1.0, 2.0, 3.0)
    assert record.best_epoch <= record.epochs_trained and record.learning_rate == 1e-3
    labels = np.asarray(load_task_split(TASKS["mrpc"], "validation", str(GLUE), 48)["label"][:])
    assert record.majority_label_share == pytest.approx(np.bincount(labels).max() / 48)
    assert 0.5 <= record.majority_prediction_share <= 1
    assert not list(output.glob("checkpoint-*")) and (output / "model.safetensors").is_file()


@needs_glue
def test_a_collapsed_teacher_is_set_aside_and_fine_tuned_again_at_a_lower_rate(tmp_path, monkeypatch):
    from distill_trainer import DistillationConfig
    from distill_trainer.study import runner
    from distill_trainer.study.args import StudyArguments, TaskArguments
    from distill_trainer.study.runs import TeacherRecord

    tried = []

    def fake_training(data, teacher, args, early_stopping_patience=None):  # the retry logic, not training
        tried.append(args.learning_rate)
        share = 0.99 if len(tried) == 1 else 0.6
        record = TeacherRecord(name="t-sst2", base_model="t", task="sst2", metric="accuracy", validation_score=0.5)
        record = replace(record, learning_rate=args.learning_rate, majority_prediction_share=share)
        record = replace(record, majority_label_share=0.51)
        Path(args.output_dir).mkdir(parents=True)
        record.save(args.output_dir)
        return record

    monkeypatch.setattr(runner, "train_teacher", fake_training)
    folder = tmp_path / "sst2" / "teacher-t"
    config = DistillationConfig(output_dir=str(tmp_path / "unused"), use_cpu=True, learning_rate=3e-4)
    info = runner.teacher_or_reuse(
        TaskArguments(data=str(GLUE)).task_data(), "t", str(folder), config, StudyArguments()
    )
    assert tried == [3e-4, pytest.approx(1e-4)] and info.collapsed_learning_rates == [3e-4]
    assert (tmp_path / "sst2" / "collapsed-teacher-t-lr0.0003" / "teacher_info.json").is_file()
    assert TeacherRecord.load(folder).collapsed_learning_rates == [3e-4] and not TeacherRecord.load(folder).collapsed


@needs_glue
@pytest.mark.slow
def test_low_resource_students_learn_unlabelled_rows_from_the_teachers_only(tmp_path):
    base = save_tiny_model(tmp_path / "base")
    compare.main(
        common("sst2")
        + ["--teachers", f"{base},sklearn_tfidf", "--teacher_epochs", "0.3", "--student_model", base]
        + ["--methods", "none,confidence,average", "--labelled_rows", "40", "--student_layers", "0"]
        + ["--study_dir", str(tmp_path / "low"), "--teachers_from", str(tmp_path / "main")]
        + ["--results_csv", str(tmp_path / "low.csv"), "--output_dir", str(tmp_path / "unused"), "--max_steps", "3"]
    )
    runs = {
        m: json.loads((tmp_path / "low" / "sst2" / f"student-{m}-seed42" / "eval_results.json").read_text())
        for m in ("none", "confidence", "average")
    }
    assert runs["none"]["train_rows"] == 40 and runs["confidence"]["train_rows"] == 96  # baseline: labelled rows only
    assert all(run["labelled_rows"] == 40 for run in runs.values())
    assert (tmp_path / "main" / "sst2" / "logits").is_dir() and (tmp_path / "low" / "sst2" / "logits").is_symlink()
    before = sorted(p.name for p in (tmp_path / "main" / "sst2" / "logits" / "train").iterdir())
    with pytest.raises(ValueError, match="holds other teachers or rows than this study's"):  # never replaced
        compare.main(
            common("sst2")
            + ["--teachers", "sklearn_tfidf", "--teacher_epochs", "0.3", "--labelled_rows", "40", "--methods", "none"]
            + ["--study_dir", str(tmp_path / "other")]
            + ["--teachers_from", str(tmp_path / "main"), "--results_csv", str(tmp_path / "other.csv")]
            + ["--output_dir", str(tmp_path / "unused"), "--max_steps", "3"]
        )
    assert sorted(p.name for p in (tmp_path / "main" / "sst2" / "logits" / "train").iterdir()) == before
    assert os.readlink(tmp_path / "low" / "sst2" / "logits") == os.path.join("..", "..", "main", "sst2", "logits")
    metrics = analyze.main(
        ["--study_dir", str(tmp_path / "low"), "--output_dir", str(tmp_path / "r"), "--resamples", "50"]
    )
    assert metrics["sst2"]["train_rows"] == 96 and metrics["sst2"]["labelled_rows"] == 40
    report = (tmp_path / "r" / "REPORT.md").read_text()  # 40 labels: nothing in the reference to match
    assert "the labels of 40 training rows only" in report and "reference_comparison" not in metrics
    with pytest.raises(ValueError, match="leaves no unlabelled rows"):
        distill.main(
            common("sst2")
            + ["--logit_dataset", str(tmp_path / "low" / "sst2" / "logits"), "--student_model", base]
            + ["--labelled_rows", "96", "--output_dir", str(tmp_path / "s")]
        )


def test_link_into_accepts_a_link_another_run_made_first_and_refuses_a_foreign_entry(tmp_path, monkeypatch):
    from distill_trainer.study import runner

    source, study = tmp_path / "main" / "logits", tmp_path / "low"
    source.mkdir(parents=True)
    study.mkdir()
    (study / "logits").symlink_to(source)
    with monkeypatch.context() as patch:  # as if the other run had linked it between the check and the link
        patch.setattr(runner.os.path, "lexists", lambda path: False)
        runner.link_into(str(study), [str(source)])
    assert (study / "logits").resolve() == source
    (tmp_path / "other" / "teacher").mkdir(parents=True)
    (study / "teacher").mkdir()
    with pytest.raises(ValueError, match="teacher exists and is not a link"):
        runner.link_into(str(study), [str(tmp_path / "other" / "teacher")])


@needs_glue
def test_the_ridge_teacher_round_trips_through_json_and_safetensors(tmp_path):
    from distill_trainer.study.args import TaskArguments
    from distill_trainer.study.teachers import SKLEARN_TEACHER_FILE, SklearnTeacher, load_teacher

    task_args = TaskArguments(task="stsb", data=str(GLUE), max_train_rows=1500, max_eval_rows=200)
    train, validation = task_args.load("train"), task_args.load("validation")
    pairs = lambda rows: list(zip(rows["sentence1"], rows["sentence2"], strict=False))  # noqa: E731
    teacher = SklearnTeacher.fit(pairs(train), train["label"][:], regression=True)
    teacher.save(str(tmp_path))
    assert json.loads((tmp_path / SKLEARN_TEACHER_FILE).read_text())["model"] == "ridge"
    assert not list(tmp_path.glob("*.pkl")) and not list(tmp_path.glob("*.bin"))
    loaded = load_teacher(str(tmp_path), ["score"])
    assert loaded.is_regression and np.array_equal(loaded(pairs(validation)), teacher(pairs(validation)))
    assert teacher(pairs(validation)).shape == (200, 1)


@needs_glue
@pytest.mark.slow
def test_an_interrupted_early_stopped_teacher_resumes_from_its_last_checkpoint(tmp_path, monkeypatch, caplog):
    """Checkpoints every CHECKPOINT_EVERY_STEPS steps (here 2), and a run stopped after one of them ends with the
    weights of an uninterrupted run."""
    from transformers import EarlyStoppingCallback

    from distill_trainer.study import early_stopping, teacher_training

    base = save_tiny_model(tmp_path / "base")
    monkeypatch.setattr(early_stopping, "CHECKPOINT_EVERY_STEPS", 2)  # 3 steps per epoch -> 2 evaluations

    def run(folder):
        return train_teacher.main(
            common("mrpc")
            + ["--model_name_or_path", base, "--output_dir", str(folder), "--num_train_epochs", "2"]
            + ["--early_stopping_patience", "5", "--learning_rate", "1e-3", "--per_device_train_batch_size", "32"]
        )

    straight = run(tmp_path / "straight")

    def interrupt(self, args, state, control, **kwargs):
        raise KeyboardInterrupt  # killed right after the first checkpoint

    # The checkpoint keys callback state by class name, so the interrupting one keeps the name.
    interrupting = type("EarlyStoppingCallback", (EarlyStoppingCallback,), {"on_save": interrupt})
    monkeypatch.setattr(teacher_training, "EarlyStoppingCallback", interrupting)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "resumed")
    assert [p.name for p in (tmp_path / "resumed").glob("checkpoint-*")] == ["checkpoint-2"]
    monkeypatch.setattr(teacher_training, "EarlyStoppingCallback", EarlyStoppingCallback)
    with caplog.at_level("WARNING"):
        resumed = run(tmp_path / "resumed")
    assert "Resuming the teacher's training from" in caplog.text and "checkpoint-2" in caplog.text
    assert resumed.epochs_trained == straight.epochs_trained == 2.0 and not list(
        (tmp_path / "resumed").glob("checkpoint-*")
    )
    from safetensors.torch import load_file

    a, b = (
        load_file(str(tmp_path / "straight" / "model.safetensors")),
        load_file(str(tmp_path / "resumed" / "model.safetensors")),
    )
    assert all(torch.equal(a[name], b[name]) for name in a)


def test_a_study_run_in_parts_keeps_every_parts_rows_in_the_results_table():
    """`make study-v3` runs a task's methods in several calls: each call's rows join the table, a rerun replaces its
    own (v3's MRPC table had kept only the last call's 15 rows)."""
    import pandas as pd

    from distill_trainer.study.results_table import merge_results

    def rows(task, runs, study="runs/v3"):
        return pd.DataFrame([dict(study_dir=study, task=task, method=m, seed=s, score=v) for m, s, v in runs])

    teachers = [("t0", None, 0.9), ("t1", None, 0.8)]
    first = pd.concat([rows("sst2", [("none", 42, 0.5)]), rows("mrpc", [*teachers, ("none", 42, 0.7)])])
    second = rows("mrpc", [*teachers, ("gating", 42, 0.71), ("none", 42, 0.72)])
    merged = merge_results(first, second)
    keys = sorted(zip(merged.task, merged.method, merged.seed.fillna(-1), strict=True))
    assert keys == sorted(
        [("sst2", "none", 42), ("mrpc", "t0", -1), ("mrpc", "t1", -1), ("mrpc", "gating", 42), ("mrpc", "none", 42)]
    )
    assert merged[(merged.task == "mrpc") & (merged.method == "none")].score.tolist() == [0.72]  # the rerun's

    # another study (other settings) in the same CSV keeps its rows apart instead of replacing the first's
    other = merge_results(merged, rows("mrpc", [("none", 42, 0.6)], study="runs/other"))
    assert sorted(other[(other.task == "mrpc") & (other.method == "none")].score) == [0.6, 0.72]
    # rows from before the study_dir column are taken as the writing study's, so its rerun still replaces them
    legacy = merge_results(first.drop(columns="study_dir"), second)
    assert legacy[(legacy.task == "mrpc") & (legacy.method == "none")].score.tolist() == [0.72]
    assert set(legacy.study_dir) == {"runs/v3"}
