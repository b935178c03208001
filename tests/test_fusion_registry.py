"""The fusion-strategy interface (issue 15): registration, strategies of users (with parameters), curriculum
fusion, and fits stored in the logit metadata."""

import numpy as np
import pytest
import torch
from helpers import tiny_config, tiny_student
from safetensors.torch import load_file

from distill_trainer import (
    FUSION_REGISTRY,
    DistillationConfig,
    DistillationTrainer,
    FusionStrategy,
    attach_teacher_logits,
    fit_fusion_weights,
    fit_teacher_temperatures,
    fuse_logits,
    read_metadata,
    register_fusion,
)
from distill_trainer.fitting import validation_fits
from distill_trainer.trainer import GATE_WEIGHTS_NAME


class LearnedTeacherWeights(FusionStrategy):
    """A user's strategy with parameters: one learned global weight per teacher (softmax of a logit each)."""

    def __init__(self, n_teachers: int):
        super().__init__()
        self.teacher_logit = torch.nn.Parameter(torch.zeros(n_teachers))

    @classmethod
    def from_setup(cls, setup):
        return cls(setup.n_teachers)

    def fuse(self, teacher_logits, labels=None, hidden_state=None):
        return torch.einsum("t,btl->bl", torch.softmax(self.teacher_logit, dim=0), teacher_logits)


@pytest.fixture
def learned_weights():
    register_fusion("learned_weights")(LearnedTeacherWeights)
    yield "learned_weights"
    FUSION_REGISTRY.pop("learned_weights")


def test_a_user_registered_strategy_with_parameters_trains_checkpoints_and_resumes(
    tmp_path, tokenizer, sentiment_data, learned_weights
):
    def run(name, resume=None):
        args = tiny_config(
            tmp_path,
            output_dir=str(tmp_path / name),
            fusion=learned_weights,
            gate_learning_rate=0.5,
            max_steps=6,
            save_strategy="steps",
            save_steps=3,
        )
        trainer = DistillationTrainer(
            model=tiny_student(), args=args, train_dataset=sentiment_data, processing_class=tokenizer
        )
        trainer.train(resume_from_checkpoint=resume)
        return trainer

    straight = run("straight")
    learned = straight.gate.teacher_logit.detach()
    assert straight.gate is straight.fusion and not torch.equal(learned, torch.zeros(3))  # it trained
    group = [
        g for g in straight.optimizer.param_groups if any(p is straight.fusion.teacher_logit for p in g["params"])
    ]
    assert len(group) == 1 and group[0]["initial_lr"] == 0.5
    checkpoint = tmp_path / "straight" / "checkpoint-3"
    assert "teacher_logit" in load_file(str(checkpoint / GATE_WEIGHTS_NAME))
    straight.save_model(str(tmp_path / "student"))
    assert not (tmp_path / "student" / GATE_WEIGHTS_NAME).exists()
    resumed = run("resumed", resume=str(checkpoint))
    torch.testing.assert_close(resumed.fusion.teacher_logit.detach(), learned)
    with pytest.raises(ValueError, match="resume it with fusion='learned_weights', not fusion='average'"):
        DistillationTrainer(
            model=tiny_student(),
            args=tiny_config(tmp_path, fusion="average", max_steps=6),
            train_dataset=sentiment_data,
            processing_class=tokenizer,
        ).train(resume_from_checkpoint=str(checkpoint))


def test_registration_refuses_clashes_and_non_strategies():
    with pytest.raises(ValueError, match="'average' already exists"):
        register_fusion("average")(LearnedTeacherWeights)
    with pytest.raises(ValueError, match="'none' already exists"):
        register_fusion("none")(LearnedTeacherWeights)
    with pytest.raises(TypeError, match="FusionStrategy subclass"):
        register_fusion("plain")(torch.nn.Linear)
    with pytest.raises(ValueError, match="Unknown fusion strategy 'median'"):
        DistillationConfig(output_dir="out", use_cpu=True, fusion="median")


