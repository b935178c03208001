"""The per-token top-k format (issue 30): attach, metadata, validation, collation, and bad input refused before
any work, by name."""

import datasets
import numpy as np
import pytest
import torch
import transformers
from causal_helpers import (
    VOCAB,
    causal_config,
    causal_dataset,
    causal_tokenizer,
    oracle_logits,
    tiny_llama,
    with_topk,
)

from distill_trainer import (
    DistillationDataCollator,
    DistillationTrainer,
    attach_teacher_topk,
    read_topk_metadata,
    topk_from_logits,
    validate_topk_dataset,
)
from distill_trainer.collator import ArrowRows


@pytest.fixture(scope="module")
def topk_data():
    return with_topk(causal_dataset(16), k=4)


def test_topk_from_logits_keeps_the_full_softmax_log_probabilities():
    logits = torch.randn(2, 5, VOCAB)
    ids, logprobs = topk_from_logits(logits, 3)
    assert ids.dtype == torch.int32 and logprobs.dtype == torch.float16 and ids.shape == (2, 5, 3)
    full = torch.log_softmax(logits, dim=-1)
    torch.testing.assert_close(logprobs.float(), full.gather(-1, ids.long()), atol=2e-3, rtol=1e-3)
    assert (full.gather(-1, ids.long())[..., -1:] >= full.topk(3).values[..., -1:]).all()
    assert topk_from_logits(logits, 3, "float32")[1].dtype == torch.float32
    with pytest.raises(ValueError, match="k=65 must be between 1 and the vocabulary size 64"):
        topk_from_logits(logits, VOCAB + 1)


def test_attach_writes_columns_and_metadata_that_travel(tmp_path, topk_data):
    row = topk_data[3]
    ids, logprobs = np.asarray(row["teacher_topk_ids"]), np.asarray(row["teacher_topk_logprobs"])
    assert ids.shape == logprobs.shape == (2, len(row["input_ids"]), 4)
    assert topk_data.features["teacher_topk_ids"].feature.feature.feature.dtype == "int32"
    assert topk_data.features["teacher_topk_logprobs"].feature.feature.feature.dtype == "float16"
    # position t holds the distribution of token t + 1: the oracles' top-1 is the next token
    assert (ids[0, :-1, 0] == np.asarray(row["input_ids"])[1:]).all()
    topk_data.save_to_disk(str(tmp_path / "ds"))
    metadata = read_topk_metadata(datasets.load_from_disk(str(tmp_path / "ds")))
    assert metadata == read_topk_metadata(topk_data)
    assert [t.name for t in metadata.teachers] == ["oracle-0", "oracle-1"]
    assert (metadata.k, metadata.logprobs_dtype, metadata.vocab_size) == (4, "float16", VOCAB)
    assert metadata.tokenizer.name == "tiny-words" and len(metadata.tokenizer.fingerprint) == 64
    assert validate_topk_dataset(topk_data.shuffle(seed=0), causal_tokenizer())[1].n_teachers == 2
    as_float32 = with_topk(causal_dataset(4), k=2, logprobs_dtype="float32")
    assert as_float32.features["teacher_topk_logprobs"].feature.feature.feature.dtype == "float32"


def rows_of(dataset, column):
    return [np.asarray(row, dtype=np.float32 if "logprobs" in column else np.int32) for row in dataset[column]]


def edited(dataset, column, edit):
    """`dataset`'s top-k arrays with `edit(row index, array)` applied, attached again (fresh metadata)."""
    arrays = {c: rows_of(dataset, c) for c in ("teacher_topk_ids", "teacher_topk_logprobs")}
    for name in arrays if column == "both" else [column]:
        arrays[name] = [edit(index, row) for index, row in enumerate(arrays[name])]
    return arrays["teacher_topk_ids"], arrays["teacher_topk_logprobs"]


def set_at(value, index=2):
    def edit(i, row):
        row = row.copy()
        if i == index:
            row[0, 1, 0] = value
        return row

    return edit


