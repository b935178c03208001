"""Issue 31's study runner (`distill-trainer causal-study`): the data folder, task teachers tuned from a base model,
one top-k extraction with the smaller k cut from it, every student run (methods, k grid, dense online reference),
reuse of whatever is finished for the same question, and what is refused before any work. Tiny random Llamas over
the packaged MiniLM's real vocabulary, real MNLI rows."""

from __future__ import annotations

import json
import math
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
import yaml
from causal_helpers import causal_config
from test_causal_recipes import GLUE, tiny_teacher
from transformers import AutoModelForCausalLM, AutoTokenizer

from distill_trainer import read_topk_metadata
from distill_trainer.signals import TeacherSignals
from distill_trainer.study import causal_study
from distill_trainer.study.args import StudentArguments, TaskArguments
from distill_trainer.study.causal_lm import build_topk_dataset
from distill_trainer.study.causal_storage import fit_mixture_weights, top1_agreement, truncate_topk
from distill_trainer.study.causal_tasks import prepare_causal_task
from distill_trainer.study.cli import main as cli
from distill_trainer.study.packaged_models import resolve_model
from distill_trainer.study.runs import StudentResult, TeacherRecord

COLUMNS = causal_study.COLUMNS


def never(*args, **kwargs):
    raise AssertionError("a finished step ran again")


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A tiny 2-layer random Llama over MiniLM's vocabulary (the base model), and an MNLI folder of 24/8/8 pairs."""
    root = tmp_path_factory.mktemp("causal-study")
    tokenizer = AutoTokenizer.from_pretrained(resolve_model("all-MiniLM-L6-v2"))
    prepare_causal_task("mnli", str(GLUE), str(root / "data"), {"train": 24, "dev": 8, "validation": 8})
    return root, tiny_teacher(root / "base", 0, tokenizer), tiny_teacher(root / "other", 1, tokenizer)


def study_config(root: Path, base_model: str, **changes) -> dict:
    config = {
        "task": "mnli",
        "glue_data": str(GLUE),
        "study_dir": str(root / "study"),
        "max_train_rows": 24,
        "max_dev_rows": 8,
        "max_validation_rows": 8,
        "max_length": 64,
        "base_model": base_model,
        "teacher_learning_rates": [1.0e-2],
        "teacher_train_fractions": [0.5],
        "teacher_epochs": 1,
        "teacher_max_steps": 2,
        "student_layers": [0],
        "methods": ["none", "single", "average", "fitted"],
        "k_grid": [2, 4],
        "k_grid_methods": ["best_single", "average"],
        "dense_methods": ["average"],
        "seeds": [42],
        "extract_batch_size": 8,
        "per_device_train_batch_size": 4,
        "per_device_eval_batch_size": 8,
        "max_steps": 2,
        "learning_rate": 1.0e-3,
        "temperature": 1.0,
        "alpha": 0.5,
        "use_cpu": True,
        "report_to": "none",
        "save_strategy": "no",
        "disable_tqdm": True,
        "bf16": False,
        "train_sampling_strategy": "random",
    }
    config.update(changes)
    path = root / f"config-{len(list(root.glob('config-*.yaml')))}.yaml"
    path.write_text(yaml.safe_dump(config))
    return ["causal-study", "--config", str(path)]


@pytest.fixture(scope="module")
def wide(base):
    """Both tiny teachers' top-8 over the folder, written to disk."""
    root, tiny, other = base
    task_args = TaskArguments(task="causal_lm", data=str(root / "data"), max_length=64)
    logit_data = build_topk_dataset(task_args, COLUMNS, [tiny, other], k=8)
    logit_data.save_to_disk(str(root / "wide"))
    return task_args, logit_data, str(root / "wide")


def test_truncating_the_stored_topk_equals_extracting_at_that_k(base, wide):
    root, tiny, other = base
    task_args, wide, _ = wide
    tokenizer = AutoTokenizer.from_pretrained(tiny)
    direct = build_topk_dataset(task_args, COLUMNS, [tiny, other], k=3)
    cut = truncate_topk(wide, 3, tokenizer)
    for split in ("train", "dev", "validation"):
        for column in ("teacher_topk_ids", "teacher_topk_logprobs", "input_ids", "labels"):
            assert cut[split][column][:] == direct[split][column][:], (split, column)
        assert read_topk_metadata(cut[split]) == read_topk_metadata(direct[split])
    with pytest.raises(ValueError, match="cannot grow"):
        truncate_topk(direct, 8, tokenizer)
    weights = fit_mixture_weights(wide["dev"])  # dev-fitted mixture weights: a point of the simplex
    assert len(weights) == 2 and sum(weights) == pytest.approx(1) and min(weights) >= 0
    agreement = np.array(top1_agreement(wide["dev"]))
    assert agreement.shape == (2, 2) and (np.diag(agreement) == 1).all() and agreement[0, 1] < 1


