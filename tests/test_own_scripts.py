"""The core as a user's own script uses it (`DistillationTrainer` imported, not the recipes): found by a review of
that use (2026-12-07), each reproduced first."""

import datasets
import numpy as np
import pytest
import torch
from helpers import make_sentences, teacher_logits_for, tiny_config, tiny_student
from safetensors.torch import load_file

from distill_trainer import DistillationConfig, DistillationDataCollator, DistillationTrainer, attach_teacher_logits


def regression_rows(tokenizer, as_lists: bool) -> datasets.Dataset:
    sentences, _ = make_sentences(17)
    scores = np.random.default_rng(0).uniform(0, 5, len(sentences))
    rows = datasets.Dataset.from_dict(
        {"sentence": sentences, "labels": [[float(y)] if as_lists else float(y) for y in scores]}
    )
    logits = np.stack([scores, scores + 0.5], 1)[:, :, None].astype(np.float32)
    rows = attach_teacher_logits(rows, logits, ["a", "b"], ["score"], ["sentence"])
    return rows.map(lambda batch: tokenizer(batch["sentence"]), batched=True)


@pytest.mark.parametrize("batch_size", [1, 4])
def test_a_row_label_stored_as_a_list_trains_as_the_scalar_does(tmp_path, tokenizer, batch_size):
    """`labels` of `[score]` were padded along the sequence as if they were a causal LM's token labels: all -100 (at
    batch size 1 nothing was learnt, loss 0) or a shape error."""
    losses = []
    for as_lists in (True, False):
        rows = regression_rows(tokenizer, as_lists)
        args = tiny_config(tmp_path, per_device_train_batch_size=batch_size, alpha=0.5)
        trainer = DistillationTrainer(model=tiny_student(1), args=args, train_dataset=rows, processing_class=tokenizer)
        losses.append(trainer.train().training_loss)
    assert losses[0] == pytest.approx(losses[1]) and losses[0] > 0
    row = {"input_ids": [1, 5, 2], "labels": [3.8]}
    assert DistillationDataCollator(tokenizer)([row])["labels"].tolist() == [[pytest.approx(3.8)]]
    token_rows = [{"input_ids": [1, 5, 2], "labels": [1, 5, 2]}]
    assert DistillationDataCollator(tokenizer)(token_rows)["labels"].tolist() == [[-100, 5, 2]]  # per token


def test_a_multi_label_student_is_refused(tmp_path, tokenizer, sentiment_data):
    student = tiny_student(problem_type="multi_label_classification")
    with pytest.raises(ValueError, match="multi-label classifier .* Train it with transformers.Trainer"):
        DistillationTrainer(model=student, args=tiny_config(tmp_path), train_dataset=sentiment_data)


def test_options_that_would_be_ignored_are_refused(tmp_path, tokenizer, sentiment_data):
    with pytest.raises(ValueError, match="compute_loss_func is not used. Register a KD loss"):
        DistillationTrainer(
            model=tiny_student(), args=tiny_config(tmp_path), train_dataset=sentiment_data, compute_loss_func=len
        )
    for name, value in (("alpha_end", 0.1), ("temperature_end", 1.0)):
        with pytest.raises(ValueError, match=f"{name}={value} is used only by"):
            DistillationConfig(output_dir=str(tmp_path), **{name: value})
    with pytest.raises(ValueError, match="'weighted' with teacher_models needs fusion_weights"):
        DistillationTrainer(
            model=tiny_student(),
            args=tiny_config(tmp_path, fusion="weighted"),
            train_dataset=sentiment_data,
            teacher_models=[tiny_student(seed=1), tiny_student(seed=2)],
        )


def card_text(trainer) -> str:
    trainer.train()
    trainer.evaluate()
    trainer.create_model_card()
    return open(f"{trainer.args.output_dir}/README.md").read()


