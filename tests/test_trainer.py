"""DistillationTrainer end to end on a tiny random BERT and a small learnable problem."""

import pytest
import torch
from helpers import assert_same_params, params, tiny_config, tiny_student
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification, Trainer, TrainerCallback, TrainingArguments

from distill_trainer import DistillationTrainer
from distill_trainer.trainer import GATE_WEIGHTS_NAME

FUSION_OPTIONS = {
    "average": {},
    "weighted": {"fusion_weights": [0.9, 0.8, 0.5]},
    "min_entropy": {},
    "single": {"teacher_index": 0},
    "gating": {},
}


@pytest.mark.slow
@pytest.mark.parametrize("fusion", list(FUSION_OPTIONS))
def test_loss_goes_down_and_teacher_column_survives_default_column_removal(
    tmp_path, tokenizer, sentiment_data, fusion
):
    args = tiny_config(tmp_path, fusion=fusion, num_train_epochs=8, **FUSION_OPTIONS[fusion])
    assert args.remove_unused_columns  # the Trainer default: we must keep teacher_logits anyway
    trainer = DistillationTrainer(
        model=tiny_student(), args=args, train_dataset=sentiment_data, processing_class=tokenizer
    )
    batch = next(iter(trainer.get_train_dataloader()))
    assert batch["teacher_logits"].shape == (16, 3, 2)
    losses = []
    original = trainer.compute_loss

    def recording_compute_loss(*a, **k):
        loss = original(*a, **k)
        losses.append(loss.item())
        return loss

    trainer.compute_loss = recording_compute_loss
    trainer.train()
    first, last = sum(losses[:8]) / 8, sum(losses[-8:]) / 8
    assert last < 0.7 * first, (first, last)
    logged = [log for log in trainer.state.log_history if "train_loss" in log]
    assert logged and logged[-1]["train_loss"] > 0


@pytest.mark.slow
def test_alpha_zero_reproduces_plain_fine_tuning(tmp_path, tokenizer, sentiment_data):
    distilled = tiny_student()
    DistillationTrainer(
        model=distilled,
        args=tiny_config(tmp_path, alpha=0.0, label_smoothing_factor=0.1),
        train_dataset=sentiment_data,
        processing_class=tokenizer,
    ).train()
    plain = tiny_student()
    plain_args = TrainingArguments(
        **{
            k: v
            for k, v in tiny_config(tmp_path, label_smoothing_factor=0.1).to_dict().items()
            if k in TrainingArguments.__dataclass_fields__
            and not k.startswith("_")
            and k not in ("push_to_hub_token",)
        }
    )
    Trainer(
        model=plain,
        args=plain_args,
        train_dataset=sentiment_data.remove_columns("teacher_logits"),
        processing_class=tokenizer,
    ).train()
    assert_same_params(params(distilled), params(plain), rtol=1e-5, atol=1e-6)


def test_label_smoothing_is_applied_like_the_parent(tmp_path, tokenizer, sentiment_data):
    args = tiny_config(tmp_path, alpha=0.0, label_smoothing_factor=0.2)
    trainer = DistillationTrainer(
        model=tiny_student(), args=args, train_dataset=sentiment_data, processing_class=tokenizer
    )
    with torch.no_grad():  # confident logits, so that smoothing visibly changes the loss
        trainer.model.classifier.bias.copy_(torch.tensor([2.0, -2.0]))
    batch = next(iter(trainer.get_train_dataloader()))
    ours = trainer.compute_loss(trainer.model, batch)
    without_teachers = {k: v for k, v in batch.items() if k != "teacher_logits"}
    parent = Trainer.compute_loss(trainer, trainer.model, dict(without_teachers))
    unsmoothed = trainer.model(**without_teachers).loss
    torch.testing.assert_close(ours, parent)
    assert abs(ours.item() - unsmoothed.item()) > 0.05


