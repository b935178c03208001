"""Confidence-aware fusion and teacher temperature scaling (issue 15, first part), against numbers computed
independently here."""

import math

import numpy as np
import pytest
import torch
from helpers import tiny_config, tiny_student
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from distill_trainer import DistillationConfig, DistillationTrainer, fit_teacher_temperatures, fuse_logits
from distill_trainer.fitting import fit_fusion_weights
from distill_trainer.fusion import confidence_weights
from distill_trainer.study.cards import render_student_card
from distill_trainer.study.runs import StudentResult


def test_confidence_fusion_weighs_each_teacher_by_its_probability_of_the_gold_label():
    logits = torch.tensor([[[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]], [[1.0, 1.0, 1.0], [3.0, -3.0, 0.0]]])
    labels = torch.tensor([1, -100])
    expected = []
    for row, label in zip(logits.tolist(), labels.tolist(), strict=False):
        if label == -100:
            weights = [0.5, 0.5]
        else:
            gold = [math.exp(t[label]) / sum(math.exp(v) for v in t) for t in row]
            weights = [p / sum(gold) for p in gold]
        expected.append([sum(w * t[j] for w, t in zip(weights, row, strict=False)) for j in range(3)])
    torch.testing.assert_close(fuse_logits(logits, "confidence", labels=labels), torch.tensor(expected))


def test_confidence_fusion_without_labels_is_refused():
    with pytest.raises(ValueError, match="needs labels"):
        fuse_logits(torch.zeros(2, 3, 2), "confidence")


@settings(max_examples=40, deadline=None)
@given(data=st.data(), batch=st.integers(1, 5), teachers=st.integers(1, 4), labels=st.integers(2, 4))
def test_confidence_weights_are_on_the_simplex(data, batch, teachers, labels):
    logits = torch.from_numpy(
        data.draw(arrays(np.float32, (batch, teachers, labels), elements=st.floats(-30, 30, width=32)))
    )
    gold = torch.tensor(data.draw(st.lists(st.sampled_from([-100, *range(labels)]), min_size=batch, max_size=batch)))
    weights = confidence_weights(logits, gold)
    assert weights.shape == (batch, teachers) and torch.isfinite(weights).all() and (weights >= 0).all()
    torch.testing.assert_close(weights.sum(1), torch.ones(batch))
    assert torch.isfinite(fuse_logits(logits, "confidence", labels=gold)).all()


def test_fitted_temperatures_minimise_the_nll_and_recover_overconfidence():
    rng = np.random.default_rng(0)
    true_logits = rng.normal(0, 2, size=(4000, 3))
    probabilities = np.exp(true_logits) / np.exp(true_logits).sum(1, keepdims=True)
    labels = np.array([rng.choice(3, p=p) for p in probabilities])
    logits = np.stack([true_logits, 3.0 * true_logits], axis=1)  # calibrated, and 3x overconfident
    fitted = fit_teacher_temperatures(logits, labels)
    grid = np.exp(np.linspace(np.log(0.05), np.log(20), 4001))
    for teacher, temperature in enumerate(fitted):
        z = logits[:, teacher]
        nll = [np.mean(np.log(np.exp(z / t).sum(1)) - z[np.arange(len(z)), labels] / t) for t in grid]
        assert temperature == pytest.approx(grid[int(np.argmin(nll))], rel=2e-3)
    assert fitted[0] == pytest.approx(1.0, abs=0.1) and fitted[1] == pytest.approx(3.0, rel=0.1)


def test_fit_teacher_temperatures_refuses_what_it_cannot_fit():
    with pytest.raises(ValueError, match="labelled rows"):
        fit_teacher_temperatures(np.zeros((4, 2, 2)), np.full(4, -100))
    with pytest.raises(ValueError, match=r"\[n, n_teachers, n_labels\]"):
        fit_teacher_temperatures(np.zeros((4, 2)), np.zeros(4))