def test_the_card_of_an_own_script_says_how_the_student_was_taught(tmp_path, tokenizer, sentiment_data):
    """The card said "unknown" for a score `compute_metrics` logged when the teachers named no metric (the README
    quickstart), "distilled from 3 teachers" at alpha=0, and the stored teachers (or none) for live teachers."""

    def trainer(name, **options):
        live = options.pop("teacher_models", None)
        args = tiny_config(tmp_path, output_dir=str(tmp_path / name), **options)
        accuracy = {"compute_metrics": lambda p: {"accuracy": float((p.predictions.argmax(-1) == p.label_ids).mean())}}
        train, evaluation = sentiment_data.select(range(64)), sentiment_data.select(range(64, 96))
        return DistillationTrainer(
            tiny_student(), args, None, train, evaluation, tokenizer, teacher_models=live, **accuracy
        )

    quickstart = trainer("quickstart")  # a teacher_logits column without metadata: three unnamed teachers
    text = card_text(quickstart)
    score = [log["eval_accuracy"] for log in quickstart.state.log_history if "eval_accuracy" in log][-1]
    assert f"| **this student** (average) | **{score:.4f}** |" in text and "distilled from 3 teachers" in text
    assert "| teacher 2: unnamed | unknown |" in text
    sentences, labels = make_sentences(64)
    named = attach_teacher_logits(  # teachers named, no metric: as the README quickstart attaches them
        datasets.Dataset.from_dict({"sentence": sentences, "label": labels}),
        teacher_logits_for(labels),
        ["t0", "t1", "t2"],
        ["negative", "positive"],
        ["sentence"],
    ).map(lambda batch: tokenizer(batch["sentence"]), batched=True)
    quickstart.train_dataset = named
    assert "| teacher 2: t2 | unknown |" in card_text(quickstart)
    text = card_text(trainer("plain", alpha=0.0))
    assert "**this student** (none)" in text and "without distillation" in text and "distilled from" not in text
    live = trainer("live", teacher_models=[tiny_student(seed=1), tiny_student(seed=2)])
    text = card_text(live)
    assert "distilled from 2 teachers" in text and "| teacher 1: BertForSequenceClassification | unknown |" in text
    splits = trainer("splits")
    splits.eval_dataset = {"val": splits.eval_dataset}  # logs eval_val_accuracy, eval_val_loss, ...
    text = card_text(splits)
    score = [log["eval_val_accuracy"] for log in splits.state.log_history if "eval_val_accuracy" in log][-1]
    assert f"| **this student** (average) | **{score:.4f}** |" in text


def test_load_best_model_at_end_restores_the_gate_with_the_student(tmp_path, tokenizer, sentiment_data):
    args = tiny_config(
        tmp_path,
        fusion="gating",
        num_train_epochs=3,
        eval_strategy="steps",
        eval_steps=2,
        save_strategy="steps",
        save_steps=2,
        load_best_model_at_end=True,
        metric_for_best_model="eval_loss",
        greater_is_better=True,  # the worst loss: a checkpoint before the last
        gate_learning_rate=0.02,
    )
    train, evaluation = sentiment_data.select(range(64)), sentiment_data.select(range(64, 96))
    trainer = DistillationTrainer(tiny_student(), args, None, train, evaluation, tokenizer)
    trainer.train()
    best = trainer.state.best_global_step
    assert best != trainer.state.global_step
    saved = load_file(f"{args.output_dir}/checkpoint-{best}/distill_gate.safetensors")
    for key, value in trainer.gate.state_dict().items():
        torch.testing.assert_close(value, saved[key])
    logged = next(log["eval_loss"] for log in trainer.state.log_history if "eval_loss" in log and log["step"] == best)
    assert trainer.evaluate()["eval_loss"] == pytest.approx(logged, abs=1e-6)
    # a best checkpoint without the gate file here (another node's disk): the parent warns and goes on, so does this
    (tmp_path / "out" / f"checkpoint-{best}" / "distill_gate.safetensors").unlink()
    trainer._load_best_model()


