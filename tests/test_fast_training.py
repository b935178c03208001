"""Fast training: length-grouped batches keep every row's teacher logits, evaluation keeps row order, padding
shrinks; under bf16 autocast the fusion, the gate and the loss stay float32; the recipes' defaults."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from helpers import tiny_config, tiny_student
from transformers.trainer_pt_utils import LengthGroupedSampler

from distill_trainer import DistillationConfig, DistillationTrainer, kd_loss
from distill_trainer import config as config_module
from distill_trainer.config import bf16_available, fast_training_defaults
from distill_trainer.losses import kd_loss_terms
from distill_trainer.study.args import StudentArguments, TaskArguments, parse_recipe_args


def label_teachers(data, margin: float = 4.0):
    """Three teachers that put `margin` on each row's own label: alpha=1 training can only reach the labels
    if every row is trained on its own teacher logits."""
    return data.map(lambda row: {"teacher_logits": [[-margin, margin] if row["label"] else [margin, -margin]] * 3})


def test_grouped_batches_carry_each_rows_own_teacher_logits_with_less_padding(
    tmp_path, tokenizer, sentiment_data_with_lengths
):
    # each row's teacher logits hold its own token count, so a row paired with another row's logits shows
    data = sentiment_data_with_lengths.map(lambda row: {"teacher_logits": [[float(row["length"]), 0.0]] * 3})

    def padded_tokens(strategy):
        trainer = DistillationTrainer(
            model=tiny_student(),
            args=tiny_config(tmp_path, train_sampling_strategy=strategy),
            train_dataset=data,
            processing_class=tokenizer,
        )
        total = 0
        for batch in trainer.get_train_dataloader():
            real = batch["attention_mask"].sum(dim=1).float()
            torch.testing.assert_close(batch["teacher_logits"][:, 0, 0], real)
            total += batch["attention_mask"].numel()
        return trainer, total

    grouped, grouped_tokens = padded_tokens("group_by_length")
    sampler = grouped._get_train_sampler()
    assert isinstance(sampler, LengthGroupedSampler)
    assert list(sampler.lengths) == data["length"][:]  # read from the column, not measured row by row
    assert sorted(sampler) == list(range(len(data)))  # every row once per epoch
    without_column = DistillationTrainer(
        model=tiny_student(),
        train_dataset=data.remove_columns("length"),
        args=tiny_config(tmp_path, train_sampling_strategy="group_by_length"),
        processing_class=tokenizer,
    )._get_train_sampler()
    assert type(without_column) is type(sampler) and list(without_column.lengths) == data["length"][:]
    _, random_tokens = padded_tokens("random")
    real_tokens = sum(data["length"][:])
    assert grouped_tokens < random_tokens
    assert grouped_tokens - real_tokens <= 0.1 * grouped_tokens


def test_alpha_one_with_grouping_learns_the_labels_only_the_teacher_logits_carry(
    tmp_path, tokenizer, sentiment_data_with_lengths
):
    data = label_teachers(sentiment_data_with_lengths)
    args = tiny_config(
        tmp_path, alpha=1.0, temperature=1.0, num_train_epochs=6, train_sampling_strategy="group_by_length"
    )
    trainer = DistillationTrainer(model=tiny_student(), args=args, train_dataset=data, processing_class=tokenizer)
    trainer.train()
    predictions = trainer.predict(data.remove_columns("teacher_logits"))
    assert (predictions.predictions.argmax(-1) == np.asarray(data["label"][:])).mean() > 0.95


def test_predict_returns_rows_in_order_under_length_grouping(tmp_path, tokenizer, sentiment_data_with_lengths):
    data = sentiment_data_with_lengths
    model = tiny_student()
    outputs = {}
    for strategy in ("random", "group_by_length"):
        args = tiny_config(tmp_path, train_sampling_strategy=strategy, per_device_eval_batch_size=16)
        trainer = DistillationTrainer(model=model, args=args, train_dataset=data, processing_class=tokenizer)
        outputs[strategy] = trainer.predict(data).predictions
    np.testing.assert_array_equal(outputs["group_by_length"], outputs["random"])


def test_kd_loss_is_float32_under_bf16_autocast():
    generator = torch.Generator().manual_seed(0)
    student = torch.randn(16, 3, generator=generator).bfloat16()
    teacher = torch.randn(16, 3, generator=generator)
    labels = torch.randint(0, 3, (16,), generator=generator)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = kd_loss(student, teacher, labels, temperature=4.0, alpha=0.5)
        terms = kd_loss_terms(student, teacher, labels, 4.0, 0.5)
    assert loss.dtype == torch.float32 and all(term.dtype == torch.float32 for term in terms.values())
    torch.testing.assert_close(loss, kd_loss(student.float(), teacher, labels, temperature=4.0, alpha=0.5))


@pytest.mark.parametrize("fusion", ["average", "gating"])
def test_fusion_and_gate_are_float32_under_bf16_autocast(tmp_path, tokenizer, sentiment_data, fusion):
    trainer = DistillationTrainer(
        model=tiny_student(),
        args=tiny_config(tmp_path, fusion=fusion),
        train_dataset=sentiment_data,
        processing_class=tokenizer,
    )
    hidden = torch.randn(4, 5, 32).bfloat16()
    teachers = torch.randn(4, 3, 2)
    expected = trainer.fuse_teachers(teachers, SimpleNamespace(hidden_states=[hidden.float()]))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fused = trainer.fuse_teachers(teachers, SimpleNamespace(hidden_states=[hidden]))
    assert fused.dtype == torch.float32
    torch.testing.assert_close(fused, expected)


def test_bf16_is_detected_from_the_cpu_flags(monkeypatch, tmp_path):
    if torch.accelerator.is_available():
        pytest.skip("the CPU flags decide only on a machine without accelerator")
    cpuinfo = tmp_path / "cpuinfo"
    monkeypatch.setattr(config_module, "CPUINFO", str(cpuinfo))
    cpuinfo.write_text("flags\t\t: fpu sse avx512f avx512bw\n")
    assert not bf16_available() and "bf16" not in fast_training_defaults()
    cpuinfo.write_text("flags\t\t: fpu sse avx512f avx512bw avx512_bf16\n")
    assert bf16_available()
    assert fast_training_defaults().get("bf16", False) is config_module.BF16_BY_DEFAULT
    monkeypatch.setattr(config_module, "CPUINFO", str(tmp_path / "missing"))
    assert not bf16_available()


def test_a_default_is_changed_through_the_function(tmp_path):
    """Passed beside `**fast_training_defaults()`, a default's keyword reached `DistillationConfig` twice (TypeError),
    though the docstring said arguments passed after them win."""
    options = fast_training_defaults(per_device_eval_batch_size=8, seed=3)
    config = DistillationConfig(output_dir=str(tmp_path), use_cpu=True, **options)
    assert (config.per_device_eval_batch_size, config.seed, config.length_column_name) == (8, 3, "length")


def test_recipes_default_to_fast_training_and_flags_turn_it_off():
    types = (TaskArguments, StudentArguments, DistillationConfig)
    *_, default = parse_recipe_args(types, ["--output_dir", "out", "--logit_dataset", "l", "--student_model", "s"])
    assert default.train_sampling_strategy == "group_by_length" and default.length_column_name == "length"
    assert default.bf16 == fast_training_defaults().get("bf16", False)
    assert default.per_device_eval_batch_size == 64
    *_, off = parse_recipe_args(
        types,
        [
            "--output_dir",
            "out",
            "--logit_dataset",
            "l",
            "--student_model",
            "s",
            "--train_sampling_strategy",
            "random",
            "--bf16",
            "false",
        ],
    )
    assert off.train_sampling_strategy == "random" and not off.bf16
