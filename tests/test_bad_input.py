"""Bad input gets a ValueError that names the problem, raised before any training step runs."""

import logging

import datasets
import numpy as np
import pytest
import torch
from helpers import teacher_logits_for, tiny_student

from distill_trainer import (
    DistillationConfig,
    DistillationDataCollator,
    DistillationTrainer,
    TeacherInfo,
    attach_teacher_logits,
    read_metadata,
    validate_logit_dataset,
)
from distill_trainer.logits import write_metadata


def args(tmp_path, **overrides):
    options = dict(output_dir=str(tmp_path), use_cpu=True, report_to="none", max_steps=1, disable_tqdm=True)
    options.update(overrides)
    return DistillationConfig(**options)


def build(tmp_path, dataset, tokenizer, model=None, **overrides):
    return DistillationTrainer(
        model=model or tiny_student(),
        args=args(tmp_path, **overrides),
        train_dataset=dataset,
        processing_class=tokenizer,
    )


def with_column(dataset, values):
    return dataset.remove_columns("teacher_logits").add_column("teacher_logits", values)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"temperature": 0.0}, "temperature must be a finite number > 0"),
        ({"temperature": -2.0}, "temperature must be a finite number > 0"),
        ({"alpha": 1.5}, r"alpha must be in \[0, 1\]"),
        ({"alpha": -0.1}, r"alpha must be in \[0, 1\]"),
        ({"fusion": "median"}, "Unknown fusion strategy 'median'"),
        ({"fusion": "weighted", "fusion_weights": [0.0, 0.0]}, "not all zero"),
        ({"fusion": "weighted", "fusion_weights": [1.0, -1.0]}, "non-negative"),
        ({"fusion": "single"}, "needs teacher_index"),
    ],
)
def test_config_refuses_bad_hyperparameters(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        args(tmp_path, **overrides)


def test_missing_teacher_column(tmp_path, tokenizer, sentiment_data):
    with pytest.raises(ValueError, match="no 'teacher_logits' column"):
        build(tmp_path, sentiment_data.remove_columns("teacher_logits"), tokenizer)
    with pytest.raises(ValueError, match="no 'soft_targets' column"):
        build(tmp_path, sentiment_data, tokenizer, teacher_logits_column="soft_targets")
    build(tmp_path, sentiment_data.remove_columns("teacher_logits"), tokenizer, alpha=0.0)  # plain fine-tuning


def test_wrong_shapes(tmp_path, tokenizer, sentiment_data):
    n = len(sentiment_data)
    ragged = [[[0.0, 1.0], [1.0]]] * n
    with pytest.raises(ValueError, match="all of the same shape"):
        build(tmp_path, with_column(sentiment_data, ragged), tokenizer)
    flat = np.zeros((n, 2)).tolist()  # [n_labels] per row: no teacher axis
    with pytest.raises(ValueError, match=r"\[n_teachers, n_labels\]"):
        build(tmp_path, with_column(sentiment_data, flat), tokenizer)


def test_label_count_differs_from_student(tmp_path, tokenizer, sentiment_data):
    three_labels = np.zeros((len(sentiment_data), 3, 3)).tolist()
    with pytest.raises(ValueError, match="num_labels=2"):
        build(tmp_path, with_column(sentiment_data, three_labels), tokenizer)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_logits(tmp_path, tokenizer, sentiment_data, bad):
    logits = np.asarray(sentiment_data["teacher_logits"][:], dtype=np.float32)
    logits[7, 1, 0] = bad
    with pytest.raises(ValueError, match=r"NaN or infinite logits in 1 rows \(first rows: \[7\]\)"):
        build(tmp_path, with_column(sentiment_data, logits.tolist()), tokenizer)


def test_non_finite_logits_in_a_batch(tmp_path, tokenizer, sentiment_data):
    trainer = build(tmp_path, sentiment_data, tokenizer)
    batch = next(iter(trainer.get_train_dataloader()))
    batch["teacher_logits"][0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN or infinite"):
        trainer.compute_loss(trainer.model, batch)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"fusion": "weighted", "fusion_weights": [1.0, 1.0]}, "2 values but there are 3 teachers"),
        ({"fusion": "weighted"}, "needs fusion_weights"),
        ({"fusion": "single", "teacher_index": 3}, "teacher_index=3 is out of range for 3 teachers"),
    ],
)
def test_options_that_do_not_fit_the_teacher_count(tmp_path, tokenizer, sentiment_data, overrides, message):
    with pytest.raises(ValueError, match=message):
        build(tmp_path, sentiment_data, tokenizer, **overrides)


