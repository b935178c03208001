"""The recipes end to end on tiny models and real GLUE rows from ../shared/data/glue."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import datasets
import numpy as np
import pandas as pd
import pytest
import torch
from helpers import launch, tiny_student, tiny_tokenizer
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification, BertModel

from distill_trainer import read_metadata
from distill_trainer.config import fast_training_defaults
from distill_trainer.study.output_dirs import check_output_dir
from distill_trainer.study.runs import processor_name
from distill_trainer.study.tasks import get_task, load_task_split, task_texts
from distill_trainer.study.teachers import TransformersTeacher
from distill_trainer.study.training import student_from_layers

ROOT = Path(__file__).resolve().parents[1]
GLUE = ROOT.parent / "shared" / "data" / "glue"
sys.path.insert(0, str(ROOT / "recipes"))
import distill  # noqa: E402
import extract_logits  # noqa: E402
import train_teacher  # noqa: E402

pytestmark = [pytest.mark.skipif(not GLUE.is_dir(), reason="needs ../shared/data/glue"), pytest.mark.slow]
COMMON = [
    "--task",
    "sst2",
    "--data",
    str(GLUE),
    "--max_length",
    "32",
    "--report_to",
    "none",
    "--use_cpu",
    "true",
    "--disable_tqdm",
    "true",
    "--save_strategy",
    "no",
]


def save_tiny_model(folder, **config):
    tiny_student(**config).save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """Two teachers (a tiny transformer, the TF-IDF model) and their logit dataset on 300 real SST-2 rows."""
    root = tmp_path_factory.mktemp("study")
    base = save_tiny_model(root / "base")
    rows = ["--max_train_rows", "300", "--max_eval_rows", "100"]
    tiny = train_teacher.main(
        COMMON
        + rows
        + [
            "--model_name_or_path",
            base,
            "--output_dir",
            str(root / "t-tiny"),
            "--max_steps",
            "5",
            "--per_device_train_batch_size",
            "16",
        ]
    )
    tfidf = train_teacher.main(
        COMMON
        + [
            "--max_train_rows",
            "5000",
            "--max_eval_rows",
            "100",
            "--model_name_or_path",
            "sklearn_tfidf",
            "--output_dir",
            str(root / "t-tfidf"),
        ]
    )
    extract_logits.main(
        COMMON[:6]
        + rows
        + ["--teachers", f"{root / 't-tiny'},{root / 't-tfidf'}", "--output_dir", str(root / "logits")]
    )
    return root, tiny, tfidf


def test_teachers_are_saved_with_their_scores(study):
    root, tiny, tfidf = study
    assert tiny.name == "base-sst2" and tfidf.name == "sklearn_tfidf-sst2"
    assert 0.0 <= tiny.validation_score <= 1.0 and tfidf.validation_score > 0.65  # TF-IDF learns SST-2
    saved_info = json.loads((root / "t-tfidf" / "teacher_info.json").read_text())
    assert saved_info["train_rows"] == 5000 and tiny.train_runtime > 0 and saved_info["train_runtime"] > 0
    AutoModelForSequenceClassification.from_pretrained(str(root / "t-tiny"))


def test_logit_dataset_format(study):
    root, tiny, tfidf = study
    logits = datasets.load_from_disk(str(root / "logits"))
    assert {split: len(d) for split, d in logits.items()} == {"train": 300, "validation": 100}
    metadata = read_metadata(logits["train"])
    assert [t.name for t in metadata.teachers] == ["base-sst2", "sklearn_tfidf-sst2"]
    assert metadata.label_names == ["negative", "positive"] and metadata.input_columns == ["idx", "sentence"]
    assert metadata.validation_scores[1] == pytest.approx(tfidf.validation_score)
    assert metadata.fitted["num_rows"] == 100 and len(metadata.fitted["teacher_temperatures"]) == 2
    assert sum(metadata.fitted["fusion_weights"]) == pytest.approx(1.0)
    assert logits["train"].features["teacher_logits"].shape == (2, 2)
    assert not any(str(root) in json.dumps(t.__dict__) for t in metadata.teachers)  # no local paths
    assert not list(root.glob("logits.partial-*"))


@pytest.mark.parametrize(
    "fusion, extra",
    [
        ("none", []),
        ("single", ["--teacher_index", "1"]),
        ("average", []),
        ("weighted", []),
        ("min_entropy", []),
        ("gating", []),
        ("confidence", []),
        ("fitted", ["--calibrate_teachers", "true"]),
        ("average", ["--curriculum_fusion", "confidence"]),
    ],
)
def test_distill_every_fusion(study, tmp_path, fusion, extra):
    root, _, tfidf = study
    output = tmp_path / fusion
    results = distill.main(
        COMMON
        + [
            "--logit_dataset",
            str(root / "logits"),
            "--student_model",
            str(root / "t-tiny"),
            "--student_layers",
            "1",
            "--fusion",
            fusion,
            "--max_steps",
            "4",
            "--output_dir",
            str(output),
            "--seed",
            "3",
        ]
        + extra
    )
    saved = json.loads((output / "eval_results.json").read_text())
    assert saved["fusion"] == fusion and saved["train_rows"] == 300 and saved["seed"] == 3
    assert saved["score"] == results.metrics["accuracy"] and 0 <= saved["score"] <= 1
    assert saved["alpha"] == (0.0 if fusion == "none" else 0.7)
    if fusion == "weighted":
        assert saved["fusion_weights"] == [t["validation_score"] for t in saved["teachers"]]
    fitted = read_metadata(datasets.load_from_disk(str(root / "logits"))["train"]).fitted
    if fusion == "fitted":  # the fits stored at extraction, on calibrated teachers
        assert saved["calibrate_teachers"] and saved["teacher_temperatures"] == fitted["teacher_temperatures"]
        assert saved["fusion_weights"] == fitted["fusion_weights_calibrated"]
    assert saved["curriculum_fusion"] == ("confidence" if "--curriculum_fusion" in extra else None)
    student = AutoModelForSequenceClassification.from_pretrained(str(output))
    assert student.config.num_hidden_layers == 1 and student.config.id2label == {0: "negative", 1: "positive"}


def test_config_file_with_overrides(study, tmp_path):
    root, _, _ = study
    config = tmp_path / "sst2.yaml"
    config.write_text(
        f"task: sst2\ndata: {GLUE}\nmax_length: 32\nfusion: min_entropy\nalpha: 0.5\n"
        "report_to: none\nuse_cpu: true\nsave_strategy: 'no'\nteachers: ignored-here\n"
    )
    results = distill.main(
        [
            "--config",
            str(config),
            "--alpha",
            "0.9",
            "--max_steps",
            "2",
            "--logit_dataset",
            str(root / "logits"),
            "--student_model",
            str(root / "t-tiny"),
            "--output_dir",
            str(tmp_path / "s"),
        ]
    )
    assert results.fusion == "min_entropy" and results.alpha == 0.9


def test_teacher_with_permuted_labels_is_remapped(tmp_path):
    task = get_task("sst2")
    texts = task_texts(task, load_task_split(task, "validation", str(GLUE), 20))
    straight = save_tiny_model(tmp_path / "straight", id2label={0: "negative", 1: "positive"})
    model = AutoModelForSequenceClassification.from_pretrained(straight)
    with torch.no_grad():  # same network, outputs in the other order
        model.classifier.weight.copy_(model.classifier.weight.flip(0))
        model.classifier.bias.copy_(model.classifier.bias.flip(0))
    model.config.id2label, model.config.label2id = {0: "POSITIVE", 1: "NEGATIVE"}, {"POSITIVE": 0, "NEGATIVE": 1}
    model.save_pretrained(tmp_path / "permuted")
    tiny_tokenizer().save_pretrained(tmp_path / "permuted")
    expected = TransformersTeacher(straight, task.label_names, batch_size=8)(texts, progress=False)
    remapped = TransformersTeacher(str(tmp_path / "permuted"), task.label_names, batch_size=8)(texts, progress=False)
    np.testing.assert_allclose(remapped, expected, rtol=1e-5, atol=1e-6)
    model.config.id2label, model.config.label2id = {0: "yes", 1: "no"}, {"yes": 0, "no": 1}
    model.save_pretrained(tmp_path / "unknown")
    tiny_tokenizer().save_pretrained(tmp_path / "unknown")
    with pytest.raises(ValueError, match=r"do not name the task's labels \['negative', 'positive'\]"):
        TransformersTeacher(str(tmp_path / "unknown"), task.label_names)


def test_logits_for_other_rows_are_refused(study, tmp_path):
    root, _, _ = study
    other = tmp_path / "glue" / "sst2"
    other.mkdir(parents=True)
    frame = pd.read_csv(GLUE / "sst2" / "train.tsv", sep="\t", keep_default_na=False, nrows=400)
    frame.iloc[::-1].to_csv(other / "train.tsv", sep="\t", index=False)
    shutil.copy(GLUE / "sst2" / "validation.tsv", other / "validation.tsv")
    with pytest.raises(ValueError, match="does not belong to this data"):
        distill.main(
            COMMON[:2]
            + [
                "--data",
                str(tmp_path / "glue"),
                "--logit_dataset",
                str(root / "logits"),
                "--student_model",
                str(root / "t-tiny"),
                "--output_dir",
                str(tmp_path / "s"),
                "--use_cpu",
                "true",
                "--report_to",
                "none",
            ]
        )


def test_resume_from_checkpoint_reaches_the_trainer(study, tmp_path, monkeypatch):
    """Found by a review: distill.py and train_teacher.py took --resume_from_checkpoint (it is in their --help) and
    trained from step 0."""
    import transformers

    root, _, _ = study
    asked, original = [], transformers.Trainer.train

    def train(self, resume_from_checkpoint=None, **kwargs):
        asked.append(resume_from_checkpoint)
        return original(self, **kwargs)  # from scratch: the path is made up; what reaches the Trainer is checked

    monkeypatch.setattr(transformers.Trainer, "train", train)
    resume = ["--resume_from_checkpoint", "some/checkpoint-2", "--max_steps", "1"]
    distill.main(
        COMMON + resume + ["--logit_dataset", str(root / "logits"), "--student_model", str(root / "t-tiny")]
        + ["--max_train_rows", "300", "--max_eval_rows", "100", "--output_dir", str(tmp_path / "s")]
    )  # fmt: skip
    train_teacher.main(
        COMMON + resume + ["--model_name_or_path", str(root / "base"), "--output_dir", str(tmp_path / "t")]
        + ["--max_train_rows", "300", "--max_eval_rows", "100"]
    )  # fmt: skip
    assert asked == ["some/checkpoint-2", "some/checkpoint-2"]


def test_row_limits_beyond_the_logit_dataset_other_validation_rows_and_another_task_are_refused(study, tmp_path):
    """The logits cover 300 training and 100 validation rows: asking for more trained and scored a student on
    fewer, silently, with the asked number in its question; validation rows of other data were never checked."""
    root, _, _ = study
    student = ["--logit_dataset", str(root / "logits"), "--student_model", str(root / "t-tiny"), "--max_steps", "1"]
    for rows, option in ((["400", "100"], "--max_train_rows 400"), (["300", "150"], "--max_eval_rows 150")):
        limits = ["--max_train_rows", rows[0], "--max_eval_rows", rows[1]]
        with pytest.raises(ValueError, match=f"{option} asks for .* this logit dataset has"):
            distill.main(COMMON + limits + student + ["--output_dir", str(tmp_path / "s")])
    other = tmp_path / "glue" / "sst2"
    other.mkdir(parents=True)
    shutil.copy(GLUE / "sst2" / "train.tsv", other / "train.tsv")
    frame = pd.read_csv(GLUE / "sst2" / "validation.tsv", sep="\t", keep_default_na=False)
    frame.iloc[::-1].to_csv(other / "validation.tsv", sep="\t", index=False)
    argv = COMMON + ["--max_train_rows", "300", "--max_eval_rows", "100"] + student
    argv[argv.index("--data") + 1] = str(tmp_path / "glue")
    with pytest.raises(ValueError, match="its 100 validation rows are not the task's first 100"):
        distill.main(argv + ["--output_dir", str(tmp_path / "s")])
    mrpc = COMMON + ["--max_train_rows", "300", "--max_eval_rows", "100"] + student
    mrpc[mrpc.index("--task") + 1] = "mrpc"  # failed on a missing column instead of naming the task
    with pytest.raises(ValueError, match="--task mrpc: this logit dataset holds sst2's teachers and rows"):
        distill.main(mrpc + ["--output_dir", str(tmp_path / "s")])
    assert not (tmp_path / "s").exists()


def test_student_from_layers_keeps_the_chosen_layers():
    teacher = tiny_student()
    second_layer = teacher.bert.encoder.layer[1].attention.self.query.weight.clone()
    student = student_from_layers(teacher, [1])
    assert len(student.bert.encoder.layer) == 1 and student.config.num_hidden_layers == 1
    torch.testing.assert_close(student.bert.encoder.layer[0].attention.self.query.weight, second_layer)
    with pytest.raises(ValueError, match="must be indices"):
        student_from_layers(student, [3])


@pytest.mark.multiprocess
def test_distill_under_accelerate_launch_with_two_processes(study, tmp_path):
    root, _, _ = study
    command = (
        launch()
        + [str(ROOT / "recipes" / "distill.py")]
        + COMMON
        + [
            "--logit_dataset",
            str(root / "logits"),
            "--student_model",
            str(root / "t-tiny"),
            "--fusion",
            "gating",
            "--max_steps",
            "3",
            "--per_device_train_batch_size",
            "8",
            "--output_dir",
            str(tmp_path / "ddp"),
        ]
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    finished = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env, cwd=ROOT)
    assert finished.returncode == 0, finished.stderr[-3000:]
    results = json.loads((tmp_path / "ddp" / "eval_results.json").read_text())
    assert results["fusion"] == "gating"
    epoch = float(re.search(r"'epoch': '([0-9.]+)'", finished.stdout)[1])
    assert epoch == pytest.approx(3 / 19, abs=1e-3)  # 3 of ceil(300 / (2 processes x 8)) steps; one process: 3 / 38


def test_compare_runs_the_study_and_writes_the_table(study, tmp_path):
    import compare

    root, _, _ = study
    base = save_tiny_model(tmp_path / "base")
    csv = tmp_path / "results" / "master_results.csv"
    argv = COMMON + [
        "--max_train_rows",
        "200",
        "--max_eval_rows",
        "50",
        "--teachers",
        f"{base},sklearn_tfidf",
        "--teacher_epochs",
        "0.2",
        "--student_model",
        base,
        "--student_layers",
        "0",
        "--methods",
        "none,single,average",
        "--method_temperatures",
        "average=3",
        "--seeds",
        "1,2",
        "--study_dir",
        str(tmp_path / "study"),
        "--results_csv",
        str(csv),
        "--output_dir",
        str(tmp_path / "unused"),
        "--max_steps",
        "2",
    ]
    table = compare.main(argv)
    assert (
        list(table.method)
        == ["teacher: base", "teacher: sklearn_tfidf"]
        + ["none", "single: base", "single: sklearn_tfidf", "average"] * 2
    )
    assert set(table.type) == {"teacher", "baseline", "single", "multi"} and table.score.between(0, 1).all()
    assert set(table[table.method == "average"].temperature) == {3.0} and set(
        table[table.type == "single"].temperature
    ) == {6.0}
    assert pd.read_csv(csv).shape[0] == len(table)
    students = sorted(p.name for p in (tmp_path / "study" / "sst2").glob("student-*"))
    assert len(students) == 8
    again = compare.main(argv)  # finished runs are reused, not retrained
    assert again.score.tolist() == table.score.tolist()
    with pytest.raises(ValueError, match=r"another question \(config.num_train_epochs: 0.2 there, 0.3 asked"):
        compare.main(argv + ["--teacher_epochs", "0.3"])  # nor are its teachers under other settings


def test_sweep_writes_the_t_by_alpha_grid(study, tmp_path):
    import sweep

    root, _, _ = study
    argv = COMMON + [
        "--logit_dataset",
        str(root / "logits"),
        "--student_model",
        str(root / "t-tiny"),
        "--fusion",
        "average",
        "--temperatures",
        "3,9",
        "--alphas",
        "0.3,0.7",
        "--max_steps",
        "2",
        "--output_dir",
        str(tmp_path / "grid"),
    ]
    grid = sweep.main(argv)
    assert sorted(zip(grid.temperature, grid.alpha, strict=False)) == [(3.0, 0.3), (3.0, 0.7), (9.0, 0.3), (9.0, 0.7)]
    assert (grid.fusion == "average").all() and grid.score.between(0, 1).all()
    assert pd.read_csv(tmp_path / "grid" / "grid.csv").shape == (4, 12) and (grid.train_runtime > 0).all()
    assert all((tmp_path / "grid" / run / "validation_logits.npy").is_file() for run in grid.run)
    per_method = sweep.main(argv + ["--methods", "average,confidence", "--method_temperatures", "confidence=3"])
    assert sorted(zip(per_method.method, per_method.temperature, per_method.alpha, strict=False)) == [
        ("average", 3.0, 0.3),
        ("average", 3.0, 0.7),
        ("average", 9.0, 0.3),
        ("average", 9.0, 0.7),
        ("confidence", 3.0, 0.3),
        ("confidence", 3.0, 0.7),
    ]
    with pytest.raises(ValueError, match="holds a finished run of another question .*config.seed: 42 there, 7 asked"):
        sweep.main(argv + ["--seed", "7"])  # same folders, another seed: never reported as this one
    with pytest.raises(ValueError, match="another question .*config.learning_rate: 5e-05 there, 0.5 asked"):
        sweep.main(argv + ["--learning_rate", "0.5"])  # nor under another learning rate, epochs, rows...
    # Any field that changes what is trained or scored, not a hand-kept list (issue 27: these were reused).
    for flags, differs in (
        (["--max_eval_rows", "30"], "task.max_eval_rows"),
        (["--warmup_steps", "1"], "config.warmup_steps"),
        (["--label_smoothing_factor", "0.1"], "config.label_smoothing_factor"),
        (["--alpha_schedule", "linear", "--alpha_end", "0.9"], "config.alpha_end"),
        (["--max_grad_norm", "0.5"], "config.max_grad_norm"),
    ):
        with pytest.raises(ValueError, match=f"another question .*{differs}"):
            sweep.main(argv + flags)
    assert sweep.main(argv + ["--logging_steps", "3", "--disable_tqdm", "false"]).score.tolist() == grid.score.tolist()


@pytest.mark.parametrize("config", sorted((ROOT / "recipes" / "configs").glob("*.yaml")), ids=lambda path: path.name)
def test_shipped_configs_parse_for_the_study(config, caplog):
    """Every config in recipes/configs parses for compare.py (grid configs: for sweep.py) with no key left unused,
    on a task whose data is here."""
    import sweep

    from distill_trainer import DistillationConfig
    from distill_trainer.study.args import StudentArguments, StudyArguments, TaskArguments, parse_recipe_args

    if config.name.startswith("causal_"):  # the causal study's (issue 31): its own options
        from distill_trainer.study.causal_study_args import CausalStudyArguments

        causal, _ = parse_recipe_args((CausalStudyArguments, DistillationConfig), ["--config", str(config)])
        assert causal.k_grid == [8, 32, 128] and len(causal.seeds) == 3 and len(causal.student_layers) == 8
        assert "ignores these keys" not in caplog.text and (GLUE / causal.task / "train.tsv").is_file()
        return
    if "grid" in config.name:
        grid_recipe = (TaskArguments, StudentArguments, sweep.GridArguments, DistillationConfig)
        task_args, _, grid, _ = parse_recipe_args(grid_recipe, ["--config", str(config), "--logit_dataset", "l"])
        assert grid.temperatures == [3, 6, 9] and grid.alphas == [0.3, 0.5, 0.7] and grid.methods is None
    else:
        task_args, study, _ = parse_recipe_args(
            (TaskArguments, StudyArguments, DistillationConfig), ["--config", str(config)]
        )
        assert study.methods and study.seeds
    assert "ignores these keys" not in caplog.text
    assert (GLUE / task_args.task / "train.tsv").is_file()


def test_extraction_never_replaces_a_folder_it_did_not_write(study, tmp_path):
    root, *_ = study
    project = tmp_path / "project"
    project.mkdir()
    (project / "notes.txt").write_text("mine")
    (tmp_path / "a-file.txt").write_text("mine too")
    extract = COMMON[:6] + ["--max_train_rows", "300", "--max_eval_rows", "100", "--teachers", str(root / "t-tfidf")]
    for target in (project, root / "t-tfidf", tmp_path / "a-file.txt"):
        before = sorted(p.name for p in target.iterdir()) if target.is_dir() else target.read_text()
        with pytest.raises(ValueError, match="is not a logit dataset written by extract_logits"):
            extract_logits.main(extract + ["--output_dir", str(target)])
        assert (sorted(p.name for p in target.iterdir()) if target.is_dir() else target.read_text()) == before
        assert not Path(f"{target}.teacher-cache").exists()  # refused before any teacher ran
    previous = tmp_path / "previous-logits"  # a logit dataset it wrote is replaced
    shutil.copytree(root / "logits", previous)
    notes, student = previous / "NOTES.md", previous / "train" / "student-avg"  # but never what was put inside it
    notes.write_text("mine")
    student.mkdir()
    with pytest.raises(ValueError, match=r"did not write \(NOTES.md, train/student-avg\)"):
        extract_logits.main(extract + ["--output_dir", str(previous)])
    assert notes.read_text() == "mine" and student.is_dir()
    notes.unlink()
    student.rmdir()
    extract_logits.main(extract + ["--output_dir", str(previous)])
    assert [t.name for t in read_metadata(datasets.load_from_disk(str(previous))["train"]).teachers] == [
        "sklearn_tfidf-sst2"
    ]


def test_training_never_overwrites_a_folder_another_run_or_the_user_wrote(study, tmp_path):
    root, *_ = study
    teacher = tmp_path / "teacher-copy"  # a teacher given as a student's folder
    shutil.copytree(root / "t-tiny", teacher)
    project = tmp_path / "project"  # a user's folder given as a teacher's
    project.mkdir()
    (project / "notes.txt").write_text("mine")
    before = {path.name: path.read_bytes() for path in teacher.iterdir() if path.is_file()}
    student = ["--logit_dataset", str(root / "logits"), "--student_model", str(root / "t-tiny"), "--max_steps", "1"]
    with pytest.raises(ValueError, match=r"already holds .*teacher_info.json, .*and no eval_results.json"):
        distill.main(COMMON + student + ["--fusion", "average", "--output_dir", str(teacher)])
    with pytest.raises(ValueError, match=r"already holds notes.txt, and no teacher_info.json"):
        train_teacher.main(COMMON + ["--model_name_or_path", "sklearn_tfidf", "--output_dir", str(project)])
    assert {path.name: path.read_bytes() for path in teacher.iterdir() if path.is_file()} == before
    assert sorted(path.name for path in project.iterdir()) == ["notes.txt"]
    interrupted = tmp_path / "interrupted"  # what a run logging to TensorBoard leaves: it resumes there
    (interrupted / "runs" / "Dec07_host").mkdir(parents=True)
    (interrupted / "checkpoint-2").mkdir()
    check_output_dir(str(interrupted), "eval_results.json")
    (project / "runs").write_text("a file, not TensorBoard's folder")
    with pytest.raises(ValueError, match=r"already holds notes.txt, runs \(not a folder\)"):
        check_output_dir(str(project), "eval_results.json")


def test_a_run_killed_before_its_record_trains_again_where_it_stopped(study, tmp_path):
    """A student killed after saving its weights but before writing its record leaves a folder of model files
    and no record: its marker lets the rerun train there again; a teacher's marker does not let a student in."""
    root, *_ = study
    student = tmp_path / "student"
    argv = COMMON + ["--logit_dataset", str(root / "logits"), "--student_model", str(root / "t-tiny")]
    argv += ["--max_steps", "1", "--fusion", "average", "--output_dir", str(student)]
    distill.main(argv)
    (student / "eval_results.json").unlink()  # the kill
    assert (student / "model.safetensors").is_file()
    distill.main(argv)
    assert (student / "eval_results.json").is_file()
    stopped_teacher = tmp_path / "stopped-teacher"
    shutil.copytree(root / "t-tiny", stopped_teacher)
    (stopped_teacher / "teacher_info.json").unlink()
    with pytest.raises(ValueError, match=r"already holds _distill_trainer_run.json, config.json"):
        distill.main(argv[:-1] + [str(stopped_teacher)])
    check_output_dir(str(stopped_teacher), "teacher_info.json")  # the teacher's own rerun goes on