@pytest.mark.parametrize(
    "fusion, sampling",
    [("average", "random"), ("gating", "random"), ("average", "group_by_length"), ("gating", "group_by_length")],
)
def test_gradient_accumulation_matches_the_big_batch(
    tmp_path, tokenizer, sentiment_data_with_lengths, fusion, sampling
):
    def one_update(batch_size, accumulation):
        args = tiny_config(
            tmp_path,
            fusion=fusion,
            per_device_train_batch_size=batch_size,
            optim="sgd",
            learning_rate=0.5,
            gradient_accumulation_steps=accumulation,
            max_steps=1,
            lr_scheduler_type="constant",
            train_sampling_strategy=sampling,
        )
        trainer = DistillationTrainer(
            model=tiny_student(), args=args, train_dataset=sentiment_data_with_lengths, processing_class=tokenizer
        )
        before = params(trainer.model)
        trainer.train()
        after = params(trainer.model)
        if trainer.gate is not None:
            after.update({f"gate.{n}": p.detach().clone() for n, p in trainer.gate.named_parameters()})
        assert any((after[n] - before[n]).abs().max() > 1e-4 for n in before)
        return after

    assert_same_params(one_update(8, 4), one_update(32, 1), rtol=1e-4, atol=1e-6)


def test_gate_trains_is_checkpointed_resumes_and_stays_out_of_the_student(tmp_path, tokenizer, sentiment_data):
    def gating_trainer(output_dir):
        args = tiny_config(
            tmp_path,
            fusion="gating",
            output_dir=str(output_dir),
            max_steps=8,
            save_strategy="steps",
            save_steps=4,
            per_device_train_batch_size=16,
        )
        return DistillationTrainer(
            model=tiny_student(), args=args, train_dataset=sentiment_data, processing_class=tokenizer
        )

    full = gating_trainer(tmp_path / "full")
    initial_gate = {k: v.clone() for k, v in full.gate.state_dict().items()}
    full.train()
    final_gate = full.gate.state_dict()
    assert any(not torch.equal(initial_gate[k], final_gate[k]) for k in final_gate)
    assert any(p is next(full.gate.parameters()) for g in full.optimizer.param_groups for p in g["params"])

    checkpoint = tmp_path / "full" / "checkpoint-4"
    saved_gate = load_file(str(checkpoint / GATE_WEIGHTS_NAME))
    assert saved_gate.keys() == final_gate.keys()

    resumed = gating_trainer(tmp_path / "resumed")
    seen_at_resume = {}

    class GateAtResume(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            seen_at_resume.update({k: v.clone() for k, v in resumed.gate.state_dict().items()})

    resumed.add_callback(GateAtResume())
    resumed.train(resume_from_checkpoint=str(checkpoint))
    for key in saved_gate:
        torch.testing.assert_close(seen_at_resume[key], saved_gate[key])
        torch.testing.assert_close(resumed.gate.state_dict()[key], final_gate[key], rtol=1e-5, atol=1e-6)
    assert_same_params(params(resumed.model), params(full.model), rtol=1e-5, atol=1e-6)

    student_dir = tmp_path / "student"
    full.save_model(str(student_dir))
    assert not (student_dir / GATE_WEIGHTS_NAME).exists()
    student_weights = load_file(str(student_dir / "model.safetensors"))
    assert not any("gate" in key or "mlp" in key for key in student_weights)
    reloaded = AutoModelForSequenceClassification.from_pretrained(str(student_dir))
    assert_same_params(params(reloaded), params(full.model))


def test_eval_split_without_teachers_and_predict_without_labels(tmp_path, tokenizer, sentiment_data):
    args = tiny_config(tmp_path, fusion="gating", max_steps=2, eval_strategy="steps", eval_steps=2)
    eval_without_teachers = sentiment_data.select(range(32)).remove_columns("teacher_logits")
    trainer = DistillationTrainer(
        model=tiny_student(),
        args=args,
        train_dataset=sentiment_data,
        eval_dataset=eval_without_teachers,
        processing_class=tokenizer,
    )
    trainer.train()
    metrics = trainer.evaluate()
    assert metrics["eval_loss"] > 0
    with_teachers = trainer.evaluate(sentiment_data.select(range(32)))
    assert with_teachers["eval_loss"] > 0 and with_teachers["eval_loss"] != metrics["eval_loss"]
    predictions = trainer.predict(sentiment_data.select(range(32)).remove_columns("label"))
    assert predictions.predictions.shape == (32, 2)
