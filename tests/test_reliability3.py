"""Hostile input, third round (issue 27): fits from the metadata, curricula of strategies with parameters,
non-finite fused targets, tokens in representations, schedules that end where they say."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import tiny_config, tiny_student, tiny_tokenizer
from torch import nn
from transformers import TrainingArguments

from distill_trainer import DistillationConfig, DistillationTrainer, FusionStrategy, attach_teacher_logits
from distill_trainer.fitting import validation_fits
from distill_trainer.fusion import FUSION_REGISTRY, register_fusion
from distill_trainer.study.args import TaskArguments
from distill_trainer.study.runs import StudentResult
from distill_trainer.study.teacher_training import train_teacher
from distill_trainer.study.training import BUNDLED_LAYERS_FILE, check_bundled_layers

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "recipes"))


def trainer_for(tmp_path, tokenizer, train, **options) -> DistillationTrainer:
    return DistillationTrainer(
        model=tiny_student(), args=tiny_config(tmp_path, **options), train_dataset=train, processing_class=tokenizer
    )


@pytest.fixture
def fits(sentiment_data):
    logits = np.asarray(sentiment_data["teacher_logits"][:], dtype=np.float64)
    return logits, validation_fits(logits, np.asarray(sentiment_data["label"][:]))


@pytest.mark.parametrize(
    "field, value",
    [
        ("teacher_temperatures", [float("nan"), 1.0, 1.0]),
        ("teacher_temperatures", [0.0, 1.0, 1.0]),
        ("teacher_temperatures", [-2.0, 1.0, 1.0]),
        ("teacher_temperatures", [2.0]),  # would broadcast to every teacher
        ("teacher_temperatures", [1.0, 1.0, float("inf")]),
        ("fusion_weights_calibrated", [0.5, 0.5]),
        ("fusion_weights_calibrated", [float("nan"), 0.5, 0.5]),
        ("fusion_weights", [-0.2, 0.6, 0.6]),
        ("fusion_weights", [0.0, 0.0, 0.0]),
        ("fusion_weights", [1.0]),
    ],
)
def test_bad_fits_in_the_metadata_are_refused_when_the_trainer_is_built(
    tmp_path, tokenizer, sentiment_data, fits, field, value
):
    logits, fitted = fits
    train = attach_teacher_logits(
        sentiment_data, logits, list("abc"), ["neg", "pos"], ["sentence"], fitted={**fitted, field: value}
    )
    options = {"fusion": "fitted"} if field == "fusion_weights" else {"fusion": "fitted", "calibrate_teachers": True}
    if field == "teacher_temperatures":
        options = {"fusion": "average", "calibrate_teachers": True}
    named = "teacher_temperatures" if field == "teacher_temperatures" else "fusion_weights"
    with pytest.raises(ValueError, match=rf'metadata.fitted\["{named}"\]|fusion_weights'):
        trainer_for(tmp_path, tokenizer, train, **options)


def test_a_nan_teacher_score_in_the_metadata_is_refused_for_weighted(tmp_path, tokenizer, sentiment_data, fits):
    logits, _ = fits
    train = attach_teacher_logits(sentiment_data, logits, list("abc"), ["neg", "pos"], ["sentence"])
    from distill_trainer.logits import read_metadata, write_metadata

    metadata = read_metadata(train)
    for teacher, score in zip(metadata.teachers, [0.8, float("nan"), 0.7], strict=False):
        teacher.validation_score = score
    train = write_metadata(train, metadata)
    with pytest.raises(ValueError, match="validation_score"):
        trainer_for(tmp_path, tokenizer, train, fusion="weighted")


@pytest.fixture
def parametric_strategy():
    @register_fusion("test_learned_mix")
    class LearnedMix(FusionStrategy):
        def __init__(self, n_teachers: int):
            super().__init__()
            self.logit_weights = nn.Parameter(torch.zeros(n_teachers))

        @classmethod
        def from_setup(cls, setup):
            return cls(setup.n_teachers)

        def fuse(self, teacher_logits, labels=None, hidden_state=None):
            return torch.einsum("t,btl->bl", torch.softmax(self.logit_weights, 0), teacher_logits)

    yield "test_learned_mix"
    FUSION_REGISTRY.pop("test_learned_mix")


@pytest.mark.parametrize("position", ["fusion", "curriculum_fusion"])
def test_a_strategy_with_parameters_is_refused_in_a_curriculum(
    tmp_path, tokenizer, sentiment_data, parametric_strategy, position
):
    options = {"fusion": "average", "curriculum_fusion": parametric_strategy}
    if position == "fusion":
        options = {"fusion": parametric_strategy, "curriculum_fusion": "average"}
    with pytest.raises(ValueError, match=rf"{position}='{parametric_strategy}' has parameters"):
        trainer_for(tmp_path, tokenizer, sentiment_data, **options)


@pytest.fixture(params=[float("nan"), float("inf")])
def broken_strategy(request):
    bad = request.param

    @register_fusion("test_broken")
    class Broken(FusionStrategy):
        def fuse(self, teacher_logits, labels=None, hidden_state=None):
            fused = teacher_logits.mean(1).clone()
            fused[0, 0] = bad
            return fused

    yield "test_broken"
    FUSION_REGISTRY.pop("test_broken")


def test_a_non_finite_fused_target_stops_training_naming_the_strategy_and_step(
    tmp_path, tokenizer, sentiment_data, broken_strategy
):
    trainer = trainer_for(tmp_path, tokenizer, sentiment_data, fusion=broken_strategy, max_steps=3)
    before = {name: p.detach().clone() for name, p in trainer.model.named_parameters()}
    with pytest.raises(
        ValueError, match=r"fused target of fusion='test_broken' is NaN or infinite at optimizer step 1"
    ):
        trainer.train()
    for name, parameter in trainer.model.named_parameters():  # stopped before the optimizer step
        assert torch.isfinite(parameter).all() and torch.equal(parameter, before[name]), name


def test_non_finite_loss_terms_stop_training(tmp_path, tokenizer, sentiment_data):
    trainer = trainer_for(tmp_path, tokenizer, sentiment_data, fusion="average", max_steps=3)
    with torch.no_grad():
        next(trainer.model.classifier.parameters()).fill_(float("nan"))  # the student's logits are NaN
    with pytest.raises(
        ValueError, match=r"loss term '(kd|ce)' \(fusion='average'\) is NaN or infinite at optimizer step 1"
    ):
        trainer.train()


def test_on_an_accelerator_the_check_waits_for_a_logging_step(tmp_path, tokenizer, sentiment_data, monkeypatch):
    """Stand-in for a GPU: the flags are kept as tensors (no sync per step) and raised at the next log."""
    trainer = trainer_for(tmp_path, tokenizer, sentiment_data, fusion="average")
    trainer.state.global_step = 4
    fused = torch.zeros(2, 2)
    fused[0, 0] = float("nan")
    device_like = fused.to("meta")  # not the CPU: its check must not read the value
    monkeypatch.setattr(torch, "isfinite", lambda x: torch.zeros((), dtype=torch.bool, device=x.device))
    trainer._check_finite(device_like, {})
    assert set(trainer._first_nonfinite_step) == {"the fused target of fusion='average'"}
    monkeypatch.undo()
    trainer._first_nonfinite_step = {"the fused target of fusion='average'": torch.tensor(5)}
    with pytest.raises(ValueError, match="at optimizer step 5"):
        trainer.log({"loss": 0.1})


def test_no_representation_of_the_config_shows_the_hub_token(tmp_path):
    secret = "hf_secret_DO_NOT_PRINT_0123456789"
    config = DistillationConfig(output_dir=str(tmp_path), hub_token=secret, report_to="none")
    for shown in (repr(config), str(config), f"{config!r}", repr([config]), str({"args": config})):
        assert secret not in shown and "temperature=" in shown
    assert secret not in config.to_json_string() and secret not in str(config.to_dict())
    assert config.hub_token == secret  # still there for pushing


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
@pytest.mark.parametrize("accumulation", [1, 2])
def test_schedules_reach_their_end_values_on_the_last_step(
    tmp_path, tokenizer, sentiment_data, schedule, accumulation
):
    trainer = trainer_for(
        tmp_path,
        tokenizer,
        sentiment_data,
        fusion="average",
        curriculum_fusion="confidence",
        alpha=0.2,
        alpha_schedule=schedule,
        alpha_end=0.9,
        temperature=4.0,
        temperature_schedule=schedule,
        temperature_end=1.0,
        max_steps=5,
        gradient_accumulation_steps=accumulation,
        logging_strategy="steps",
        logging_steps=1,
    )
    trainer.train()
    logged = [log for log in trainer.state.log_history if "loss" in log]
    assert len(logged) == 5
    assert (logged[0]["alpha"], logged[0]["temperature"], logged[0]["curriculum_weight"]) == (0.2, 4.0, 0.0)
    assert (logged[-1]["alpha"], logged[-1]["temperature"], logged[-1]["curriculum_weight"]) == (0.9, 1.0, 1.0)
    assert math.isclose(logged[2]["curriculum_weight"], 0.5)


# ---- the study layer ------------------------------------------------------------------------------------------

GLUE = Path(__file__).resolve().parents[2] / "shared" / "data" / "glue"


def sst2_copy(tmp_path, rows: int = 300, shift: int = 0) -> Path:
    """A data folder with the first rows of SST-2, labels shifted by `shift`."""
    folder = tmp_path / "data" / "sst2"
    folder.mkdir(parents=True)
    for split in ("train", "validation"):
        frame = pd.read_csv(GLUE / "sst2" / f"{split}.tsv", sep="\t", keep_default_na=False).head(rows)
        frame["label"] += shift
        frame.to_csv(folder / f"{split}.tsv", sep="\t", index=False)
    return folder.parent


@pytest.mark.parametrize("teacher", ["sklearn_tfidf", "tiny"])
def test_teachers_refuse_labels_outside_the_task_before_training(tmp_path, teacher):
    data = sst2_copy(tmp_path, shift=1)  # 1-based labels: 1 and 2
    if teacher == "tiny":
        tiny_student().save_pretrained(tmp_path / "tiny")
        tiny_tokenizer().save_pretrained(tmp_path / "tiny")
        teacher = str(tmp_path / "tiny")
    args = TrainingArguments(output_dir=str(tmp_path / "t"), report_to="none", use_cpu=True, max_steps=1)
    with pytest.raises(ValueError, match=r"sst2 train split of .*data.*outside \[0, 2\)"):
        train_teacher(TaskArguments(task="sst2", data=str(data)).task_data(), teacher, args)
    assert not (tmp_path / "t").exists()


def test_a_student_is_refused_layers_a_device_bundle_zeroed(tmp_path):
    tiny_student().save_pretrained(tmp_path / "bundled")
    (tmp_path / "bundled" / BUNDLED_LAYERS_FILE).write_text(json.dumps({"kept_layers": [0]}))
    check_bundled_layers(str(tmp_path / "bundled"), [0])
    for layers in ([0, 1], [1], None):
        with pytest.raises(ValueError, match=r"kept only encoder layers \[0\]"):
            check_bundled_layers(str(tmp_path / "bundled"), layers)


def test_too_many_labelled_rows_are_refused_before_any_teacher_trains(tmp_path):
    import compare

    argv = ["--task", "sst2", "--data", str(GLUE), "--max_train_rows", "200", "--labelled_rows", "500"]
    argv += ["--teachers", "sklearn_tfidf", "--study_dir", str(tmp_path / "study"), "--output_dir", str(tmp_path)]
    with pytest.raises(ValueError, match="--labelled_rows 500 leaves no unlabelled rows of the 200 training rows"):
        compare.main(argv + ["--results_csv", str(tmp_path / "r.csv"), "--report_to", "none"])
    assert not (tmp_path / "study" / "sst2").exists()


@pytest.mark.parametrize("version", ['"2"', "-1", "0", "1.5", "true", "null"])
def test_a_record_with_a_bad_format_version_is_refused_by_name(tmp_path, version):
    (tmp_path / StudentResult.FILE).write_text(f'{{"format_version": {version}}}')
    with pytest.raises(ValueError, match=rf"{StudentResult.FILE} has format_version .*whole number >= 1"):
        StudentResult.load(str(tmp_path))


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "could not be read as a tsv table"),
        (b"sentence\tlabel\tidx\n", "has no rows"),
        ("caf\xe9 au lait\t1\t0\n".encode("latin-1"), "is not UTF-8 text"),
    ],
)
def test_an_unreadable_split_file_is_named(tmp_path, content, message):
    data = sst2_copy(tmp_path)
    if content.startswith(b"caf"):
        content = b"sentence\tlabel\tidx\n" + content
    (data / "sst2" / "validation.tsv").write_bytes(content)
    with pytest.raises(ValueError, match=rf"validation.tsv {message}|validation.tsv could not .*{message}"):
        TaskArguments(task="sst2", data=str(data)).load("validation")