def test_an_eval_split_of_other_teachers_is_refused_when_given_to_evaluate(tmp_path, tokenizer, sentiment_data):
    """`evaluate(eval_dataset=...)` scored a split of 2 teachers after training with 3, and eval logits in another
    label order than the train set's, silently."""
    trainer = DistillationTrainer(
        tiny_student(), tiny_config(tmp_path, max_steps=1), None, sentiment_data, None, tokenizer
    )
    trainer.train()
    two = sentiment_data.map(lambda row: {"teacher_logits": row["teacher_logits"][:2]})
    with pytest.raises(ValueError, match="The eval dataset has 2 teachers but the train dataset has 3"):
        trainer.evaluate(two)
    sentences, labels = make_sentences(32)
    rows = datasets.Dataset.from_dict({"sentence": sentences, "label": labels})
    logits = teacher_logits_for(labels)
    names = ["a", "b", "c"]
    train = attach_teacher_logits(rows, logits, names, ["negative", "positive"], ["sentence"])
    flipped = attach_teacher_logits(rows, logits[:, :, ::-1].copy(), names, ["positive", "negative"], ["sentence"])
    tokenized = [split.map(lambda batch: tokenizer(batch["sentence"]), batched=True) for split in (train, flipped)]
    with pytest.raises(ValueError, match=r"the eval dataset's teacher logits has \['positive', 'negative'\]"):
        DistillationTrainer(tiny_student(), tiny_config(tmp_path), None, tokenized[0], tokenized[1], tokenizer)
    # the same teachers in another column order (found by the session 31 review): `single`'s teacher 0 was another
    columns = (logits[:, ::-1].copy(), names[::-1], ["negative", "positive"], ["sentence"])
    reordered = attach_teacher_logits(rows, *columns)
    reordered = reordered.map(lambda batch: tokenizer(batch["sentence"]), batched=True)
    with pytest.raises(ValueError, match=r"stored teachers are \['c', 'b', 'a'\] .*but the train dataset's are"):
        DistillationTrainer(
            tiny_student(), tiny_config(tmp_path, fusion="single", teacher_index=0), None, tokenized[0], reordered
        )


def test_eval_splits_are_checked_only_where_their_stored_teachers_are_read(tmp_path, tokenizer, sentiment_data):
    """Found by a review of the checks above: with live teachers an eval split carrying a stored column was refused
    in evaluate(); a label order differing only in case, or given at alpha=0, or on a split without the teacher
    column, was refused though nothing read it that way."""
    live = [tiny_student(seed=1), tiny_student(seed=2)]
    trainer = DistillationTrainer(
        tiny_student(), tiny_config(tmp_path, max_steps=1), None, sentiment_data, None, tokenizer, teacher_models=live
    )
    trainer.train()
    assert "eval_loss" in trainer.evaluate(sentiment_data.select(range(16)))
    sentences, labels = make_sentences(32)
    rows = datasets.Dataset.from_dict({"sentence": sentences, "label": labels})
    logits, names = teacher_logits_for(labels), ["a", "b", "c"]

    def attached(values, label_names):
        dataset = attach_teacher_logits(rows, values, names, label_names, ["sentence"])
        return dataset.map(lambda batch: tokenizer(batch["sentence"]), batched=True)

    train = attached(logits, ["negative", "positive"])
    flipped = attached(logits[:, :, ::-1].copy(), ["positive", "negative"])
    DistillationTrainer(tiny_student(), tiny_config(tmp_path), None, train, attached(logits, ["NEGATIVE", "Positive"]))
    DistillationTrainer(tiny_student(), tiny_config(tmp_path, fusion="none"), None, train, flipped)
    DistillationTrainer(tiny_student(), tiny_config(tmp_path), None, train, flipped.remove_columns("teacher_logits"))


def test_kd_alone_has_an_eval_loss_on_rows_without_labels(tmp_path, tokenizer, sentiment_data):
    """At alpha = 1 the objective needs no labels (a student trained on an unlabelled transfer set), but evaluation
    on such rows gave no eval_loss, so `metric_for_best_model="eval_loss"` failed. Where labels are needed (CE, a
    fusion weighing teachers by the gold label) there is still none."""
    rows = sentiment_data.select_columns(["input_ids", "token_type_ids", "attention_mask", "label", "teacher_logits"])
    unlabelled = rows.remove_columns("label")
    for fusion, alpha in (("average", 1.0), ("min_entropy", 1.0), ("average", 0.5), ("confidence", 1.0)):
        args = tiny_config(tmp_path, alpha=alpha, fusion=fusion)
        trainer = DistillationTrainer(model=tiny_student(), args=args, train_dataset=rows, processing_class=tokenizer)
        trainer.train()
        loss = trainer.evaluate(unlabelled).get("eval_loss")
        if alpha == 1 and fusion != "confidence":  # KD alone: the labels' presence changes nothing
            assert loss == pytest.approx(trainer.evaluate(rows)["eval_loss"])
        else:
            assert loss is None
        assert trainer.predict(unlabelled).predictions.shape == (len(rows), 2)