def test_the_same_seed_gives_the_same_student(study, tmp_path):
    """The student's head is drawn when the model is built (a checkpoint without one, as a pretrained encoder
    is): seeded before that, two runs of distill.py with one --seed end with identical weights."""
    root, *_ = study
    headless = tmp_path / "encoder"
    BertModel(tiny_student().config).save_pretrained(headless)
    tiny_tokenizer().save_pretrained(headless)
    torch.manual_seed(1234)  # whatever state the process is in before each run
    weights = []
    for run in ("first", "second"):
        distill.main(
            COMMON
            + [
                "--logit_dataset",
                str(root / "logits"),
                "--student_model",
                str(headless),
                "--fusion",
                "average",
                "--max_steps",
                "3",
                "--seed",
                "7",
                "--output_dir",
                str(tmp_path / run),
            ]
        )
        weights.append(load_file(str(tmp_path / run / "model.safetensors")))
        torch.rand(5)  # move the global RNG between the runs
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][name], weights[1][name]) for name in weights[0])


def test_a_device_bundle_trains_the_students_that_the_full_weights_train(tmp_path):
    """recipes/device/bundle_study.py: the bundled study reuses the teachers and logits, and a student trained
    from the bundle's copy of its weights (zeros wherever it never reads) is the full weights' student."""
    import compare

    sys.path.insert(0, str(ROOT / "recipes" / "device"))
    import bundle_study

    base = save_tiny_model(tmp_path / "base")
    rows = ["--max_train_rows", "200", "--max_eval_rows", "50", "--teachers", "sklearn_tfidf"]
    run = ["--student_layers", "0", "--methods", "none,single", "--seeds", "1", "--max_steps", "3"]
    run += ["--output_dir", str(tmp_path / "unused"), "--results_csv", str(tmp_path / "results.csv")]
    full = compare.main(COMMON + rows + run + ["--student_model", base, "--study_dir", str(tmp_path / "study")])
    records = {
        r: json.loads((tmp_path / "study" / "sst2" / r).read_text())
        for r in ("student-none-seed1/eval_results.json", "teacher-sklearn_tfidf/teacher_info.json")
    }
    assert [r["device"] for r in records.values()] == [
        f"cpu{' with bf16 autocast' if fast_training_defaults().get('bf16') else ''}",
        "cpu",
    ]
    assert [r["processor"] for r in records.values()] == [processor_name()] * 2  # the machine's CPU model
    out = tmp_path / "bundle"
    argv = ["--study_dir", str(tmp_path / "study"), "--tasks", "sst2", "--data", str(GLUE)]
    argv += ["--student_model", base, "--student_layers", "0", "--output", str(out)]
    with pytest.raises(ValueError, match="does not exist"):
        bundle_study.main(argv[:3] + ["sst2,mrpc"] + argv[4:])
    bundle_study.main(argv)
    with pytest.raises(ValueError, match="exists"):
        bundle_study.main(argv)
    bundle_study.main(["--unpack", str(out)])
    model = out / "models" / "base"
    weights = load_file(model / "model.safetensors")
    assert not weights["bert.encoder.layer.1.output.dense.weight"].any()  # a layer the student drops
    embeddings = weights["bert.embeddings.word_embeddings.weight"]
    assert 0 < int(embeddings.any(1).sum()) < len(embeddings)  # rows of tokens in no text are zero
    study = out / "runs" / "study"
    assert [p.name for p in (study / "sst2").glob("teacher-*/*")] == ["teacher_info.json"]  # records, no weights
    finished = sorted((study / "sst2").glob("student-*"))  # their records travel, so they are reused there
    assert [sorted(p.name for p in f.iterdir()) for f in finished] == [["eval_results.json"]] * 2
    for folder in finished:  # trained again here from the bundle's weights, to compare with the full weights'
        shutil.rmtree(folder)
    bundled = compare.main(
        COMMON
        + rows
        + run
        + ["--data", str(out / "data" / "glue"), "--student_model", str(model)]
        + ["--study_dir", str(study)]
    )
    bundled = bundled[bundled.study_dir == str(study)]  # the CSV holds both studies' rows, apart
    assert bundled.score.tolist() == full.score.tolist()  # teachers reused, students identical
    for student in ("student-none-seed1", "student-single-0-seed1"):
        logits = [np.load(root / "sst2" / student / "validation_logits.npy") for root in (tmp_path / "study", study)]
        np.testing.assert_array_equal(*logits)


