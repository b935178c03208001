"""What a hostile user tried (issue 14): each test fails on the old behaviour and passes now."""

import datasets
import numpy as np
import pytest
import torch
from helpers import tiny_config, tiny_student

from distill_trainer import (
    DistillationConfig,
    DistillationTrainer,
    TeacherInfo,
    attach_teacher_logits,
    kd_loss,
    read_metadata,
    validate_logit_dataset,
)
from distill_trainer.logits import teacher_fingerprints, write_metadata
from distill_trainer.study.args import StudentArguments, TaskArguments, parse_recipe_args
from distill_trainer.study.training import student_from_layers


def with_metadata(data, teachers=("a", "b", "c"), input_columns=("sentence",)):
    """`data`'s teacher_logits column attached again, with metadata (teacher names or `TeacherInfo`s)."""
    logits = np.asarray(data["teacher_logits"][:], dtype=np.float32)
    return attach_teacher_logits(
        data.remove_columns("teacher_logits"), logits, list(teachers), ["negative", "positive"], list(input_columns)
    )


def with_validation_scores(data, scores=(0.9, 0.6, 0.3)):
    return with_metadata(
        data, [TeacherInfo(f"t{i}", metric="accuracy", validation_score=s) for i, s in enumerate(scores)]
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


def test_the_gate_is_clipped_with_the_student(tmp_path, tokenizer, sentiment_data):
    def one_step(max_grad_norm):
        config = tiny_config(
            tmp_path,
            fusion="gating",
            optim="sgd",
            learning_rate=1.0,
            max_steps=1,
            lr_scheduler_type="constant",
            max_grad_norm=max_grad_norm,
        )
        trainer = DistillationTrainer(
            model=tiny_student(), args=config, train_dataset=sentiment_data, processing_class=tokenizer
        )
        modules = [trainer.model, trainer.gate]
        before = [p.detach().clone() for module in modules for p in module.parameters()]
        trainer.train()
        after = [p.detach() for module in modules for p in module.parameters()]
        gate_moved = sum((a - b).norm() ** 2 for a, b in zip(after[-4:], before[-4:], strict=False)) ** 0.5
        return torch.stack([(a - b).norm() for a, b in zip(after, before, strict=False)]).norm(), gate_moved

    total, gate_moved = one_step(1e-3)  # one SGD step at lr 1 moves everything by at most max_grad_norm
    assert gate_moved > 0 and total <= 1e-3 * (1 + 1e-4)
    unclipped, _ = one_step(0.0)
    assert unclipped > 10 * total


def test_a_gating_checkpoint_resumed_into_another_fusion_is_refused_by_name(tmp_path, tokenizer, sentiment_data):
    config = tiny_config(tmp_path, fusion="gating", max_steps=2, save_strategy="steps", save_steps=2)
    DistillationTrainer(
        model=tiny_student(), args=config, train_dataset=sentiment_data, processing_class=tokenizer
    ).train()
    average = DistillationTrainer(
        model=tiny_student(),
        args=tiny_config(tmp_path, fusion="average", max_steps=4),
        train_dataset=sentiment_data,
        processing_class=tokenizer,
    )
    with pytest.raises(ValueError, match="resume it with fusion='gating', not fusion='average'"):
        average.train(resume_from_checkpoint=str(tmp_path / "out" / "checkpoint-2"))


@pytest.mark.parametrize("bad_label", [-1, 2])
def test_labels_outside_the_label_space_are_refused_by_row(tmp_path, tokenizer, sentiment_data, bad_label):
    labels = sentiment_data["label"][:]
    labels[7] = bad_label
    broken = sentiment_data.remove_columns("label").add_column("label", labels)
    with pytest.raises(
        ValueError, match=rf"'label' has values outside \[0, 2\) and not -100 .* {bad_label} in rows \[7\]"
    ):
        DistillationTrainer(
            model=tiny_student(), args=tiny_config(tmp_path), train_dataset=broken, processing_class=tokenizer
        )


def test_unlabelled_rows_train_on_the_teachers_and_test_rows_are_predicted(tmp_path, tokenizer, sentiment_data):
    unlabelled = sentiment_data.remove_columns("label").add_column("label", [-100] * len(sentiment_data))
    trainer = DistillationTrainer(
        model=tiny_student(),
        args=tiny_config(tmp_path, max_steps=2, logging_strategy="steps", logging_steps=1),
        train_dataset=unlabelled,
        processing_class=tokenizer,
    )
    trainer.train()
    losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
    assert (
        losses
        and all(np.isfinite(losses))
        and all(log.get("loss_ce", 0.0) == 0.0 for log in trainer.state.log_history)
    )
    test_rows = sentiment_data.remove_columns("label").add_column("label", [-1] * len(sentiment_data))  # GLUE test
    assert trainer.predict(test_rows).predictions.shape == (len(sentiment_data), 2)


def test_custom_label_names_are_honoured(tmp_path, tokenizer, sentiment_data):
    renamed = sentiment_data.rename_column("label", "target")
    config = tiny_config(
        tmp_path, alpha=0.0, max_steps=2, label_names=["target"], logging_strategy="steps", logging_steps=1
    )
    trainer = DistillationTrainer(model=tiny_student(), args=config, train_dataset=renamed, processing_class=tokenizer)
    trainer.train()
    ce = [log["loss_ce"] for log in trainer.state.log_history if "loss_ce" in log]
    assert len(ce) == 2 and all(value > 0 for value in ce)  # the labels reached the loss


@pytest.mark.parametrize("move", ["flip_every_row's_labels", "shift_rows_by_one", "swap_one_row's_values"])
def test_logits_moved_between_rows_or_labels_are_refused(sentiment_data, move):
    data = sentiment_data.add_column("idx", list(range(len(sentiment_data))))
    dataset = with_metadata(data, input_columns=("idx", "sentence"))
    logits = np.asarray(sentiment_data["teacher_logits"][:], dtype=np.float32)
    validate_logit_dataset(dataset.shuffle(seed=1))  # whole rows may move: shuffle, select
    validate_logit_dataset(dataset.select(range(len(dataset) - 1, -1, -1)))
    moved = logits.copy()
    if move.startswith("flip"):
        moved = moved[:, :, ::-1]
    elif move.startswith("shift"):
        moved = np.roll(moved, 1, axis=0)
    else:
        moved[3, 0] = moved[3, 0, ::-1]
    tampered = dataset.map(
        lambda row, i: {"teacher_logits": moved[i].tolist()}, with_indices=True, features=dataset.features
    )
    with pytest.raises(ValueError, match="edited after extraction"):
        validate_logit_dataset(tampered)


def test_logit_datasets_fingerprinted_before_format_2_still_validate(sentiment_data):
    dataset = with_metadata(sentiment_data)
    old = read_metadata(dataset)
    old.format_version = 1
    old.teacher_fingerprints = teacher_fingerprints(np.asarray(sentiment_data["teacher_logits"][:], dtype=np.float32))
    validate_logit_dataset(write_metadata(dataset, old).shuffle(seed=0))


def test_repeated_student_layers_and_missing_recipe_inputs_are_refused_up_front():
    with pytest.raises(ValueError, match=r"student_layers \[0, 0\] repeats a layer"):
        student_from_layers(tiny_student(), [0, 0])
    with pytest.raises(ValueError, match="--logit_dataset and --student_model are required"):
        parse_recipe_args((TaskArguments, StudentArguments, DistillationConfig), ["--output_dir", "out"])
    with pytest.raises(ValueError, match="--student_model is required"):
        parse_recipe_args(
            (TaskArguments, StudentArguments, DistillationConfig),
            ["--output_dir", "out", "--logit_dataset", "some/logits"],
        )


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda text: text[: len(text) // 2], "metadata in this dataset's info.description is corrupt"),
        (lambda text: text.replace('"num_rows"', '"n_rows"'), "does not match this distill-trainer's format"),
    ],
)
def test_corrupt_metadata_is_an_error_not_absent(sentiment_data, damage, message):
    dataset = with_metadata(sentiment_data)
    dataset.info.description = damage(dataset.info.description)
    with pytest.raises(ValueError, match=message):
        validate_logit_dataset(dataset)


def test_a_classlabel_order_that_differs_from_the_metadata_is_refused(sentiment_data):
    dataset = with_metadata(sentiment_data)
    validate_logit_dataset(dataset.cast_column("label", datasets.ClassLabel(names=["negative", "positive"])))
    with pytest.raises(ValueError, match="the dataset's own ClassLabel 'label' feature"):
        validate_logit_dataset(dataset.cast_column("label", datasets.ClassLabel(names=["positive", "negative"])))


@pytest.mark.parametrize("alpha", [0.0, 0.7])
def test_streaming_train_sets_train(tmp_path, tokenizer, sentiment_data, alpha):
    stream = sentiment_data.remove_columns("sentence").to_iterable_dataset()
    trainer = DistillationTrainer(
        model=tiny_student(),
        args=tiny_config(tmp_path, alpha=alpha, max_steps=3),
        train_dataset=stream,
        processing_class=tokenizer,
    )
    trainer.train()
    assert trainer.state.global_step == 3
