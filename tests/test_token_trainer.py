"""DistillationTrainer on causal LMs (top-k teachers), live teachers, and no host-device synchronisation per step."""

import numpy as np
import pytest
import torch
from causal_helpers import causal_config, causal_dataset, causal_tokenizer, tiny_llama, with_topk
from helpers import assert_same_params, params, tiny_config, tiny_student
from transformers import LlamaForCausalLM

from distill_trainer import (
    DistillationDataCollator,
    DistillationTrainer,
    attach_teacher_logits,
    attach_teacher_topk,
    fuse_topk,
    sparse_kd_loss,
    topk_from_logits,
)
from distill_trainer.tokens import next_token_labels


@pytest.fixture(scope="module")
def topk_data():
    return with_topk(causal_dataset(48), k=8)


def trainer_for(tmp_path, data, **overrides):
    return DistillationTrainer(
        model=tiny_llama(),
        args=causal_config(tmp_path, **overrides),
        train_dataset=data,
        processing_class=causal_tokenizer(),
    )


def test_compute_loss_is_alpha_sparse_kd_plus_next_token_ce(tmp_path, topk_data):
    trainer = trainer_for(tmp_path, topk_data, temperature=2.0, alpha=0.7)
    batch = next(iter(trainer.get_train_dataloader()))
    assert batch["teacher_topk_ids"].shape[:3] == (8, 2, batch["input_ids"].shape[1])
    loss = trainer.compute_loss(trainer.model, dict(batch))
    model_inputs = {k: batch[k] for k in ("input_ids", "attention_mask")}
    outputs = trainer.model(**model_inputs, labels=batch["labels"])  # the model's own shifted CE
    ids, logprobs = fuse_topk(batch["teacher_topk_ids"], batch["teacher_topk_logprobs"], "average")
    mask = next_token_labels(batch["labels"]) != -100
    kd = sparse_kd_loss(outputs.logits, ids, logprobs, 2.0, mask)
    torch.testing.assert_close(loss, 0.7 * kd + 0.3 * outputs.loss, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_a_causal_student_learns_from_topk_teachers_and_logs_each_term(tmp_path, topk_data):
    trainer = trainer_for(tmp_path, topk_data, num_train_epochs=6, logging_strategy="steps", logging_steps=6)
    losses = []
    original = trainer.compute_loss

    def recording(*args, **kwargs):
        loss = original(*args, **kwargs)
        losses.append(loss.item())
        return loss

    trainer.compute_loss = recording
    trainer.train()
    assert np.mean(losses[-6:]) < 0.7 * np.mean(losses[:6]), (losses[:6], losses[-6:])
    logs = [log for log in trainer.state.log_history if "loss_kd" in log]
    assert logs and all(log["loss_kd"] > 0 and log["loss_ce"] > 0 for log in logs)
    assert logs[-1]["loss_kd"] < logs[0]["loss_kd"] and logs[-1]["loss_ce"] < logs[0]["loss_ce"]
    assert logs[0]["loss"] == pytest.approx(0.5 * logs[0]["loss_kd"] + 0.5 * logs[0]["loss_ce"], rel=1e-3)


@pytest.mark.parametrize("fusion", ["average", "confidence"])
def test_gradient_accumulation_matches_the_big_batch(tmp_path, topk_data, fusion):
    def one_update(batch_size, accumulation):
        trainer = trainer_for(
            tmp_path,
            topk_data,
            fusion=fusion,
            per_device_train_batch_size=batch_size,
            gradient_accumulation_steps=accumulation,
            optim="sgd",
            learning_rate=0.5,
            max_steps=1,
            lr_scheduler_type="constant",
        )
        before = params(trainer.model)
        trainer.train()
        after = params(trainer.model)
        assert any((after[n] - before[n]).abs().max() > 1e-4 for n in before)
        return after

    assert_same_params(one_update(8, 4), one_update(32, 1), rtol=1e-4, atol=1e-6)


def test_strategies_without_a_per_token_form_are_refused_when_the_trainer_is_built(tmp_path, topk_data):
    with pytest.raises(ValueError, match="fusion='gating' does not fuse per-token teachers of causal LMs"):
        trainer_for(tmp_path, topk_data, fusion="gating")
    with pytest.raises(ValueError, match="calibrate_teachers .* stored dense teachers only"):
        trainer_for(tmp_path, topk_data, calibrate_teachers=True)
    with pytest.raises(ValueError, match="kd_loss='mse' does not apply to per-token teachers"):
        trainer_for(tmp_path, topk_data, kd_loss="mse")


def test_live_causal_teachers_give_the_loss_of_their_stored_full_topk(tmp_path):
    data = causal_dataset(16)
    teachers = [tiny_llama(seed=1), tiny_llama(seed=2)]
    ids, logprobs = [], []
    with torch.no_grad():
        for row in data["input_ids"]:
            out = [topk_from_logits(t(torch.tensor([row])).logits[0], 64, torch.float32) for t in teachers]
            ids.append(np.stack([o[0].numpy() for o in out]))
            logprobs.append(np.stack([o[1].numpy() for o in out]))
    from distill_trainer import attach_teacher_topk

    stored = attach_teacher_topk(data, ids, logprobs, ["t1", "t2"], causal_tokenizer(), logprobs_dtype="float32")
    for fusion in ("average", "min_entropy"):
        options = dict(fusion=fusion, temperature=3.0, alpha=0.6, kd_loss="jsd")
        offline = trainer_for(tmp_path, stored, **options)
        online = DistillationTrainer(
            model=tiny_llama(),
            args=causal_config(tmp_path, **options),
            train_dataset=data,
            processing_class=causal_tokenizer(),
            teacher_models=teachers,
        )
        batch = next(iter(offline.get_train_dataloader()))
        live_batch = {k: v for k, v in batch.items() if not k.startswith("teacher_topk")}
        torch.testing.assert_close(
            online.compute_loss(online.model, live_batch),
            offline.compute_loss(offline.model, batch),
            rtol=1e-5,
            atol=1e-6,
        )
    assert all(not t.training and not any(p.requires_grad for p in t.parameters()) for t in teachers)


def test_live_classification_teachers_give_the_loss_of_their_stored_logits(tmp_path, sentiment_data, tokenizer):
    teachers = [tiny_student(seed=1), tiny_student(seed=2)]
    plain = sentiment_data.remove_columns("teacher_logits")
    with torch.no_grad():
        logits = np.stack(
            [
                np.concatenate([t(**tokenizer(text, return_tensors="pt")).logits.numpy() for t in teachers])
                for text in plain["sentence"]
            ]
        )
    stored = attach_teacher_logits(plain, logits, ["t1", "t2"], ["neg", "pos"], ["sentence"])
    for fusion in ("average", "confidence"):
        offline = DistillationTrainer(
            model=tiny_student(),
            args=tiny_config(tmp_path, fusion=fusion),
            train_dataset=stored,
            processing_class=tokenizer,
        )
        online = DistillationTrainer(
            model=tiny_student(),
            args=tiny_config(tmp_path, fusion=fusion),
            train_dataset=plain,
            processing_class=tokenizer,
            teacher_models=teachers,
        )
        batch = next(iter(offline.get_train_dataloader()))
        live_batch = {k: v for k, v in batch.items() if k != "teacher_logits"}
        torch.testing.assert_close(
            online.compute_loss(online.model, live_batch),
            offline.compute_loss(offline.model, batch),
            rtol=1e-5,
            atol=1e-6,
        )
    with pytest.raises(ValueError, match="fusion='fitted' fits weights on stored validation logits"):
        DistillationTrainer(
            model=tiny_student(),
            args=tiny_config(tmp_path, fusion="fitted"),
            train_dataset=plain,
            processing_class=tokenizer,
            teacher_models=teachers,
        )


# ---- no host-device synchronisation per step -----------------------------------------------------------------

READS = ("item", "tolist", "numpy", "cpu", "__bool__", "__int__", "__float__", "__index__", "nonzero")
UPLOADS = ("new_tensor",)  # a tensor made from host values inside a step: a copy to the device (a sync) every step


@pytest.fixture
def count_host_reads(monkeypatch):
    """Count every read of a tensor's values on the host inside compute_loss, the models' own forwards left out,
    with the trainer believing its tensors are on an accelerator (so its CPU-only checks stay off). Calls from
    Python are counted; ops whose output shape depends on values (boolean indexing, unique) are not used."""
    state = {"on": False, "reads": []}
    for name in READS + UPLOADS:
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _original=original, _name=name, **kwargs):
            if state["on"]:
                state["reads"].append(_name)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)
    for name in ("tensor", "as_tensor"):
        original = getattr(torch, name)

        def made(*args, _original=original, _name=name, **kwargs):
            if state["on"]:
                state["reads"].append(f"torch.{_name}")
            return _original(*args, **kwargs)

        monkeypatch.setattr(torch, name, made)
    for module in ("trainer", "monitoring"):  # every tensor as if on an accelerator
        monkeypatch.setattr(f"distill_trainer.{module}.on_host", lambda tensor: False)

    def watch(trainer, models):
        original = trainer.compute_loss

        def compute_loss(*args, **kwargs):
            state["on"] = True
            try:
                return original(*args, **kwargs)
            finally:
                state["on"] = False

        trainer.compute_loss = compute_loss
        for model in models:  # a model's forward is the model's business, not the KD step's
            model.register_forward_pre_hook(lambda *_: state.update(on=False))
            model.register_forward_hook(lambda *_: state.update(on=True))
        return state

    return watch


