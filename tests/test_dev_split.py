"""Study v3's dev split (issue 28): carved once from the training rows, never trained on, and the only rows that
choose or fit anything (teachers' early stopping and scores, `weighted`'s weights, `fitted` and calibration fits,
students' early stopping); the validation split is only reported. The low-resource regime's teachers learn from the
labelled rows alone and its baseline gets the distilled students' optimizer steps. Real SST-2/MRPC rows, tiny
models; each number the records state is recomputed here independently."""

import sys
from pathlib import Path

import datasets
import numpy as np
import pytest
from helpers import tiny_student, tiny_tokenizer

from distill_trainer.fitting import validation_fits
from distill_trainer.logits import read_metadata
from distill_trainer.study.analysis.collect import check_recorded_score
from distill_trainer.study.args import TaskArguments
from distill_trainer.study.runs import StudentResult, TeacherRecord
from distill_trainer.study.tasks import TASKS, compute_task_metrics, dev_positions, load_task_split, task_texts
from distill_trainer.study.teachers import load_teacher, sharded_logits

ROOT = Path(__file__).resolve().parents[1]
GLUE = ROOT.parent / "shared" / "data" / "glue"
sys.path.insert(0, str(ROOT / "recipes"))
import compare  # noqa: E402
import distill  # noqa: E402
import extract_logits  # noqa: E402
import train_teacher  # noqa: E402

pytestmark = pytest.mark.skipif(not GLUE.is_dir(), reason="needs ../shared/data/glue")
QUIET = ["--report_to", "none", "--use_cpu", "true", "--disable_tqdm", "true", "--save_strategy", "no"]
DEV = ["--dev_rows", "1000", "--dev_fraction", "0.25"]  # 25% of 160 rows: 40 dev rows


def task_options(task="sst2", train_rows=160, dev=DEV, training=True):
    rows = ["--max_train_rows", str(train_rows), "--max_eval_rows", "48", "--max_length", "32"]
    return ["--task", task, "--data", str(GLUE), *rows, *dev, *(QUIET if training else [])]


def test_the_dev_split_is_fixed_disjoint_from_train_and_drawn_within_the_labelled_rows():
    assert len(dev_positions(67349, 0.1, 1000, 0)) == 1000 and len(dev_positions(3668, 0.1, 1000, 0)) == 366
    assert np.array_equal(dev_positions(500, 0.1, 1000, 0), dev_positions(500, 0.1, 1000, 0))
    task_args = TaskArguments(task="sst2", data=str(GLUE), max_train_rows=300, dev_rows=20)
    everything = load_task_split(TASKS["sst2"], "train", str(GLUE), 300)
    train, dev = task_args.load("train"), task_args.load("dev")
    positions = task_args.dev_positions(300)
    assert len(dev) == 20 and len(train) == 280 and list(dev["idx"]) == [everything["idx"][i] for i in positions]
    assert not set(dev["idx"]) & set(train["idx"]) and sorted([*dev["idx"], *train["idx"]]) == everything["idx"]
    assert list(train["idx"]) == sorted(train["idx"])  # file order kept
    low = TaskArguments(task="sst2", data=str(GLUE), max_train_rows=300, dev_rows=1000, labelled_rows=100)
    assert set(low.dev_positions(300)) <= set(range(100)) and len(low.dev_positions(300)) == 10
    assert low.labelled_training_rows() == 90
    with pytest.raises(ValueError, match="has no dev split: give --dev_rows"):
        TaskArguments(task="sst2", data=str(GLUE), max_train_rows=300).load("dev")
    with pytest.raises(ValueError, match="--dev_fraction in \\(0, 1\\)"):
        TaskArguments(dev_rows=10, dev_fraction=1.5)