def test_a_student_trains_with_confidence_fusion(tmp_path, tokenizer, sentiment_data):
    trainer = DistillationTrainer(
        model=tiny_student(),
        args=tiny_config(tmp_path, fusion="confidence", max_steps=3),
        train_dataset=sentiment_data,
        processing_class=tokenizer,
    )
    trainer.train()
    assert trainer.state.global_step == 3 and np.isfinite(trainer.state.log_history[-1]["train_loss"])


def test_schedule_values_at_given_steps():
    config = DistillationConfig(
        output_dir="out",
        use_cpu=True,
        alpha=0.2,
        alpha_schedule="linear",
        alpha_end=0.8,
        temperature=4.0,
        temperature_schedule="cosine",
        temperature_end=1.0,
    )
    assert [round(config.alpha_at(p), 6) for p in (0.0, 0.25, 1.0, 2.0)] == [0.2, 0.35, 0.8, 0.8]
    assert [round(config.temperature_at(p), 6) for p in (0.0, 0.5, 1.0)] == [4.0, 2.5, 1.0]
    assert config.temperature_at(0.25) == pytest.approx(1.0 + 3.0 * (1 + math.cos(math.pi / 4)) / 2)
    assert DistillationConfig(output_dir="out", use_cpu=True).alpha_at(0.7) == 0.7  # constant by default


@pytest.mark.parametrize(
    "options, message",
    [
        ({"alpha_schedule": "exponential", "alpha_end": 0.5}, "Unknown alpha_schedule"),
        ({"temperature_schedule": "linear"}, "needs temperature_end"),
        ({"alpha_schedule": "linear", "alpha_end": 1.5}, "alpha must be in"),
        ({"fusion": "none", "alpha_schedule": "linear", "alpha_end": 0.5}, "alpha_schedule must be 'constant'"),
    ],
)
def test_bad_schedules_are_refused(options, message):
    with pytest.raises(ValueError, match=message):
        DistillationConfig(output_dir="out", use_cpu=True, **options)


def test_scheduled_alpha_and_temperature_are_logged_and_resume_exactly(tmp_path, tokenizer, sentiment_data):
    schedule = dict(
        alpha=0.2,
        alpha_schedule="linear",
        alpha_end=0.9,
        temperature=4.0,
        temperature_schedule="cosine",
        temperature_end=1.0,
        logging_strategy="steps",
        logging_steps=1,
    )

    def run(name, resume=None):
        args = tiny_config(
            tmp_path, output_dir=str(tmp_path / name), max_steps=8, save_strategy="steps", save_steps=4, **schedule
        )
        trainer = DistillationTrainer(
            model=tiny_student(dropout=0.1), args=args, train_dataset=sentiment_data, processing_class=tokenizer
        )
        trainer.train(resume_from_checkpoint=resume)
        return trainer

    straight = run("straight")
    logged = [(log["alpha"], log["temperature"]) for log in straight.state.log_history if "loss" in log]
    assert len(logged) == 8 and logged[0] == (0.2, 4.0) and logged[-1] == (0.9, 1.0)  # the last step: the end values
    cosine = 1.0 + 3.0 * (1 + math.cos(math.pi * 4 / 7)) / 2
    assert logged[4] == (pytest.approx(0.2 + 0.7 * 4 / 7), pytest.approx(cosine))  # step 5 of 8 trains at 4/7
    resumed = run("resumed", resume=str(tmp_path / "straight" / "checkpoint-4"))
    for name, value in straight.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[name]), name


def test_evaluation_uses_the_schedules_end_values_so_eval_losses_compare(tmp_path, tokenizer, sentiment_data):
    """With the weights frozen (learning rate 0), every evaluation scores the same loss: a schedule does not move
    `eval_loss`, which `load_best_model_at_end` would otherwise pick a checkpoint by."""
    args = tiny_config(
        tmp_path,
        max_steps=4,
        learning_rate=0.0,
        eval_strategy="steps",
        eval_steps=1,
        alpha=0.9,
        alpha_schedule="linear",
        alpha_end=0.1,
        temperature=4.0,
        temperature_schedule="linear",
        temperature_end=1.0,
    )
    trainer = DistillationTrainer(
        model=tiny_student(),
        args=args,
        train_dataset=sentiment_data,
        eval_dataset=sentiment_data,
        processing_class=tokenizer,
    )
    trainer.train()
    losses = [log["eval_loss"] for log in trainer.state.log_history if "eval_loss" in log]
    assert len(losses) == 4 and max(losses) - min(losses) < 1e-6