def test_args_must_be_a_distillation_config(tmp_path, sentiment_data):
    from transformers import TrainingArguments

    with pytest.raises(TypeError, match="DistillationConfig"):
        DistillationTrainer(
            model=tiny_student(), args=TrainingArguments(output_dir=str(tmp_path)), train_dataset=sentiment_data
        )


@pytest.fixture
def logit_dataset(sentiment_data):
    data = sentiment_data.remove_columns("teacher_logits")
    logits = teacher_logits_for(data["label"][:])
    teachers = [TeacherInfo("org/teacher-a", validation_score=0.9), "org/teacher-b", "tfidf-logreg"]
    return attach_teacher_logits(data, logits, teachers, ["negative", "positive"], ["sentence"])


def test_metadata_travels_through_save_and_load(tmp_path, logit_dataset):
    logit_dataset.save_to_disk(str(tmp_path / "logits"))
    reloaded = datasets.load_from_disk(str(tmp_path / "logits"))
    metadata = read_metadata(reloaded.shuffle(seed=0).map(lambda row: row))
    assert [t.name for t in metadata.teachers] == ["org/teacher-a", "org/teacher-b", "tfidf-logreg"]
    assert metadata.validation_scores == [0.9, None, None]
    assert metadata.label_names == ["negative", "positive"]
    assert reloaded.features["teacher_logits"].shape == (3, 2)
    np.testing.assert_array_equal(
        np.asarray(reloaded["teacher_logits"][:3]), np.asarray(logit_dataset["teacher_logits"][:3])
    )


def test_weighted_fusion_defaults_to_validation_scores(tmp_path, tokenizer, logit_dataset):
    with pytest.raises(ValueError, match="no validation score for every teacher"):
        build(tmp_path, logit_dataset, tokenizer, fusion="weighted")
    metadata = read_metadata(logit_dataset)
    for teacher, score in zip(metadata.teachers, [0.9, 0.8, 0.7], strict=False):
        teacher.validation_score = score
    scored = write_metadata(logit_dataset.select(range(len(logit_dataset))), metadata)
    assert build(tmp_path, scored, tokenizer, fusion="weighted").fusion_weights == [0.9, 0.8, 0.7]


def test_fusion_none_is_plain_fine_tuning(tmp_path):
    assert args(tmp_path, fusion="none", alpha=0.7).alpha == 0.0


def test_label_names_must_match_the_student(tmp_path, tokenizer, logit_dataset):
    swapped = tiny_student(id2label={0: "positive", 1: "negative"}, label2id={"positive": 0, "negative": 1})
    with pytest.raises(ValueError, match="Label spaces differ"):
        build(tmp_path, logit_dataset, tokenizer, model=swapped)
    named = tiny_student(id2label={0: "NEGATIVE", 1: "POSITIVE"}, label2id={"NEGATIVE": 0, "POSITIVE": 1})
    build(tmp_path, logit_dataset, tokenizer, model=named)


def test_logits_that_belong_to_other_data_are_refused(logit_dataset, sentiment_data):
    data = sentiment_data.remove_columns("teacher_logits")
    validate_logit_dataset(logit_dataset, reference=data)
    with pytest.raises(ValueError, match="another split or subset"):
        validate_logit_dataset(logit_dataset, reference=data.select(range(100)))
    with pytest.raises(ValueError, match="does not belong to this data"):
        validate_logit_dataset(logit_dataset, reference=data.shuffle(seed=1))
    edited = data.map(lambda row, i: {"sentence": row["sentence"] + (" good" if i == 5 else "")}, with_indices=True)
    with pytest.raises(ValueError, match="does not belong to this data"):
        validate_logit_dataset(logit_dataset, reference=edited)


def test_metadata_that_contradicts_the_column(logit_dataset):
    truncated = logit_dataset.map(
        lambda row: {"teacher_logits": row["teacher_logits"][:2]}, features=None
    ).cast_column("teacher_logits", datasets.Array2D((2, 2), "float32"))
    with pytest.raises(ValueError, match="changed after extraction"):
        validate_logit_dataset(truncated)


