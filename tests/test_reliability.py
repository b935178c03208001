"""Reliability: exact resume, two-process runs, interrupted extraction, property tests, secrets and pickles."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from helpers import launch, tiny_config, tiny_student, tiny_tokenizer
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from distill_trainer import DistillationTrainer, GatingNetwork, fuse_logits, kd_loss
from distill_trainer.study.args import TaskArguments
from distill_trainer.study.extraction import extract_to_disk
from distill_trainer.study.teachers import TransformersTeacher

ROOT = Path(__file__).resolve().parents[1]
GLUE = ROOT.parent / "shared" / "data" / "glue"
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
sys.path.insert(0, str(ROOT / "recipes"))
needs_glue = pytest.mark.skipif(not GLUE.is_dir(), reason="needs ../shared/data/glue")


# ---- exact resume ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fusion, fast",
    [
        ("average", {}),
        ("gating", {}),
        ("average", {"train_sampling_strategy": "group_by_length"}),
        ("gating", {"train_sampling_strategy": "group_by_length", "bf16": True}),
    ],
)
@pytest.mark.slow
def test_resume_from_checkpoint_ends_where_the_uninterrupted_run_ends(
    tmp_path, tokenizer, sentiment_data_with_lengths, fusion, fast
):
    """Interrupted at step 4 of 8 and resumed: same weights, gate and eval metrics as one straight run; also with
    length-grouped batches (the sampler's order is restored) and bf16 autocast."""
    data = sentiment_data_with_lengths

    def run(name, resume=None):
        args = tiny_config(
            tmp_path,
            fusion=fusion,
            output_dir=str(tmp_path / name),
            max_steps=8,
            save_strategy="steps",
            save_steps=4,
            per_device_train_batch_size=16,
            **fast,
        )
        # dropout on, so the restored RNG state matters too
        trainer = DistillationTrainer(
            model=tiny_student(dropout=0.1),
            args=args,
            train_dataset=data,
            eval_dataset=data.select(range(64)),
            processing_class=tokenizer,
        )
        trainer.train(resume_from_checkpoint=resume)
        return trainer

    straight = run("straight")
    resumed = run("resumed", resume=str(tmp_path / "straight" / "checkpoint-4"))
    for name, value in straight.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[name]), name
    if fusion == "gating":
        for name, value in straight.gate.state_dict().items():
            assert torch.equal(value, resumed.gate.state_dict()[name]), name
    first, second = straight.evaluate(), resumed.evaluate()
    assert first["eval_loss"] == second["eval_loss"]


# ---- two processes --------------------------------------------------------------------------------


def run_two_and_one_process(helper: str, tmp_path, per_device_batch: int) -> None:
    """`tests/<helper> OUTPUT_DIR BATCH` under `accelerate launch` (2 processes, into `ddp`) and in one process with
    twice the batch (into `single`): the same global batch."""
    for command, folder, batch in (
        (launch(), "ddp", per_device_batch),
        ([sys.executable], "single", 2 * per_device_batch),
    ):
        script = [*command, str(ROOT / "tests" / helper), str(tmp_path / folder), str(batch)]
        run = subprocess.run(script, capture_output=True, text=True, timeout=600, env=ENV, cwd=ROOT)
        assert run.returncode == 0, run.stderr[-3000:]


@pytest.mark.multiprocess
def test_two_process_gating_run_is_synchronised_and_matches_one_process(tmp_path):
    run_two_and_one_process("ddp_gating_run.py", tmp_path, 8)
    rank0, rank1 = (torch.load(tmp_path / "ddp" / f"rank{r}.pt") for r in (0, 1))
    single = torch.load(tmp_path / "single" / "rank0.pt")
    assert any(key.startswith("gate.") for key in rank0)
    for key in rank0:
        assert torch.equal(rank0[key], rank1[key]), f"processes diverged on {key}"
        torch.testing.assert_close(rank0[key], single[key], rtol=1e-4, atol=1e-5, msg=key)  # same global batch of 16