@pytest.fixture
def live_batches(monkeypatch):
    """How many live teachers each training step ran (one entry per step that ran teachers live)."""
    seen = []
    real_run_teachers = TeacherSignals.run_teachers

    def run_teachers(self, inputs):
        seen.append(len(self.teachers))
        return real_run_teachers(self, inputs)

    monkeypatch.setattr(TeacherSignals, "run_teachers", run_teachers)
    return seen


def test_a_dense_online_student_trains_with_the_teachers_live_and_is_reused_for_that_question_only(
    base, wide, tmp_path, monkeypatch, live_batches
):
    root, tiny, other = base
    task_args, _, folder = wide
    student = StudentArguments(logit_dataset=folder, student_model=tiny, student_layers=[0])
    config = causal_config(tmp_path, output_dir=str(tmp_path / "dense"), max_steps=2, fusion="average")
    record = causal_study.student_or_reuse(task_args, student, config, [tiny, other])
    assert live_batches == [2, 2]  # both training steps ran both teachers live
    assert record.question["student"]["live_teachers"] == [tiny, other]
    per_row = np.load(tmp_path / "dense" / "validation_nll.npy")  # per validation row: summed NLL, tokens
    assert per_row.shape == (8, 2) and per_row[:, 1].sum() == record.metrics["eval_tokens"]
    assert per_row[:, 0].sum() / per_row[:, 1].sum() == pytest.approx(record.metrics["eval_loss"], rel=1e-6)
    # its dev score (what a study chooses students by), recomputed with transformers' own loss, row by row
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "dense").eval()
    nll = tokens = 0
    for row in datasets.load_from_disk(folder)["dev"]:
        labels = torch.tensor([row["labels"]])
        scored = int((labels[0, 1:] != -100).sum())
        if scored == 0:  # a completion cut off by max_length: nothing to score (its mean loss is nan)
            continue
        with torch.no_grad():
            nll += model(input_ids=torch.tensor([row["input_ids"]]), labels=labels).loss.item() * scored
        tokens += scored
    assert record.dev_metrics["eval_tokens"] == tokens
    assert record.dev_metrics["eval_loss"] == pytest.approx(nll / tokens, rel=1e-5)
    assert record.dev_score == pytest.approx(math.exp(nll / tokens), rel=1e-5)
    monkeypatch.setattr(causal_study, "distill_causal_student", never)
    assert causal_study.student_or_reuse(task_args, student, config, [tiny, other]) == record
    with pytest.raises(ValueError, match="student.live_teachers"):  # other live teachers: another question
        causal_study.student_or_reuse(task_args, student, config, [tiny])
    with pytest.raises(ValueError, match="student.live_teachers"):  # the stored top-k instead: another question
        causal_study.student_or_reuse(task_args, student, config)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"task": "sst2"}, "task must be one of"),
        ({"teacher_learning_rates": [-1.0]}, "teacher_learning_rates must be > 0"),
        ({"teacher_train_fractions": [0.5, 1.0]}, "one per learning rate"),
        ({"methods": ["none", "gating"]}, "methods \\['gating'\\] are not among"),
        ({"dense_methods": ["fitted"]}, "dense_methods \\['fitted'\\]"),
        ({"k_grid": [0, 4]}, "k_grid must hold k >= 1"),
        ({"seeds": [42, 42]}, "seeds must be distinct"),
    ],
)
def test_a_bad_config_is_refused_before_any_work(base, tmp_path, change, message):
    root, tiny, _ = base
    with pytest.raises(ValueError, match=message):
        cli(study_config(tmp_path, tiny, **change))
    assert not (tmp_path / "study").exists()