def test_fitted_weights_minimise_the_nll_on_the_simplex():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 600)
    good = np.stack([-(2 * labels - 1), 2 * labels - 1], 1) * 2.0 + rng.normal(0, 1, (600, 2))
    noise = rng.normal(0, 2, (600, 2))
    logits = np.stack([good, noise], axis=1)
    fitted = fit_fusion_weights(logits, labels)
    grid = np.linspace(0, 1, 2001)
    nll = []
    for w in grid:
        z = w * good + (1 - w) * noise
        nll.append(np.mean(np.log(np.exp(z).sum(1)) - z[np.arange(600), labels]))
    assert sum(fitted) == pytest.approx(1.0) and min(fitted) >= 0
    assert fitted[0] == pytest.approx(grid[int(np.argmin(nll))], abs=2e-3) and fitted[0] > 0.8


def test_fitted_fusion_and_calibrated_teachers_fit_on_the_eval_split_before_training(
    tmp_path, tokenizer, sentiment_data
):
    config = tiny_config(tmp_path, fusion="fitted", calibrate_teachers=True, max_steps=2)
    trainer = DistillationTrainer(
        model=tiny_student(),
        args=config,
        train_dataset=sentiment_data,
        eval_dataset=sentiment_data,
        processing_class=tokenizer,
    )
    logits = np.asarray(sentiment_data["teacher_logits"][:], dtype=np.float64)
    labels = np.asarray(sentiment_data["label"][:])
    temperatures = fit_teacher_temperatures(logits, labels)
    assert trainer.teacher_temperatures == pytest.approx(temperatures)
    assert trainer.fusion_weights == pytest.approx(
        fit_fusion_weights(logits / np.asarray(temperatures)[None, :, None], labels)
    )
    trainer.train()
    with pytest.raises(ValueError, match="fit on held-out rows .* pass an eval_dataset"):
        DistillationTrainer(
            model=tiny_student(), args=config, train_dataset=sentiment_data, processing_class=tokenizer
        )


def test_the_recipes_card_states_the_schedule_and_needs_no_baseline():
    results = StudentResult(
        task="sst2",
        metric="accuracy",
        score=0.8,
        fusion="average",
        temperature=4.0,
        alpha=0.2,
        seed=1,
        alpha_schedule="linear",
        alpha_end=0.9,
        teachers=[{"name": "t0"}],
    )
    card = render_student_card(results, "alice/scheduled")  # no baseline: published alone
    assert "| alpha | 0.2 -> 0.9 (linear schedule) |" in card.text and "| temperature T | 4.0 |" in card.text
    assert "no-distillation" not in card.text and "fusion-average" in card.data.tags


def test_a_teacher_right_on_every_fit_row_is_reported_as_uncalibrated(caplog):
    """Its likelihood is best as T -> 0, so temperature scaling only multiplies its logits: said, not hidden."""
    labels = np.random.default_rng(0).integers(0, 2, 50)
    always_right = np.stack([-(2 * labels - 1), 2 * labels - 1], 1) * 2.0
    noisy = always_right * 0.5 + np.random.default_rng(1).normal(0, 1, (50, 2))
    with caplog.at_level("WARNING", logger="distill_trainer.fitting"):
        fit_teacher_temperatures(np.stack([always_right, noisy], 1), labels)
    assert "temperature of teacher column 0" in caplog.text
    assert "right on every one of the 50 fit rows" in caplog.text
    assert "teacher column 1" not in caplog.text