@pytest.mark.parametrize(
    "column, edit, message",
    [
        ("teacher_topk_ids", set_at(VOCAB), r"ids outside \[0, 64\) in 1 rows \(first rows: \[2\]\)"),
        ("teacher_topk_ids", set_at(-1), r"ids outside \[0, 64\)"),
        ("teacher_topk_logprobs", set_at(0.5), r"log-probabilities above 0 or NaN in 1 rows \(first rows: \[2\]\)"),
        ("teacher_topk_logprobs", set_at(float("nan")), "log-probabilities above 0 or NaN"),
        (
            "teacher_topk_logprobs",
            lambda i, row: np.full_like(row, np.log(0.9)) if i == 3 else row,
            r"sum above 1 by more than rounding \(up to 3.6000; .* in 1 rows \(first rows: \[3\]\)",
        ),
        ("both", lambda i, row: row[:, :-1] if i == 5 else row, r"another length than input_ids in 1 rows .*\[5\]"),
    ],
)
def test_bad_topk_arrays_are_refused_naming_the_rows(topk_data, column, edit, message):
    ids, logprobs = edited(topk_data, column, edit)
    base = topk_data.remove_columns(["teacher_topk_ids", "teacher_topk_logprobs"])
    with pytest.raises(ValueError, match=message):
        attach_teacher_topk(base, ids, logprobs, ["a", "b"], causal_tokenizer())


def test_k_larger_than_the_vocabulary_and_mismatched_teachers_are_refused(topk_data):
    base = topk_data.remove_columns(["teacher_topk_ids", "teacher_topk_logprobs"])
    ids, logprobs = rows_of(topk_data, "teacher_topk_ids"), rows_of(topk_data, "teacher_topk_logprobs")
    with pytest.raises(ValueError, match="k=4 is larger than the vocabulary"):
        attach_teacher_topk(base, [i % 3 for i in ids], logprobs, ["a", "b"], causal_tokenizer(), vocab_size=3)
    with pytest.raises(ValueError, match=r"the 3 teachers named and one k: row shapes \[\(2, 6, 4\)"):
        attach_teacher_topk(base, ids, logprobs, ["a", "b", "c"], causal_tokenizer())


def with_metadata_of(original, ids, logprobs):
    """Other top-k arrays under `original`'s metadata: what editing the columns after extraction looks like."""
    base = original.remove_columns(["teacher_topk_ids", "teacher_topk_logprobs"])
    changed = attach_teacher_topk(base, ids, logprobs, ["oracle-0", "oracle-1"], causal_tokenizer())
    changed.info.description = original.info.description
    return changed


def test_edited_moved_or_reordered_topk_columns_are_refused(topk_data):
    ids, logprobs = rows_of(topk_data, "teacher_topk_ids"), rows_of(topk_data, "teacher_topk_logprobs")
    with_metadata_of(topk_data, ids, logprobs)  # unchanged: accepted
    assert validate_topk_dataset(with_metadata_of(topk_data, ids, logprobs), causal_tokenizer())[0] is not None
    swapped = [row[::-1] for row in ids], [row[::-1] for row in logprobs]
    with pytest.raises(ValueError, match="reordered after extraction"):
        validate_topk_dataset(with_metadata_of(topk_data, *swapped), causal_tokenizer())
    lengths = [len(row) for row in topk_data["input_ids"]]
    i, j = next((i, j) for i in range(16) for j in range(i + 1, 16) if lengths[i] == lengths[j])
    moved = list(logprobs)
    moved[i], moved[j] = logprobs[j], logprobs[i]
    with pytest.raises(ValueError, match="edited"):
        validate_topk_dataset(with_metadata_of(topk_data, ids, moved), causal_tokenizer())


def test_a_student_or_teacher_of_another_vocabulary_is_refused_naming_both(tmp_path, topk_data):
    other = causal_tokenizer(name="other-words", swap=True)
    with pytest.raises(ValueError, match="tokenizer 'tiny-words' .* but the student's tokenizer uses 'other-words'"):
        DistillationTrainer(
            model=tiny_llama(), args=causal_config(tmp_path), train_dataset=topk_data, processing_class=other
        )
    with pytest.raises(ValueError, match="vocabulary of 80 tokens but the student .* has 64"):
        DistillationTrainer(
            model=tiny_llama(),
            args=causal_config(tmp_path),
            train_dataset=causal_dataset(8),
            processing_class=causal_tokenizer(),
            teacher_models=[tiny_llama(vocab_size=80)],
        )