def test_a_device_bundle_carries_teachers_to_train_there_in_bf16(tmp_path):
    """With --teachers the base models travel (no logits needed), bf16 if asked; unpacking upcasts them."""
    sys.path.insert(0, str(ROOT / "recipes" / "device"))
    import bundle_study

    teacher, student = save_tiny_model(tmp_path / "teacher"), save_tiny_model(tmp_path / "student")
    out = tmp_path / "bundle"
    argv = ["--study_dir", str(tmp_path / "no-study"), "--tasks", "rte", "--data", str(GLUE)]
    with pytest.raises(ValueError, match="--teachers"):  # no logits and no teachers: nothing to train from
        bundle_study.main(argv + ["--student_model", student, "--output", str(out)])
    with pytest.raises(ValueError, match="neither a packaged model"):
        bundle_study.main(argv + ["--teachers", "org/hub-model", "--student_model", student, "--output", str(out)])
    bundle_study.main(
        argv
        + ["--teachers", teacher, "--teacher_dtype", "bfloat16", "--student_model", student]
        + ["--student_layers", "0", "--output", str(out)]
    )
    assert not out.joinpath("runs").exists() and (out / "data" / "glue" / "rte" / "train.tsv").is_file()
    with pytest.raises(ValueError, match="exists"):
        bundle_study.main(argv + ["--teachers", teacher, "--student_model", student, "--output", str(out)])
    bundle_study.main(["--unpack", str(out)])
    original = load_file(Path(teacher) / "model.safetensors")
    bundled = load_file(out / "models" / "teacher" / "model.safetensors")
    assert {t.dtype for t in bundled.values() if t.is_floating_point()} == {torch.float32}
    rows = bundled["bert.embeddings.word_embeddings.weight"].any(1)
    assert 0 < int(rows.sum()) < len(rows)
    for name, tensor in original.items():  # every layer kept (a teacher uses them all), bf16-rounded
        expected = tensor.to(torch.bfloat16).float()
        if name.endswith("word_embeddings.weight"):
            expected[~rows] = 0
        torch.testing.assert_close(bundled[name], expected, rtol=0, atol=0)