def test_teacher_columns_in_another_order_or_edited_are_refused(logit_dataset, caplog):
    validate_logit_dataset(logit_dataset.shuffle(seed=3))  # rows move with their inputs: fine
    feature = logit_dataset.features["teacher_logits"]
    swapped = logit_dataset.map(
        lambda row: {"teacher_logits": [row["teacher_logits"][i] for i in (1, 0, 2)]}, features=logit_dataset.features
    )
    with pytest.raises(
        ValueError, match=r"in the order \['org/teacher-b', 'org/teacher-a', 'tfidf-logreg'\] but the metadata"
    ):
        validate_logit_dataset(swapped)
    edited = logit_dataset.map(
        lambda row, i: {"teacher_logits": [[v + (1.0 if i == 7 else 0.0) for v in t] for t in row["teacher_logits"]]},
        with_indices=True,
        features=logit_dataset.features,
    )
    with pytest.raises(ValueError, match="edited after extraction"):
        validate_logit_dataset(edited)
    assert feature.shape == (3, 2)
    with caplog.at_level(logging.WARNING, logger="distill_trainer.logits"):  # a subset cannot be checked: said so
        validate_logit_dataset(swapped.select(range(10)))
    assert "10 of the 128 rows the teacher logits were extracted for" in caplog.text


def test_a_dataset_without_the_inputs_its_logits_are_bound_to_is_refused_by_name(tmp_path, logit_dataset, tokenizer):
    """Dropping the text after tokenizing used to fail inside `datasets` ("Columns [...] not in the dataset")."""
    without_text = logit_dataset.remove_columns("sentence")
    with pytest.raises(ValueError, match=r"lacks the input columns \['sentence'\] that its teacher logits"):
        build(tmp_path, without_text, tokenizer)


def test_attach_refuses_inconsistent_input(sentiment_data):
    data = sentiment_data.remove_columns("teacher_logits")
    logits = teacher_logits_for(data["label"][:])
    with pytest.raises(ValueError, match="128 rows but the dataset has 100"):
        attach_teacher_logits(data.select(range(100)), logits, ["a", "b", "c"], ["n", "p"], ["sentence"])
    with pytest.raises(ValueError, match="3 teachers but 2 teachers"):
        attach_teacher_logits(data, logits, ["a", "b"], ["n", "p"], ["sentence"])
    with pytest.raises(ValueError, match="columns \\['text'\\] are not in the dataset"):
        attach_teacher_logits(data, logits, ["a", "b", "c"], ["n", "p"], ["text"])


def test_collator_pads_text_and_stacks_teachers(tokenizer, sentiment_data):
    collator = DistillationDataCollator(tokenizer)
    rows = [
        {k: sentiment_data[i][k] for k in ("input_ids", "attention_mask", "label", "teacher_logits")} for i in range(4)
    ]
    batch = collator(rows)
    assert batch["teacher_logits"].dtype == torch.float32 and batch["teacher_logits"].shape == (4, 3, 2)
    assert batch["input_ids"].shape[0] == 4 and "labels" in batch
    with pytest.raises(ValueError, match="Only 3 of 4 rows"):
        collator(rows[:3] + [{k: v for k, v in rows[3].items() if k != "teacher_logits"}])


def test_a_live_teacher_of_another_label_order_or_vocabulary_is_refused(tmp_path):
    """Live teachers read the student's input ids and are read in its label order: both are checked, as stored
    logits are (a reversed id2label, or a teacher of another vocabulary, had trained silently)."""
    rows = datasets.Dataset.from_dict({"input_ids": [[1, 2, 3]] * 4, "label": [0, 1, 0, 1]})
    named = {"id2label": {0: "negative", 1: "positive"}, "label2id": {"negative": 0, "positive": 1}}
    reversed_names = {"id2label": {0: "positive", 1: "negative"}, "label2id": {"positive": 0, "negative": 1}}
    other_vocabulary = tiny_student(**named)
    other_vocabulary.resize_token_embeddings(50)
    for teacher, message in (
        (tiny_student(**reversed_names), r"labels \['positive', 'negative'\] but the student's id2label has"),
        (other_vocabulary, "vocabulary of 50 tokens but the student .* has"),
    ):
        with pytest.raises(ValueError, match=message):
            DistillationTrainer(
                model=tiny_student(**named), args=args(tmp_path), train_dataset=rows, teacher_models=[teacher]
            )


def test_gating_with_a_decoder_only_classifier_is_refused(tmp_path):
    """The gate reads the first token's state; a decoder-only student's has seen only that token."""
    from transformers import GPT2Config, GPT2ForSequenceClassification

    student = GPT2ForSequenceClassification(
        GPT2Config(vocab_size=50, n_embd=16, n_layer=1, n_head=2, n_positions=32, num_labels=2, pad_token_id=0)
    )
    rows = datasets.Dataset.from_dict(
        {"input_ids": [[1, 2, 3]] * 4, "label": [0, 1, 0, 1], "teacher_logits": [[[0.0, 1.0], [1.0, 0.0]]] * 4}
    )
    with pytest.raises(ValueError, match="fusion 'gating' reads the student's first-token .* GPT2ForSequence"):
        DistillationTrainer(model=student, args=args(tmp_path, fusion="gating"), train_dataset=rows)