def test_a_data_folder_prepared_with_other_options_is_refused(base, tmp_path):
    root, tiny, _ = base
    prepare_causal_task("mnli", str(GLUE), str(tmp_path / "study" / "mnli" / "data"), {"train": 16})
    with pytest.raises(ValueError, match="prepared with other options .*'rows'"):
        cli(study_config(tmp_path, tiny))
    assert sorted(p.name for p in (tmp_path / "study" / "mnli").iterdir()) == ["data"]


@pytest.mark.slow
def test_the_whole_study_runs_once_and_a_second_call_reuses_every_step(base, tmp_path, monkeypatch, live_batches):
    root, tiny, _ = base
    argv = study_config(tmp_path, tiny)
    table = cli(argv)
    task_root = tmp_path / "study" / "mnli"
    teacher = TeacherRecord.load(str(task_root / "teacher-1-lr0.01-rows0.5"))
    assert teacher.train_rows == 12 and teacher.question["task"]["max_train_rows"] == 12  # half of the 24 pairs
    runs = [
        "none",
        "single-0-k4",
        "single-1-k4",
        "average-k4",
        "fitted-k4",
        "best_single-k2",
        "average-k2",
        "average-dense",
    ]
    assert list(table[table.type == "student"].run) == [f"student-{run}-seed42" for run in runs]
    for run in runs:
        folder = task_root / f"student-{run}-seed42"
        record = StudentResult.load(str(folder))
        per_row = np.load(folder / "validation_nll.npy")
        assert per_row.shape == (8, 2) and per_row[:, 1].sum() == record.metrics["eval_tokens"]
        assert per_row[:, 0].sum() / per_row[:, 1].sum() == pytest.approx(record.metrics["eval_loss"], rel=1e-6)
    dense = StudentResult.load(str(task_root / "student-average-dense-seed42"))
    assert dense.question["student"]["live_teachers"] == [tiny, str(task_root / "teacher-1-lr0.01-rows0.5")]
    assert live_batches and set(live_batches) == {2}  # the dense run's steps ran both teachers live
    fitted = StudentResult.load(str(task_root / "student-fitted-k4-seed42"))
    assert fitted.fusion == "weighted" and sum(fitted.fusion_weights) == pytest.approx(1)
    best = int(np.argmax([t["dev_score"] for t in fitted.teachers]))
    assert StudentResult.load(str(task_root / "student-best_single-k2-seed42")).teacher_index == best
    for k in (2, 4):
        record = json.loads((task_root / f"logits-k{k}.json").read_text())
        assert record["question"]["k"] == k and record["bytes"] > 0 and record["wall_time_s"] > 0
        assert read_topk_metadata(datasets.load_from_disk(str(task_root / f"logits-k{k}"))["train"]).k == k
    assert (task_root / "results.csv").is_file()
    agreement = json.loads((task_root / "teachers.json").read_text())["top1_agreement"]
    assert set(agreement) == {"dev", "validation"} and len(agreement["dev"]) == 2

    for name in ("distill_causal_student", "train_causal_teacher", "extract_topk_to_disk", "cut_topk"):
        monkeypatch.setattr(causal_study, name, never)
    again = cli(argv)
    assert again.equals(table)

    with pytest.raises(ValueError, match="config.alpha: 0.5 there, 0.7 asked"):  # another question: refused
        cli(study_config(tmp_path, tiny, alpha=0.7))


def test_a_stored_topk_student_is_reused_only_for_the_same_teachers(base, wide, tmp_path, caplog):
    """Found by a review: the question held the rows only, so a student of other teachers' top-k (a teacher added
    or retrained, another dtype) was reused as this one. Records from before keep being reused, with a warning."""
    root, tiny, other = base
    task_args, _, folder = wide
    alone = str(tmp_path / "alone")
    build_topk_dataset(task_args, COLUMNS, [other], k=8).save_to_disk(alone)
    config = causal_config(tmp_path, output_dir=str(tmp_path / "s"), max_steps=1, fusion="average")
    student = StudentArguments(logit_dataset=folder, student_model=tiny, student_layers=[0])
    record = causal_study.student_or_reuse(task_args, student, config)
    assert len(record.question["inputs"]["train"]["teachers"]) == 2
    with pytest.raises(ValueError, match="inputs.train"):
        causal_study.student_or_reuse(task_args, StudentArguments(alone, tiny, [0]), config)
    for split in record.question["inputs"].values():  # as recorded before the teachers were part of it
        del split["teachers"]
    record.save(str(tmp_path / "s"))
    with caplog.at_level("WARNING"):
        assert causal_study.student_or_reuse(task_args, StudentArguments(alone, tiny, [0]), config) == record
    assert "recorded before its teachers were in its question" in caplog.text