def run_device_script(tmp_path, seconds: int, **env) -> list[tuple[str, str, str]]:
    """recipes/device/run_study.sh on an SST-2 bundle with its logits, with a stand-in python that only records
    the runs (5 s each); (start ns, end ns, arguments) of the compare.py / sweep.py runs that finished."""
    log, fake = tmp_path / "runs.log", tmp_path / "python"
    record = f's=$(date +%s%N); sleep 5; echo "$s $(date +%s%N) $*" >>{log}'  # 5 s: three would overlap
    fake.write_text(f'#!/bin/bash\ncase "$*" in *compare.py*|*sweep.py*) {record};; esac\n')
    fake.chmod(0o755)
    logits = tmp_path / "bundle" / "runs" / "v2" / "sst2" / "logits"
    logits.mkdir(parents=True)
    (logits / "dataset_dict.json").write_text("{}")
    (tmp_path / "out").mkdir()
    command = ["bash", "recipes/device/run_study.sh", str(tmp_path / "bundle"), str(tmp_path / "out"), str(seconds)]
    subprocess.run(command + ["sst2"], cwd=ROOT, env={**os.environ, "PYTHON": str(fake), **env}, check=True)
    assert (tmp_path / "out" / "study.tgz").is_file()
    return [tuple(line.split(" ", 2)) for line in log.read_text().splitlines()]


