"""What a hostile user tried (issue 14): each test fails on the old behaviour and passes now."""

import numpy as np
import pytest
import torch
from helpers import tiny_config, tiny_student

from distill_trainer import DistillationConfig, DistillationTrainer, TeacherInfo, attach_teacher_logits, kd_loss


def with_validation_scores(data, scores=(0.9, 0.6, 0.3)):
    logits = np.asarray(data["teacher_logits"][:], dtype=np.float32)
    infos = [TeacherInfo(name=f"t{i}", metric="accuracy", validation_score=s) for i, s in enumerate(scores)]
    return attach_teacher_logits(
        data.remove_columns("teacher_logits"), logits, infos, ["negative", "positive"], ["sentence"]
    )


def test_the_trainer_never_writes_into_the_users_config(tmp_path, tokenizer, sentiment_data):
    config = tiny_config(tmp_path, fusion="weighted", max_steps=1)
    first = DistillationTrainer(
        model=tiny_student(),
        args=config,
        processing_class=tokenizer,
        train_dataset=with_validation_scores(sentiment_data),
    )
    assert first.fusion_weights == [0.9, 0.6, 0.3] and config.fusion_weights is None
    second = DistillationTrainer(
        model=tiny_student(),
        args=config,
        processing_class=tokenizer,
        train_dataset=with_validation_scores(sentiment_data, (0.1, 0.1, 0.8)),
    )
    assert second.fusion_weights == [0.1, 0.1, 0.8]  # the second dataset's weights, not the first's


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"temperature": float("inf")}, "temperature must be a finite number > 0"),
        ({"temperature": float("nan")}, "temperature must be a finite number > 0"),
        ({"gate_learning_rate": -1e-3}, "gate_learning_rate must be a finite number >= 0"),
        ({"gate_learning_rate": float("nan")}, "gate_learning_rate must be a finite number >= 0"),
        ({"fusion": "weighted", "fusion_weights": ["0.5", "0.5", "0.5"]}, "fusion_weights must be numbers"),
    ],
)
def test_options_that_make_training_meaningless_are_refused(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        DistillationConfig(output_dir=str(tmp_path), use_cpu=True, **overrides)


def test_a_zero_gate_learning_rate_freezes_the_gate(tmp_path, tokenizer, sentiment_data):
    config = tiny_config(tmp_path, fusion="gating", gate_learning_rate=0.0, max_steps=3)
    trainer = DistillationTrainer(
        model=tiny_student(), args=config, train_dataset=sentiment_data, processing_class=tokenizer
    )
    before = {name: value.clone() for name, value in trainer.gate.state_dict().items()}
    trainer.train()
    assert trainer.optimizer.param_groups[-1]["lr"] == 0.0
    assert all(torch.equal(before[name], value) for name, value in trainer.gate.state_dict().items())


@pytest.mark.parametrize(
    "corrupt, message",
    [
        (lambda logits: logits[:, :2], "2 teachers but the train dataset has 3"),
        (lambda logits: np.where(np.arange(len(logits))[:, None, None] == 5, np.nan, logits), "NaN"),
    ],
)
def test_eval_sets_are_checked_when_the_trainer_is_built(tmp_path, tokenizer, sentiment_data, corrupt, message):
    logits = corrupt(np.asarray(sentiment_data["teacher_logits"][:], dtype=np.float32))
    bad_eval = sentiment_data.remove_columns("teacher_logits").add_column("teacher_logits", logits.tolist())
    with pytest.raises(ValueError, match=message):
        DistillationTrainer(
            model=tiny_student(),
            args=tiny_config(tmp_path),
            train_dataset=sentiment_data,
            eval_dataset={"validation": sentiment_data, "shifted": bad_eval},
            processing_class=tokenizer,
        )


def test_kd_loss_stays_accurate_at_large_temperature():
    generator = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(16, 3, generator=generator), torch.randn(16, 3, generator=generator)
    # As T grows, KL * T^2 tends to half the variance (over labels) of teacher - student logits.
    difference = teacher - student
    limit = ((difference - difference.mean(1, keepdim=True)) ** 2).mean(1).mean() / 2
    for temperature in (1e2, 1e4, 1e6):
        loss = kd_loss(student, teacher, None, temperature, alpha=1.0)
        assert loss.dtype == torch.float32 and loss > 0
        torch.testing.assert_close(loss, limit, rtol=1e-2, atol=0)