@pytest.mark.parametrize("teacher_words", ["tiny-words", "other-words"])
def test_a_live_teacher_saved_with_another_vocabulary_of_the_same_size_is_refused(tmp_path, teacher_words):
    tiny_llama(seed=1).save_pretrained(tmp_path / "teacher")
    causal_tokenizer(name=teacher_words, swap=teacher_words == "other-words").save_pretrained(tmp_path / "teacher")
    teacher = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "teacher")

    def build():
        args = causal_config(tmp_path)
        data = causal_dataset(8)
        DistillationTrainer(
            model=tiny_llama(),
            args=args,
            train_dataset=data,
            processing_class=causal_tokenizer(),
            teacher_models=[teacher],
        )

    if teacher_words == "tiny-words":
        build()  # the same vocabulary, saved beside the teacher: accepted
    else:  # same size, other ids: the teacher would read other tokens without any error
        with pytest.raises(
            ValueError, match=r"Live teacher .*teacher' used tokenizer .* but the student uses 'tiny-words'"
        ):
            build()


def test_rows_longer_than_a_context_and_data_without_scored_positions_are_refused(tmp_path, topk_data):
    def build(data, **model):
        DistillationTrainer(
            model=tiny_llama(**model),
            args=causal_config(tmp_path),
            train_dataset=data,
            processing_class=causal_tokenizer(),
        )

    with pytest.raises(ValueError, match=r"up to 12 tokens but .* reads at most 8 \(max_position_embeddings\)"):
        build(topk_data, context=8)
    unscored = topk_data.map(lambda row: {"labels": [-100] * len(row["labels"])})
    with pytest.raises(ValueError, match="no scored position"):
        build(unscored)
    only_first = topk_data.map(lambda row: {"labels": [row["input_ids"][0]] + [-100] * (len(row["labels"]) - 1)})
    with pytest.raises(ValueError, match="no scored position"):  # the first token is never predicted
        build(only_first)
    with pytest.raises(ValueError, match=r"no \('teacher_topk_ids', 'teacher_topk_logprobs'\) columns"):
        build(topk_data.remove_columns(["teacher_topk_ids", "teacher_topk_logprobs"]))
    with pytest.raises(ValueError, match="no 'labels' column"):
        build(topk_data.remove_columns("labels"))


@pytest.mark.parametrize("reader", ["datasets", "arrow"])
@pytest.mark.parametrize("side", ["right", "left"])
def test_collator_pads_topk_and_labels_like_input_ids(topk_data, side, reader):
    tokenizer = causal_tokenizer(padding_side=side)
    rows = [topk_data[i] for i in range(4)]
    fed = ArrowRows(topk_data).__getitems__(range(4)) if reader == "arrow" else rows
    batch = DistillationDataCollator(tokenizer)(fed)
    length = max(len(row["input_ids"]) for row in rows)
    assert batch["teacher_topk_ids"].shape == (4, 2, length, 4) == batch["teacher_topk_logprobs"].shape
    for i, row in enumerate(rows):
        n = len(row["input_ids"])
        real = slice(length - n, length) if side == "left" else slice(0, n)
        pad = slice(0, length - n) if side == "left" else slice(n, length)
        assert batch["input_ids"][i, real].tolist() == row["input_ids"]
        assert batch["labels"][i, real].tolist() == [-100] + row["labels"][1:]  # the first token is never predicted
        assert (batch["labels"][i, pad] == -100).all() and (batch["teacher_topk_ids"][i, :, pad] == 0).all()
        assert torch.isneginf(batch["teacher_topk_logprobs"][i, :, pad]).all()
        np.testing.assert_array_equal(batch["teacher_topk_logprobs"][i, :, real].numpy(), row["teacher_topk_logprobs"])