def test_the_device_script_queues_each_method_and_seed_within_its_workers_and_deadline(tmp_path):
    """run_study.sh: 'single' first, then method by method, seeds inside; never more than WORKERS at once; no run
    started with MIN_LEFT seconds or fewer left, and nothing but students with STUDENTS_ONLY."""
    runs = run_device_script(tmp_path, 20, WORKERS="2", MIN_LEFT="6", STUDENTS_ONLY="1")
    assert all("compare.py" in arguments for _, _, arguments in runs)
    started = [(re.search(r"--methods (\S+)", r[2])[1], re.search(r"--seeds (\S+)", r[2])[1]) for r in runs]
    expected = [(method, seed) for method in ("single", "none", "average") for seed in ("42", "43", "44")]
    assert 3 <= len(started) < len(expected) and sorted(started) == sorted(expected[: len(started)])
    spans = [(int(start), int(end)) for start, end, _ in runs]
    assert max(sum(s <= t < e for s, e in spans) for t, _ in spans) == 2  # the queue is full, never over it
    assert "queue stopped at" in (tmp_path / "out" / "summary.txt").read_text()


def test_the_device_script_queues_the_low_resource_regime_beside_the_main_study(tmp_path):
    """Without STUDENTS_ONLY: the grids and, as a second queue, the low-resource config's methods x seeds on the
    main study's teachers, each run with its own results file."""
    runs = [arguments for _, _, arguments in run_device_script(tmp_path, 8, WORKERS="1")]
    low_resource = [arguments for arguments in runs if "v2_sst2_low_resource.yaml" in arguments]
    assert len(low_resource) == 1 and "--methods none --seeds 42" in low_resource[0]
    assert f"--teachers_from {tmp_path}/bundle/runs/v2 " in low_resource[0]
    assert low_resource[0].endswith(f"--results_csv {tmp_path}/bundle/runs/v2-low-resource/sst2-42-none.csv")
    assert sum("sweep.py" in arguments for arguments in runs) == 2
    assert sum("--config recipes/configs/v2_sst2.yaml --study_dir" in arguments for arguments in runs) == 1