@pytest.mark.multiprocess
def test_two_process_causal_step_and_its_logged_terms_match_one_process(tmp_path):
    """Per-token loss under data parallelism: 2 processes x 16 rows, which score different numbers of tokens, give
    the weights and the logged `loss_kd` / `loss_ce` of 1 x 32 (session 31's review found process 0's terms logged,
    scaled by its share of the tokens: 4.29 / 6.70 against 2.66 / 4.17)."""
    run_two_and_one_process("ddp_causal_run.py", tmp_path, 16)
    ddp, single = (torch.load(tmp_path / folder / "rank0.pt") for folder in ("ddp", "single"))
    for key in single:
        torch.testing.assert_close(ddp[key], single[key], rtol=1e-4, atol=1e-6, msg=key)
    logged = [json.loads((tmp_path / folder / "logged.json").read_text()) for folder in ("ddp", "single")]
    assert logged[0] == pytest.approx(logged[1], rel=1e-4)


@needs_glue
@pytest.mark.multiprocess
def test_two_process_extraction_equals_one_process(tmp_path):
    tiny_student(id2label={0: "negative", 1: "positive"}).save_pretrained(tmp_path / "teacher")
    tiny_tokenizer().save_pretrained(tmp_path / "teacher")
    arguments = [
        "--task",
        "sst2",
        "--data",
        str(GLUE),
        "--max_train_rows",
        "203",
        "--max_eval_rows",
        "51",
        "--max_length",
        "32",
        "--batch_size",
        "16",
        "--teachers",
        str(tmp_path / "teacher"),
    ]
    recipe = str(ROOT / "recipes" / "extract_logits.py")
    for name, launcher, processes in (("one", [sys.executable], 1), ("two", launch(), 2)):
        finished = subprocess.run(
            launcher + [recipe, *arguments, "--output_dir", str(tmp_path / name)],
            capture_output=True,
            text=True,
            timeout=600,
            env=ENV,
            cwd=ROOT,
        )
        assert finished.returncode == 0, finished.stderr[-3000:]
        # each process alone would also give the same dataset: the rows must really have been shared
        assert f"by {processes} process(es)" in finished.stdout
    one, two = (datasets.load_from_disk(str(tmp_path / name)) for name in ("one", "two"))
    for split, rows in (("train", 203), ("validation", 51)):
        assert len(two[split]) == rows and two[split]["idx"][:] == one[split]["idx"][:]
        np.testing.assert_allclose(
            np.asarray(two[split]["teacher_logits"][:]),
            np.asarray(one[split]["teacher_logits"][:]),
            rtol=1e-5,
            atol=1e-6,
        )
    assert not (tmp_path / "two.teacher-cache").exists()


# ---- interrupted extraction -----------------------------------------------------------------------