def test_a_resumed_extraction_does_not_reuse_a_teacher_retrained_since(base, tmp_path, monkeypatch):
    from distill_trainer.study import causal_lm

    root, tiny, other = base
    tokenizer = AutoTokenizer.from_pretrained(tiny)
    teacher = tiny_teacher(tmp_path / "t0", 5, tokenizer)
    task_args = TaskArguments(task="causal_lm", data=str(root / "data"), max_length=64)
    calls, run = [], causal_lm.sharded_topk

    def interrupted(model, rows, **options):
        calls.append(1)
        if len(calls) > 3:  # the second teacher's first split: the first teacher is cached by then
            raise KeyboardInterrupt
        return run(model, rows, **options)

    monkeypatch.setattr(causal_lm, "sharded_topk", interrupted)
    with pytest.raises(KeyboardInterrupt):
        causal_lm.extract_topk_to_disk(task_args, COLUMNS, [teacher, other], str(tmp_path / "L"), k=4)
    monkeypatch.setattr(causal_lm, "sharded_topk", run)
    tiny_teacher(tmp_path / "t0", 6, tokenizer)  # retrained in its folder
    resumed = causal_lm.extract_topk_to_disk(task_args, COLUMNS, [teacher, other], str(tmp_path / "L"), k=4)
    fresh = build_topk_dataset(task_args, COLUMNS, [teacher, other], k=4)
    assert resumed["train"]["teacher_topk_ids"] == fresh["train"]["teacher_topk_ids"]
    assert read_topk_metadata(resumed["train"]).teachers[0].revision.startswith("sha256:")


def test_padded_embeddings_extract_with_the_models_vocabulary_and_a_mismatch_is_refused_first(base, tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    root, tiny, _ = base
    tokenizer = AutoTokenizer.from_pretrained(tiny)
    padded = tmp_path / "padded"
    config = LlamaConfig.from_pretrained(tiny, vocab_size=len(tokenizer) + 64)
    LlamaForCausalLM(config).save_pretrained(padded)
    tokenizer.save_pretrained(padded)
    task_args = TaskArguments(task="causal_lm", data=str(root / "data"), max_length=64)
    logit_data = build_topk_dataset(task_args, COLUMNS, [str(padded)], k=4)
    assert read_topk_metadata(logit_data["train"]).vocab_size == len(tokenizer) + 64
    with pytest.raises(ValueError, match="other embedding padding"):  # before either teacher runs
        build_topk_dataset(task_args, COLUMNS, [tiny, str(padded)], k=4)


def test_gguf_files_of_the_same_name_get_their_own_cache_folder(tmp_path, monkeypatch):
    from distill_trainer.study.causal_data import gguf_cache_folder

    monkeypatch.setenv("DISTILL_TRAINER_CACHE", str(tmp_path / "cache"))
    for name in ("a", "b"):
        (tmp_path / name / "gguf").mkdir(parents=True)
        (tmp_path / name / "gguf" / "model.gguf").write_bytes(name.encode())
    first, second = (gguf_cache_folder(str(tmp_path / name / "gguf"), "model.gguf") for name in ("a", "b"))
    assert first != second and Path(first).name.startswith("gguf--model-")
    (tmp_path / "a" / "gguf" / "model.gguf").write_bytes(b"replaced in place")
    assert gguf_cache_folder(str(tmp_path / "a" / "gguf"), "model.gguf") != first
    assert gguf_cache_folder("org1/X-GGUF", "q8.gguf") != gguf_cache_folder("org2/X-GGUF", "q8.gguf")


def test_a_process_with_no_rows_returns_empty_topk(base):
    from distill_trainer.study.causal_lm import teacher_topk

    root, tiny, _ = base
    rows = datasets.Dataset.from_dict({"input_ids": [[2, 3]], "labels": [[-100, 3]]}).select([])
    found = teacher_topk(AutoModelForCausalLM.from_pretrained(tiny), rows, k=4, batch_size=2, dtype="float16")
    assert found["ids"].shape == (0, 4) and found["logprobs"].dtype == np.float16 and found["nll"].tolist() == [0, 0]