def test_compare_extracts_the_logits_again_when_its_teachers_change(tmp_path):
    """Issue 27: after adding a teacher, the study's multi-teacher students learned from the old teachers' logits
    while its table listed the new one. The logits reused are exactly the asked teachers' (names, scores, rows)."""
    import compare

    base = save_tiny_model(tmp_path / "base")
    argv = COMMON + ["--max_train_rows", "200", "--max_eval_rows", "50", "--teacher_epochs", "0.2"]
    argv += ["--student_model", base, "--student_layers", "0", "--seeds", "1", "--max_steps", "2"]
    argv += ["--study_dir", str(tmp_path / "study"), "--results_csv", str(tmp_path / "r.csv")]
    argv += ["--output_dir", str(tmp_path / "unused")]
    first = compare.main(argv + ["--teachers", "sklearn_tfidf", "--methods", "none,single"])
    second = compare.main(argv + ["--teachers", f"sklearn_tfidf,{base}", "--methods", "none,single,average"])
    logits = datasets.load_from_disk(str(tmp_path / "study" / "sst2" / "logits"))
    assert [teacher.name for teacher in read_metadata(logits["train"]).teachers] == ["sklearn_tfidf-sst2", "base-sst2"]
    average = json.loads((tmp_path / "study" / "sst2" / "student-average-seed1" / "eval_results.json").read_text())
    assert [teacher["name"] for teacher in average["teachers"]] == ["sklearn_tfidf-sst2", "base-sst2"]
    reused = {"none", "single: sklearn_tfidf"}  # their teachers' logits did not change: the same question
    assert second[second.method.isin(reused)].score.tolist() == first[first.method.isin(reused)].score.tolist()