@pytest.mark.parametrize(
    "options, message",
    [
        ({"fusion": "average", "curriculum_fusion": "gating"}, "curriculum_fusion='gating' cannot be mixed"),
        ({"fusion": "gating", "curriculum_fusion": "average"}, "fusion='gating' cannot be mixed"),
        ({"fusion": "average", "curriculum_fusion": "average"}, "other than fusion='average'"),
        ({"fusion": "average", "curriculum_fusion": "median"}, "Unknown fusion strategy 'median'"),
        ({"fusion": "none", "curriculum_fusion": "average"}, "must not be 'none'"),
        ({"fusion": "average", "curriculum_fusion": "single"}, "needs teacher_index"),
    ],
)
def test_bad_curricula_are_refused_when_the_config_is_built(options, message):
    with pytest.raises(ValueError, match=message):
        DistillationConfig(output_dir="out", use_cpu=True, **options)


def test_curriculum_moves_the_target_linearly_in_logit_space_and_logs_its_weight(tmp_path, tokenizer, sentiment_data):
    args = tiny_config(
        tmp_path,
        fusion="average",
        curriculum_fusion="confidence",
        max_steps=4,
        logging_strategy="steps",
        logging_steps=1,
    )
    trainer = DistillationTrainer(
        model=tiny_student(), args=args, train_dataset=sentiment_data, processing_class=tokenizer
    )
    trainer.train()
    logged = [log["curriculum_weight"] for log in trainer.state.log_history if "loss" in log]
    assert logged == [0.0, 0.333333, 0.666667, 1.0]  # the weight each step trained with: the last reaches the target
    teachers = torch.tensor(sentiment_data["teacher_logits"][:8])
    labels = torch.tensor(sentiment_data["label"][:8])
    trainer.state.global_step, trainer.state.max_steps = 1, 4
    expected = (2 / 3) * teachers.mean(1) + (1 / 3) * fuse_logits(teachers, "confidence", labels=labels)
    torch.testing.assert_close(trainer.fuse_teachers(teachers, None, labels), expected)


def test_confidence_needs_a_label_column_before_training(tmp_path, tokenizer, sentiment_data):
    with pytest.raises(ValueError, match="'confidence' weighs teachers by the gold label: the train set has none"):
        DistillationTrainer(
            model=tiny_student(),
            args=tiny_config(tmp_path, fusion="confidence"),
            train_dataset=sentiment_data.remove_columns("label"),
            processing_class=tokenizer,
        )


def test_fits_stored_in_the_metadata_are_used_instead_of_refitting(tmp_path, tokenizer, sentiment_data):
    logits = np.asarray(sentiment_data["teacher_logits"][:], dtype=np.float64)
    labels = np.asarray(sentiment_data["label"][:])
    fits = validation_fits(logits, labels)
    temperatures = fit_teacher_temperatures(logits, labels)
    assert fits["teacher_temperatures"] == pytest.approx(temperatures)
    assert fits["fusion_weights"] == pytest.approx(fit_fusion_weights(logits, labels))
    assert fits["fusion_weights_calibrated"] == pytest.approx(
        fit_fusion_weights(logits / np.asarray(temperatures)[None, :, None], labels)
    )
    stored = {**fits, "teacher_temperatures": [2.0, 3.0, 4.0], "fusion_weights": [0.2, 0.3, 0.5]}
    train = attach_teacher_logits(sentiment_data, logits, list("abc"), ["neg", "pos"], ["sentence"], fitted=stored)
    assert read_metadata(train).fitted == stored
    trainer = DistillationTrainer(  # no eval split: the stored fits are all it has
        model=tiny_student(),
        args=tiny_config(tmp_path, fusion="fitted"),
        train_dataset=train,
        processing_class=tokenizer,
    )
    assert trainer.fusion_weights == [0.2, 0.3, 0.5] and trainer.teacher_temperatures is None
    calibrated = DistillationTrainer(
        model=tiny_student(),
        args=tiny_config(tmp_path, fusion="average", calibrate_teachers=True),
        train_dataset=train,
        processing_class=tokenizer,
    )
    assert calibrated.teacher_temperatures == [2.0, 3.0, 4.0] and calibrated.fitted_weights is None