@needs_glue
@pytest.mark.multiprocess
def test_killed_extraction_resumes_without_redoing_finished_teachers(tmp_path, caplog):
    tiny_student(id2label={0: "negative", 1: "positive"}).save_pretrained(tmp_path / "teacher")
    tiny_tokenizer().save_pretrained(tmp_path / "teacher")
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "recipes" / "train_teacher.py"),
            "--task",
            "sst2",
            "--data",
            str(GLUE),
            "--max_train_rows",
            "2000",
            "--model_name_or_path",
            "sklearn_tfidf",
            "--output_dir",
            str(tmp_path / "tfidf"),
        ],
        check=True,
        capture_output=True,
        env=ENV,
        cwd=ROOT,
    )
    # teacher 0 (TF-IDF) finishes in a second; teacher 1 at batch size 1 takes long enough to be killed
    argv = [
        "--task",
        "sst2",
        "--data",
        str(GLUE),
        "--max_train_rows",
        "3000",
        "--max_eval_rows",
        "200",
        "--max_length",
        "32",
        "--teachers",
        f"{tmp_path / 'tfidf'},{tmp_path / 'teacher'}",
        "--output_dir",
        str(tmp_path / "logits"),
    ]
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "recipes" / "extract_logits.py"), *argv, "--batch_size", "1"],
        env=ENV,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    cached = tmp_path / "logits.teacher-cache" / "teacher-0.npz"
    deadline = time.time() + 300
    while not cached.exists() and time.time() < deadline and process.poll() is None:
        time.sleep(0.1)
    assert process.poll() is None, "extraction finished before it could be interrupted"
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert cached.exists() and not (tmp_path / "logits").exists()  # nothing that loads as if complete

    import extract_logits

    with caplog.at_level("WARNING"):
        resumed = extract_logits.main(argv)
    assert "Teacher 0 (sklearn_tfidf-sst2): reusing its logits" in caplog.text
    assert "Teacher 1" not in caplog.text  # only the unfinished teacher ran again
    assert not (tmp_path / "logits.teacher-cache").exists()  # removed once the dataset is in place
    task = TaskArguments(task="sst2", data=str(GLUE), max_train_rows=3000, max_eval_rows=200, max_length=32)
    straight = extract_to_disk(
        task.task_data(), [str(tmp_path / "tfidf"), str(tmp_path / "teacher")], str(tmp_path / "straight")
    )
    for split in ("train", "validation"):
        np.testing.assert_allclose(
            np.asarray(resumed[split]["teacher_logits"][:]),
            np.asarray(straight[split]["teacher_logits"][:]),
            rtol=1e-5,
            atol=1e-6,
        )


# ---- property tests -------------------------------------------------------------------------------

finite = st.floats(min_value=-1e4, max_value=1e4, allow_nan=False, width=32)
shapes = st.tuples(st.integers(1, 6), st.integers(1, 4), st.integers(2, 5))  # batch, teachers, labels


@settings(max_examples=60, deadline=None)
@given(data=st.data(), shape=shapes, strategy=st.sampled_from(["average", "weighted", "min_entropy", "single"]))
def test_fusion_of_finite_logits_is_finite_and_shaped(data, shape, strategy):
    logits = torch.from_numpy(data.draw(arrays(np.float32, shape, elements=finite)))
    kwargs = {
        "weighted": {"weights": data.draw(st.lists(st.floats(0.01, 1.0), min_size=shape[1], max_size=shape[1]))},
        "single": {"teacher_index": data.draw(st.integers(0, shape[1] - 1))},
    }.get(strategy, {})
    fused = fuse_logits(logits, strategy, **kwargs)
    assert fused.shape == (shape[0], shape[2]) and torch.isfinite(fused).all()


@settings(max_examples=40, deadline=None)
@given(data=st.data(), shape=shapes, hidden=st.integers(1, 8))
def test_gate_of_finite_inputs_is_finite_and_within_the_teachers(data, shape, hidden):
    batch, teachers, labels = shape
    gate = GatingNetwork(hidden, teachers, hidden_size=4)
    torch.nn.init.normal_(gate.mlp[-1].weight)  # a trained gate, not the all-equal start
    logits = torch.from_numpy(data.draw(arrays(np.float32, shape, elements=finite)))
    cls = torch.from_numpy(data.draw(arrays(np.float32, (batch, hidden), elements=finite)))
    fused = gate(cls, logits)
    assert fused.shape == (batch, labels) and torch.isfinite(fused).all()
    tolerance = 1e-3 * (1 + logits.abs().amax())  # a convex combination stays between the teachers
    assert (fused >= logits.amin(1) - tolerance).all() and (fused <= logits.amax(1) + tolerance).all()


@settings(max_examples=60, deadline=None)
@given(data=st.data(), shape=shapes, temperature=st.floats(0.5, 20.0), alpha=st.floats(0.0, 1.0))
def test_kd_loss_of_finite_logits_is_finite_and_non_negative(data, shape, temperature, alpha):
    batch, _, labels = shape
    student = torch.from_numpy(data.draw(arrays(np.float32, (batch, labels), elements=finite)))
    teacher = torch.from_numpy(data.draw(arrays(np.float32, (batch, labels), elements=finite)))
    targets = torch.tensor(data.draw(st.lists(st.integers(0, labels - 1), min_size=batch, max_size=batch)))
    loss = kd_loss(student, teacher, targets, temperature=temperature, alpha=alpha)
    assert loss.shape == () and torch.isfinite(loss) and loss >= -1e-4