DENSE_FUSIONS = {
    "dense": {"fusion": "confidence"},
    "dense_weighted": {"fusion": "weighted", "fusion_weights": [0.2, 0.3, 0.5]},
    "dense_gating": {"fusion": "gating"},
    "dense_calibrated": {"fusion": "average", "calibrate_teachers": True},
}


@pytest.mark.parametrize(
    "kind", ["topk", "topk_confidence", "topk_weighted", "live_causal", *DENSE_FUSIONS, "live_dense"]
)
def test_a_kd_step_reads_nothing_from_the_device(
    tmp_path, topk_data, sentiment_data, tokenizer, kind, count_host_reads
):
    options = dict(max_steps=3, gradient_accumulation_steps=2)
    if kind.startswith("topk"):
        fusion = {"topk_confidence": "confidence", "topk_weighted": "weighted"}.get(kind, "min_entropy")
        if fusion == "weighted":
            options["fusion_weights"] = [0.3, 0.7]
        trainer, teachers = trainer_for(tmp_path, topk_data, fusion=fusion, kd_loss="jsd", **options), []
    elif kind == "live_causal":
        teachers = [tiny_llama(seed=1), tiny_llama(seed=2)]
        trainer = DistillationTrainer(
            model=tiny_llama(),
            args=causal_config(tmp_path, **options),
            train_dataset=causal_dataset(48),
            processing_class=causal_tokenizer(),
            teacher_models=teachers,
        )
    else:
        teachers = [tiny_student(seed=1)] if kind == "live_dense" else []
        trainer = DistillationTrainer(
            model=tiny_student(),
            args=tiny_config(tmp_path, **DENSE_FUSIONS.get(kind, DENSE_FUSIONS["dense"]), **options),
            train_dataset=sentiment_data,
            eval_dataset=sentiment_data if kind == "dense_calibrated" else None,
            processing_class=tokenizer,
            teacher_models=teachers or None,
        )
    state = count_host_reads(trainer, [trainer.model, *teachers])
    trainer.train()
    assert state["reads"] == []
    assert trainer.state.global_step == 3