@pytest.mark.slow
def test_teachers_fits_weights_and_students_choose_on_dev_and_report_validation(tmp_path):
    base = tmp_path / "base"
    tiny_student().save_pretrained(base)
    tiny_tokenizer().save_pretrained(base)
    teacher = train_teacher.main(
        task_options()
        + ["--model_name_or_path", str(base), "--output_dir", str(tmp_path / "tiny"), "--num_train_epochs", "2"]
        + ["--early_stopping_patience", "1", "--learning_rate", "1e-3", "--per_device_train_batch_size", "16"]
    )
    tfidf = train_teacher.main(
        task_options() + ["--model_name_or_path", "sklearn_tfidf", "--output_dir", str(tmp_path / "tfidf")]
    )
    task_args = TaskArguments(
        task="sst2", data=str(GLUE), max_train_rows=160, max_eval_rows=48, dev_rows=1000, dev_fraction=0.25
    )
    dev, validation = task_args.load("dev"), task_args.load("validation")
    for folder, record in ((tmp_path / "tiny", teacher), (tmp_path / "tfidf", tfidf)):
        reloaded = load_teacher(str(folder), TASKS["sst2"].label_names, max_length=32)
        for rows, score in ((dev, record.dev_score), (validation, record.validation_score)):
            assert score == pytest.approx(
                compute_task_metrics(
                    TASKS["sst2"], sharded_logits(reloaded, task_texts(TASKS["sst2"], rows)), rows["label"][:]
                )["accuracy"]
            )
        assert record.train_rows == 120 and record.dev_split["positions"] == task_args.dev_positions(160).tolist()
    assert teacher.best_epoch is not None and not list((tmp_path / "tiny").glob("checkpoint-*"))

    logits = extract_logits.main(
        task_options(training=False)
        + ["--teachers", f"{tmp_path / 'tiny'},{tmp_path / 'tfidf'}", "--output_dir", str(tmp_path / "logits")]
    )
    assert set(logits) == {"train", "dev", "validation"} and len(logits["train"]) == 120 and len(logits["dev"]) == 40
    metadata = read_metadata(logits["train"])
    assert (
        metadata.fit_split == "dev"
        and metadata.extra["dev_split"]["positions"] == task_args.dev_positions(160).tolist()
    )
    assert [t.dev_score for t in metadata.teachers] == pytest.approx([teacher.dev_score, tfidf.dev_score])
    assert metadata.weighting_scores == [t.dev_score for t in metadata.teachers]
    dev_logits = np.asarray(logits["dev"]["teacher_logits"])
    expected = validation_fits(dev_logits, np.asarray(dev["label"]))
    assert metadata.fitted["fusion_weights"] == pytest.approx(expected["fusion_weights"])
    assert metadata.fitted["teacher_temperatures"] == pytest.approx(expected["teacher_temperatures"])
    assert metadata.fitted["num_rows"] == 40

    student = ["--logit_dataset", str(tmp_path / "logits"), "--student_model", str(tmp_path / "tiny")]
    results = distill.main(
        task_options()
        + student
        + ["--fusion", "weighted", "--output_dir", str(tmp_path / "s"), "--num_train_epochs", "3"]
        + ["--early_stopping_patience", "1", "--per_device_train_batch_size", "16"]
    )
    assert results.fusion_weights == pytest.approx([teacher.dev_score, tfidf.dev_score])  # not validation's
    saved = StudentResult.load(tmp_path / "s")
    assert saved.dev_split["positions"] == task_args.dev_positions(160).tolist() and saved.best_step is not None
    assert saved.eval_rows == 48 and not list((tmp_path / "s").glob("checkpoint-*"))
    predictions = np.load(tmp_path / "s" / "validation_logits.npy")
    assert saved.score == pytest.approx(
        compute_task_metrics(TASKS["sst2"], predictions, validation["label"][:])["accuracy"]
    )
    assert 0 <= saved.dev_score <= 1 and saved.dev_metrics["accuracy"] == saved.dev_score
    # its dev logits are kept too, so the dev score every choice rests on can be checked from them, as the analysis
    # does (an edited dev score is refused)
    dev_predictions = np.load(tmp_path / "s" / "dev_logits.npy")
    dev_labels = datasets.load_from_disk(str(tmp_path / "logits"))["dev"]["label"][:]
    assert saved.dev_score == compute_task_metrics(TASKS["sst2"], dev_predictions, dev_labels)["accuracy"]
    (tmp_path / "study" / "sst2").mkdir(parents=True)
    (tmp_path / "study" / "sst2" / "logits").symlink_to(tmp_path / "logits")
    check_recorded_score(str(tmp_path / "study"), str(tmp_path / "s"), saved)
    saved.dev_score += 0.05
    with pytest.raises(ValueError, match=r"records dev_score .* its own dev_logits.npy scores .* on the dev labels"):
        check_recorded_score(str(tmp_path / "study"), str(tmp_path / "s"), saved)

    for options, message in (
        ([], "dev split was carved with"),  # the student must give the extraction's dev options
        ([*DEV, "--dev_seed", "1"], "dev split was carved with"),
    ):
        args = [
            "--task",
            "sst2",
            "--data",
            str(GLUE),
            "--max_train_rows",
            "160",
            "--max_eval_rows",
            "48",
            *options,
            *QUIET,
        ]
        with pytest.raises(ValueError, match=message):
            distill.main(args + student + ["--output_dir", str(tmp_path / "refused")])
    assert not (tmp_path / "refused").exists()


@pytest.mark.slow
def test_the_low_resource_regime_keeps_every_unlabelled_label_from_everyone(tmp_path):
    """Teachers learn from the labelled rows less the dev rows carved from them; the baseline trains on the same
    labelled rows for as many optimizer steps as the distilled students take over the whole transfer set."""
    base = tmp_path / "base"
    tiny_student().save_pretrained(base)
    tiny_tokenizer().save_pretrained(base)
    compare.main(
        task_options(train_rows=200, dev=["--dev_rows", "1000", "--dev_fraction", "0.1"])
        + ["--labelled_rows", "60", "--teachers", f"{base},sklearn_tfidf", "--teacher_epochs", "1"]
        + ["--student_model", str(base), "--student_layers", "0", "--methods", "none,average", "--seeds", "42"]
        + ["--study_dir", str(tmp_path / "low"), "--results_csv", str(tmp_path / "low.csv")]
        + ["--output_dir", str(tmp_path / "unused"), "--num_train_epochs", "1", "--per_device_train_batch_size", "32"]
    )
    root = tmp_path / "low" / "sst2"
    teachers = [TeacherRecord.load(folder) for folder in sorted(root.glob("teacher-*"))]
    assert [t.train_rows for t in teachers] == [54, 54] and all(t.labelled_rows == 60 for t in teachers)
    assert all(
        set(t.dev_split["positions"]) <= set(range(60)) and len(t.dev_split["positions"]) == 6 for t in teachers
    )
    none, average = (StudentResult.load(root / f"student-{m}-seed42") for m in ("none", "average"))
    assert none.train_rows == 54 and average.train_rows == 194  # 200 rows less the 6 dev rows
    assert none.question["config"]["max_steps"] == 7 == -(-194 // 32)  # the distilled students' steps


def test_labelled_rows_beyond_the_training_rows_are_refused_with_or_without_a_dev_split():
    """With a dev split, the dev rows were drawn from rows that do not exist first (an IndexError)."""
    for dev_rows in (None, 10):
        task_args = TaskArguments(data=str(GLUE), max_train_rows=100, labelled_rows=500, dev_rows=dev_rows)
        with pytest.raises(ValueError, match="--labelled_rows 500 leaves no unlabelled rows of the 100 training rows"):
            task_args.task_data()