def test_run_records_name_the_cpu_model_and_its_bf16_instructions(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu avx2\n" * 2)
    assert processor_name(str(cpuinfo)) == "AMD EPYC"
    cpuinfo.write_text("model name\t: Intel(R) Xeon(R) Platinum 8480+\nflags\t\t: avx512f avx512_bf16 amx_bf16\n")
    assert processor_name(str(cpuinfo)) == "Intel(R) Xeon(R) Platinum 8480+ (avx512_bf16)"
    cpuinfo.write_text("model name\t: Some CPU\nflags\t\t: avx512f amx_bf16\n")  # what also turns bf16 on
    assert processor_name(str(cpuinfo)) == "Some CPU (amx_bf16)"
    assert processor_name(str(tmp_path / "missing")) is None


def test_the_v3_device_script_plans_the_runs_make_study_v3_makes():
    """recipes/device/run_v3.sh runs a task whole on a lent GPU: its queue must be `make study-v3`'s runs of that task
    (the config's methods x 5 seeds, `fitted` and `confidence` x 3, the four others x 3 on MRPC and MNLI, MNLI's
    6-layer student), or a GPU session would leave a task short of planned runs."""
    script = ROOT / "recipes" / "device" / "run_v3.sh"
    functions = re.findall(r"^(?:config_list|plan)\(\) \{.*?^\}", script.read_text(), re.MULTILINE | re.DOTALL)
    planned = {}
    for task in ("mrpc", "mnli", "qqp", "sst2"):
        lines = subprocess.run(
            ["bash", "-c", "\n".join(functions) + f"\nplan {task}"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split("\n")
        planned[task] = {}
        for study, method, seed in (line.split() for line in lines if line):
            planned[task].setdefault((study, method), []).append(int(seed))
    five, three = [42, 43, 44, 45, 46], [42, 43, 44]
    main = {m: five for m in ("single", "none", "average", "weighted")} | {"fitted": three, "confidence": three}
    others = {m: three for m in ("min_entropy", "gating", "average+calibrated", "average_to_confidence")}
    makefile = (ROOT / "Makefile").read_text()  # the 3-seed lists above are the Makefile's own
    assert f"V3_THREE := --methods fitted,confidence --seeds {','.join(map(str, three))}" in makefile
    assert f"V3_OTHERS := --methods {','.join(others)} --seeds {','.join(map(str, three))}" in makefile
    for task in ("qqp", "sst2"):
        assert planned[task] == {("v3", m): s for m, s in main.items()}, task
    assert planned["mrpc"] == {("v3", m): s for m, s in (main | others).items()}
    six_layer = {("v3-6layer", m): s for m, s in main.items()}
    assert planned["mnli"] == {("v3", m): s for m, s in (main | others).items()} | six_layer
    assert list(planned["mnli"])[0] == ("v3", "single")  # one run per teacher: first, so a deadline cuts the least