def test_the_read_counter_sees_a_read(tmp_path, sentiment_data, tokenizer, count_host_reads, monkeypatch):
    trainer = DistillationTrainer(
        model=tiny_student(),
        args=tiny_config(tmp_path, max_steps=1),
        train_dataset=sentiment_data,
        processing_class=tokenizer,
    )
    monkeypatch.setattr("distill_trainer.trainer.on_host", lambda tensor: True)  # the CPU-only finiteness check
    state = count_host_reads(trainer, [trainer.model])
    trainer.train()
    assert "__bool__" in state["reads"]


class NoLossKwargsLlama(LlamaForCausalLM):
    """A user's causal LM whose `forward` takes no loss kwargs (as Gemma3n's and Gemma4's multimodal classes):
    the `Trainer` then counts no tokens unless asked to."""

    accepts_loss_kwargs = False


def test_accumulation_matches_the_big_batch_for_a_student_that_takes_no_loss_kwargs(tmp_path, topk_data):
    """Found by the session 31 review: such a student (a user's subclass, recognised as a causal LM now) trained
    with a mean of micro-batch means, 27-37% off the big batch's update."""

    def one_update(batch_size, accumulation):
        torch.manual_seed(0)
        model = NoLossKwargsLlama(tiny_llama().config)
        options = dict(optim="sgd", learning_rate=0.5, max_steps=1, lr_scheduler_type="constant")
        args = causal_config(tmp_path, per_device_train_batch_size=batch_size, **options)
        args.gradient_accumulation_steps = accumulation
        trainer = DistillationTrainer(model, args, train_dataset=topk_data, processing_class=causal_tokenizer())
        trainer.train()
        return params(trainer.model)

    assert_same_params(one_update(8, 4), one_update(32, 1), rtol=1e-4, atol=1e-6)