def test_left_padded_causal_rows_keep_their_positions(topk_data):
    """A model with absolute positions (GPT-2) read a left-padded row at positions shifted by its padding, so its
    logits depended on the batch; `position_ids` count from each row's first real token."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=VOCAB, n_positions=32, n_embd=16, n_layer=1, n_head=2)).eval()
    rows = [topk_data[i] for i in range(4)]
    batch = DistillationDataCollator(causal_tokenizer(padding_side="left"))(rows)
    assert "position_ids" not in DistillationDataCollator(causal_tokenizer())(rows)  # right padding needs none
    inputs = {key: batch[key] for key in ("input_ids", "attention_mask", "position_ids")}
    with torch.no_grad():
        logits = model(**inputs).logits
        for i, row in enumerate(rows):
            alone = model(input_ids=torch.tensor([row["input_ids"]])).logits[0]
            torch.testing.assert_close(logits[i, logits.shape[1] - len(row["input_ids"]) :], alone, atol=1e-5, rtol=0)


def test_oracle_teachers_are_what_they_claim():
    row = [5, 9, 13]
    assert oracle_logits(row, 0.0, 0).argmax(-1)[:2].tolist() == [9, 13]


def test_arrow_rows_are_the_datasets_rows_in_any_order_and_the_trainer_reads_them(tmp_path, topk_data):
    shuffled = topk_data.shuffle(seed=0).select(range(3, 15))
    view = ArrowRows(shuffled)
    assert len(view) == 12 and view.column_names == shuffled.column_names
    assert view["input_ids"][:] == shuffled["input_ids"][:]  # column reads (length-grouped samplers) pass through
    for got, want in zip(view.__getitems__([7, 0, 11]), shuffled.__getitems__([7, 0, 11]), strict=False):
        assert got.keys() == want.keys()
        for key, value in want.items():
            np.testing.assert_array_equal(np.asarray(got[key], dtype=np.float64), np.asarray(value, dtype=np.float64))
    trainer = DistillationTrainer(
        model=tiny_llama(),
        args=causal_config(tmp_path),
        train_dataset=topk_data,
        processing_class=causal_tokenizer(),
    )
    assert isinstance(trainer.get_train_dataloader().dataset, ArrowRows)


def test_a_subset_is_logged_as_unchecked_and_repeated_ids_or_teachers_are_caught(topk_data, caplog):
    """Found by the session 31 review: a subset of edited top-k passed without a word (the dense format logs it), a
    position listing one id twice was accepted (the loss counted it twice, the fusion once), and one teacher given
    as two columns went unnoticed (`average` then weighs it twice)."""
    ids, logprobs = rows_of(topk_data, "teacher_topk_ids"), rows_of(topk_data, "teacher_topk_logprobs")
    swapped = with_metadata_of(topk_data, [row[::-1] for row in ids], [row[::-1] for row in logprobs])
    with caplog.at_level("WARNING", logger="distill_trainer.topk"):
        validate_topk_dataset(swapped.select(range(9)), causal_tokenizer())
    assert "9 of the 16 rows" in caplog.text and "cannot be checked" in caplog.text

    def repeat_an_id(index, row):
        row = row.copy()
        if index == 3:
            row[0, 1, 1] = row[0, 1, 0]
        return row

    base = topk_data.remove_columns(["teacher_topk_ids", "teacher_topk_logprobs"])
    repeated = edited(topk_data, "teacher_topk_ids", repeat_an_id)
    with pytest.raises(ValueError, match=r"positions that list an id twice in 1 rows \(first rows: \[3\]\)"):
        attach_teacher_topk(base, *repeated, ["oracle-0", "oracle-1"], causal_tokenizer())
    twice = [np.stack([row[0], row[0]]) for row in ids], [np.stack([row[0], row[0]]) for row in logprobs]
    with caplog.at_level("WARNING", logger="distill_trainer.logits"):
        attach_teacher_topk(base, *twice, ["a", "b"], causal_tokenizer())
    assert "Teachers given twice (the same values): ['a', 'b']" in caplog.text