@settings(max_examples=30, deadline=None)
@given(batch=st.integers(1, 4), teachers=st.integers(1, 3), labels=st.integers(2, 4), wrong=st.integers(0, 2))
def test_mismatched_shapes_are_a_value_error(batch, teachers, labels, wrong):
    logits = torch.zeros(batch, teachers, labels)
    bad = [
        torch.zeros(batch, labels),
        torch.zeros(batch, teachers, labels, 1),
        torch.full((batch, teachers, labels), float("nan")),
    ][wrong]
    with pytest.raises(ValueError):
        fuse_logits(bad, "average")
    with pytest.raises(ValueError):
        kd_loss(
            torch.zeros(batch, labels + 1),
            fuse_logits(logits, "average"),
            torch.zeros(batch, dtype=torch.long),
            2.0,
            0.5,
        )


# ---- secrets and pickles --------------------------------------------------------------------------


@needs_glue
@pytest.mark.slow
def test_a_hub_token_on_the_command_line_is_never_written(tmp_path):
    import distill
    import extract_logits
    import train_teacher

    secret = "hf_CommandLineSecretThatMustNotBeSaved"
    common = [
        "--task",
        "sst2",
        "--data",
        str(GLUE),
        "--max_train_rows",
        "64",
        "--max_eval_rows",
        "32",
        "--max_length",
        "16",
        "--report_to",
        "none",
        "--use_cpu",
        "true",
        "--disable_tqdm",
        "true",
        "--hub_token",
        secret,
    ]
    tiny_student().save_pretrained(tmp_path / "base")
    tiny_tokenizer().save_pretrained(tmp_path / "base")
    train_teacher.main(
        common
        + [
            "--model_name_or_path",
            str(tmp_path / "base"),
            "--output_dir",
            str(tmp_path / "teacher"),
            "--max_steps",
            "2",
            "--save_strategy",
            "steps",
            "--save_steps",
            "1",
        ]
    )
    extract_logits.main(
        common[:10] + ["--teachers", str(tmp_path / "teacher"), "--output_dir", str(tmp_path / "logits")]
    )
    distill.main(
        common
        + [
            "--logit_dataset",
            str(tmp_path / "logits"),
            "--student_model",
            str(tmp_path / "base"),
            "--output_dir",
            str(tmp_path / "student"),
            "--max_steps",
            "2",
            "--save_strategy",
            "steps",
            "--save_steps",
            "1",
            "--fusion",
            "gating",
        ]
    )
    written = [path for path in tmp_path.rglob("*") if path.is_file()]
    assert any(path.name == "training_args.bin" for path in written)  # checkpoints were saved, args included
    for path in written:
        assert secret.encode() not in path.read_bytes(), path
    assert "hub_token" not in json.loads((tmp_path / "student" / "eval_results.json").read_text())


def test_pickle_only_checkpoints_need_an_explicit_flag(tmp_path):
    model = tiny_student(id2label={0: "negative", 1: "positive"})
    model.save_pretrained(tmp_path)
    tiny_tokenizer().save_pretrained(tmp_path)
    os.remove(tmp_path / "model.safetensors")
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
    with pytest.raises(ValueError, match="no safetensors weights.*allow_pickle"):
        TransformersTeacher(str(tmp_path), ["negative", "positive"])
    teacher = TransformersTeacher(str(tmp_path), ["negative", "positive"], allow_pickle=True)
    assert teacher([("good film",)], progress=False).shape == (1, 2)
    assert teacher.model.config.to_dict().get("auto_map") is None  # no remote code was involved