def reordered_topk(data):
    """`data`'s top-k teachers in the other column order, named so."""
    ids = [np.asarray(row)[::-1] for row in data["teacher_topk_ids"]]
    logprobs = [np.asarray(row, dtype=np.float16)[::-1] for row in data["teacher_topk_logprobs"]]
    return attach_teacher_topk(data, ids, logprobs, ["oracle-1", "oracle-0"], causal_tokenizer())


def test_what_a_causal_student_cannot_be_trained_on_is_refused_when_the_trainer_is_built(tmp_path, topk_data):
    """Found by the session 31 review, each accepted before: an eval split whose top-k teachers are the train set's
    in another order (`single` then scored against the other teacher); a student tokenizer of another vocabulary
    given only through the data collator; labels shifted already (CE on the token after next)."""
    args = causal_config(tmp_path, fusion="single", teacher_index=0)
    with pytest.raises(ValueError, match=r"stored teachers are \['oracle-1', 'oracle-0'\] .*but the train dataset's"):
        DistillationTrainer(tiny_llama(), args, train_dataset=topk_data, eval_dataset=reordered_topk(topk_data))
    collator = DistillationDataCollator(causal_tokenizer(swap=True))
    with pytest.raises(ValueError, match="vocabulary differs"):
        DistillationTrainer(tiny_llama(), causal_config(tmp_path), collator, topk_data)
    shifted = topk_data.map(lambda row: {"labels": row["input_ids"][1:] + [-100]})
    with pytest.raises(ValueError, match="labels differ from its input_ids in 48 rows .*not shifted"):
        DistillationTrainer(tiny_llama(), causal_config(tmp_path), train_dataset=shifted)


def test_the_trainer_counts_the_scored_next_tokens_and_an_unreadable_saved_tokenizer_is_no_crash(
    tmp_path, topk_data, caplog
):
    """The `Trainer` counts a causal student's scored tokens over `labels[..., 1:]` (a row's first label is never
    predicted), whatever its `forward` takes; a student whose saved tokenizer cannot be read (the review found a
    `tokenizers` parse error raising a bare exception) is trained without that check, with a warning."""
    student = NoLossKwargsLlama(tiny_llama().config)
    trainer = DistillationTrainer(student, causal_config(tmp_path), train_dataset=topk_data)
    labels = torch.tensor([[5, 6, 7, -100], [8, 9, -100, -100]])  # a user's collator: the first labels kept
    _, count = trainer.get_batch_samples(iter([{"input_ids": labels.clamp(min=0), "labels": labels}]), 1, "cpu")
    assert int(count) == 3
    folder = tmp_path / "unreadable"
    tiny_llama().save_pretrained(folder)
    (folder / "tokenizer_config.json").write_text('{"tokenizer_class": "PreTrainedTokenizerFast"}')
    (folder / "tokenizer.json").write_text('{"version": "1.0", "model": {"type": "Nope"}}')
    with caplog.at_level("WARNING", logger="distill_trainer.vocabulary"):
        DistillationTrainer(LlamaForCausalLM.from_pretrained(folder), causal_config(tmp_path), train_dataset=topk_data)
    assert f"The tokenizer saved at {folder} could not be read" in caplog.text
