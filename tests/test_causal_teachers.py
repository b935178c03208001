"""Issue 31's prerequisites: MNLI/QQP pairs as causal-LM folders with a dev split carved from train
(`prepare-causal`), causal teachers fine-tuned and early-stopped on dev (`train-teacher --task causal_lm`), and
extraction scoring the teachers on dev. Tiny random Llamas over the packaged MiniLM's real vocabulary, real rows."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import datasets
import pandas as pd
import pytest
import torch
from test_causal_recipes import GLUE, tiny_teacher
from transformers import AutoModelForCausalLM, AutoTokenizer

from distill_trainer import read_topk_metadata
from distill_trainer.study.causal_tasks import PAIR_TASKS, dev_size
from distill_trainer.study.cli import main as cli
from distill_trainer.study.packaged_models import resolve_model
from distill_trainer.study.runs import TeacherRecord

COLUMNS = ["--prompt_column", "prompt", "--completion_column", "completion"]
LIMITS = ["--max_train_rows", "48", "--max_dev_rows", "16", "--max_validation_rows", "16"]
FIRST_TEXT = {"mnli": "premise", "qqp": "question1"}


def read_split(folder: Path, split: str) -> pd.DataFrame:
    return pd.read_json(folder / f"{split}.jsonl", lines=True, dtype=False)


def glue_split(task: str, split: str) -> pd.DataFrame:
    return pd.read_csv(GLUE / task / f"{split}.tsv", sep="\t", keep_default_na=False, quoting=0)


@pytest.mark.parametrize("task", ["mnli", "qqp"])
def test_dev_pairs_come_from_train_only_never_in_train_and_are_the_same_on_a_second_run(task, tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    cli(["prepare-causal", "--task", task, "--data", str(GLUE), "--output_dir", str(first)])
    (second).mkdir()  # an empty folder is fine
    cli(["prepare-causal", "--task", task, "--data", str(GLUE), "--output_dir", str(second)])
    for name in ("train.jsonl", "dev.jsonl", "validation.jsonl", "causal_task.json"):
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
    label = PAIR_TASKS[task].label  # MNLI: entailment (0), QQP: duplicate (1)
    glue_train = glue_split(task, "train").set_index("idx")
    kept = glue_train[glue_train["label"] == label]
    train, dev = read_split(first, "train"), read_split(first, "dev")
    assert len(dev) == dev_size(len(kept)) == min(1000, len(kept) // 10)
    assert set(dev["idx"]).isdisjoint(train["idx"]) and set(dev["idx"]) | set(train["idx"]) == set(kept.index)
    assert set(zip(dev["prompt"], dev["completion"], strict=True)).isdisjoint(
        zip(train["prompt"], train["completion"], strict=True)
    )
    for frame in (train, dev):  # each row is its GLUE training row's text, in file order
        assert list(frame["idx"]) == sorted(frame["idx"])
        rows = glue_train.loc[frame["idx"]]
        assert (rows["label"] == label).all()
        assert list(frame["prompt"]) == [PAIR_TASKS[task].template.format(t) for t in rows[FIRST_TEXT[task]]]
        second_text = "hypothesis" if task == "mnli" else "question2"
        assert list(frame["completion"]) == [f" {t}" for t in rows[second_text]]
    validation_name = "validation_matched" if task == "mnli" else "validation"
    glue_validation = glue_split(task, validation_name).set_index("idx")
    validation = read_split(first, "validation")
    assert list(validation["idx"]) == list(glue_validation.index[glue_validation["label"] == label])
    record = json.loads((first / "causal_task.json").read_text())
    assert record["source_splits"] == {"train": "train", "dev": "train", "validation": validation_name}
    assert record["rows"] == {"train": len(train), "dev": len(dev), "validation": len(validation)}


def test_row_limits_keep_the_first_pairs_after_the_dev_split_is_carved(tmp_path):
    full, small = tmp_path / "full", tmp_path / "small"
    cli(["prepare-causal", "--task", "mnli", "--data", str(GLUE), "--output_dir", str(full)])
    cli(["prepare-causal", "--task", "mnli", "--data", str(GLUE), "--output_dir", str(small), *LIMITS])
    for split, n in (("train", 48), ("dev", 16), ("validation", 16)):
        assert read_split(small, split).equals(read_split(full, split).iloc[:n]), split


@pytest.mark.parametrize(
    "change, message",
    [
        (["--task", "sst2"], "Unknown task 'sst2'"),
        (["--max_dev_rows", "0"], "at least 1"),
        (["--output_dir", "FULL"], "exists and is not an empty folder"),
    ],
)
def test_prepare_refuses_before_any_work_and_never_touches_a_folder_it_did_not_write(tmp_path, change, message):
    full = tmp_path / "full"
    full.mkdir()
    (full / "notes.txt").write_text("mine")
    argv = ["prepare-causal", "--task", "mnli", "--data", str(GLUE), "--output_dir", str(tmp_path / "out")]
    flag, value = change
    value = str(full) if value == "FULL" else value
    argv = argv[: argv.index(flag) + 1] + [value] + argv[argv.index(flag) + 2 :] if flag in argv else argv + change
    with pytest.raises(ValueError, match=message):
        cli(argv)
    assert not (tmp_path / "out").exists() and [p.name for p in full.iterdir()] == ["notes.txt"]
    assert (full / "notes.txt").read_text() == "mine"


def completion_nll(model, tokenizer, frame: pd.DataFrame, max_length: int) -> tuple[float, int]:
    """The per-token NLL of the completions (and end-of-sequence token, where the tokenizer has one), computed here
    row by row from the raw text: prompt tokens + completion tokens, cut at `max_length`."""
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    nll, tokens = 0.0, 0
    for prompt, completion in zip(frame["prompt"], frame["completion"], strict=True):
        prompt_ids = tokenizer(prompt)["input_ids"]
        ids = (prompt_ids + tokenizer(completion, add_special_tokens=False)["input_ids"] + eos)[:max_length]
        with torch.no_grad():
            logprobs = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0].float(), -1)
        scored = torch.arange(min(len(prompt_ids), len(ids)), len(ids))  # token t, predicted at position t - 1
        nll -= logprobs[scored - 1, torch.tensor(ids)[scored]].sum().item()
        tokens += len(scored)
    return nll / tokens, tokens


@pytest.fixture(scope="module")
def teachers(tmp_path_factory):
    """An MNLI folder (48 train, 16 dev, 16 validation pairs), two tiny random teachers, and the first one
    fine-tuned on it with early stopping on dev."""
    root = tmp_path_factory.mktemp("teachers")
    cli(["prepare-causal", "--task", "mnli", "--data", str(GLUE), "--output_dir", str(root / "data"), *LIMITS])
    tokenizer = AutoTokenizer.from_pretrained(resolve_model("all-MiniLM-L6-v2"))
    base = [tiny_teacher(root / f"base-{seed}", seed, tokenizer) for seed in (0, 1)]
    common = ["--task", "causal_lm", "--data", str(root / "data"), "--max_length", "96", *COLUMNS]
    argv = ["train-teacher", *common, "--model_name_or_path", base[0], "--output_dir", str(root / "tuned")]
    argv += ["--num_train_epochs", "2", "--learning_rate", "1e-2", "--per_device_train_batch_size", "8"]
    record = cli([*argv, "--report_to", "none", "--use_cpu", "true", "--seed", "0", "--save_strategy", "no"])
    return root, base, common, record


def test_a_fine_tuned_teacher_lowers_its_dev_nll_and_its_record_is_what_its_weights_give(teachers):
    root, base, _, record = teachers
    tuned = AutoModelForCausalLM.from_pretrained(root / "tuned").eval()  # a plain folder
    tokenizer = AutoTokenizer.from_pretrained(root / "tuned")
    assert TeacherRecord.load(str(root / "tuned")) == record
    dev, validation = read_split(root / "data", "dev"), read_split(root / "data", "validation")
    before, _ = completion_nll(AutoModelForCausalLM.from_pretrained(base[0]).eval(), tokenizer, dev, 96)
    for split, frame in (("dev", dev), ("validation", validation)):
        nll, tokens = completion_nll(tuned, tokenizer, frame, 96)
        metrics = record.metrics
        assert metrics[f"{split}_nll"] == pytest.approx(nll, rel=1e-4)
        assert metrics[f"{split}_perplexity"] == pytest.approx(math.exp(nll), rel=1e-4)
        assert metrics[f"{split}_token_likelihood"] == pytest.approx(math.exp(-nll), rel=1e-4)
        assert (metrics[f"{split}_tokens"], metrics[f"{split}_rows"]) == (tokens, 16)
    assert record.metrics["dev_nll"] < before - 0.5, (before, record.metrics["dev_nll"])
    assert record.validation_score == pytest.approx(record.metrics["validation_token_likelihood"])
    assert (record.task, record.metric, record.train_rows, record.learning_rate) == (
        "causal_lm",
        "token_likelihood",
        48,
        1e-2,
    )
    assert record.device.startswith("cpu") and record.train_runtime > 0
    assert record.epochs_trained is not None and 1 <= record.best_epoch <= record.epochs_trained <= 2
    assert not list((root / "tuned").glob("checkpoint-*"))


def test_extraction_with_a_dev_split_scores_the_teachers_on_dev(teachers, tmp_path):
    root, base, common, record = teachers
    paths = [str(root / "tuned"), base[1]]
    cli(["extract", *common, "--teachers", ",".join(paths), "--topk", "4", "--output_dir", str(tmp_path / "L")])
    logits = datasets.load_from_disk(str(tmp_path / "L"))
    assert set(logits) == {"train", "dev", "validation"} and len(logits["dev"]) == 16
    metadata = read_topk_metadata(logits["train"])
    assert metadata.weighting_scores == [t.dev_score for t in metadata.teachers]
    assert metadata.teachers[0].dev_score == pytest.approx(record.metrics["dev_token_likelihood"], rel=1e-5)
    assert metadata.teachers[0].validation_score == pytest.approx(record.validation_score, rel=1e-5)
    tokenizer = AutoTokenizer.from_pretrained(base[1])  # the random teacher's dev score, recomputed here
    nll, _ = completion_nll(
        AutoModelForCausalLM.from_pretrained(base[1]).eval(), tokenizer, read_split(root / "data", "dev"), 96
    )
    assert metadata.teachers[1].dev_score == pytest.approx(math.exp(-nll), rel=1e-5)
    argv = ["distill", *common, "--logit_dataset", str(tmp_path / "L"), "--student_model", base[1], "--fusion"]
    argv += ["weighted", "--max_steps", "1", "--report_to", "none", "--use_cpu", "true", "--output_dir"]
    student = cli([*argv, str(tmp_path / "student")])
    # `weighted` weighs by the dev scores
    assert student.fusion_weights == pytest.approx([t.dev_score for t in metadata.teachers])


def test_without_a_dev_split_no_early_stopping_and_scores_stay_on_validation(teachers, tmp_path, caplog):
    root, base, common, _ = teachers
    data = tmp_path / "data"
    data.mkdir()
    for split in ("train", "validation"):
        shutil.copy(root / "data" / f"{split}.jsonl", data)
    common = [*common[:2], "--data", str(data), *common[4:]]
    argv = ["train-teacher", *common, "--model_name_or_path", base[1], "--output_dir", str(tmp_path / "t")]
    argv += ["--report_to", "none", "--use_cpu", "true", "--max_steps", "2", "--save_strategy", "no"]
    with pytest.raises(ValueError, match="--early_stopping_patience needs a dev split"):
        cli([*argv, "--early_stopping_patience", "2"])
    assert not (tmp_path / "t").exists()
    record = cli(argv)
    assert "has no dev split: the teacher trains for --num_train_epochs without early stopping" in caplog.text
    assert record.epochs_trained is None and "dev_nll" not in record.metrics
    cli(["extract", *common, "--teachers", base[1], "--topk", "4", "--output_dir", str(tmp_path / "L")])
    logits = datasets.load_from_disk(str(tmp_path / "L"))
    metadata = read_topk_metadata(logits["validation"])
    assert set(logits) == {"train", "validation"} and all(t.dev_score is None for t in metadata.teachers)
    assert metadata.weighting_scores == metadata.validation_scores
    argv = ["distill", *common, "--logit_dataset", str(tmp_path / "L"), "--student_model", base[1], "--data"]
    argv += [str(root / "data"), "--report_to", "none", "--use_cpu", "true", "--output_dir", str(tmp_path / "s")]
    with pytest.raises(ValueError, match="has a dev split but the logit dataset has none"):
        cli(argv)  # --data now has a dev split: the teachers' scores would not come from it
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize(
    "change, message",
    [
        (["--completion_column", "answer"], "no column 'answer'"),
        (["--max_length", "500"], "longer than teacher .*context \\(128 positions\\)"),
        (["--text_column", "prompt"], "--text_column, or --prompt_column and --completion_column"),
        (["--early_stopping_patience", "0"], "at least 1 epoch"),
    ],
)
def test_train_teacher_refuses_bad_input_before_any_work(teachers, tmp_path, change, message):
    root, base, common, _ = teachers
    argv = ["train-teacher", *common, "--model_name_or_path", base[0], "--output_dir", str(tmp_path / "t")]
    flag, value = change
    argv = argv[: argv.index(flag) + 1] + [value] + argv[argv.index(flag) + 2 :] if flag in argv else argv + change
    with pytest.raises(ValueError, match=message):
        cli([*argv, "--report_to", "none", "--use_cpu", "true"])
    assert not (tmp_path / "t").exists()


@pytest.mark.slow
def test_real_smollm2_fine_tunes_into_a_task_teacher_with_a_lower_dev_nll(tmp_path):
    """SmolLM2-135M-Instruct (the PyPI GGUF, dequantized once) fine-tuned on 16 MNLI entailment pairs: its dev NLL
    drops below the base model's, and the folder loads back with plain from_pretrained."""
    from distill_trainer.study.causal_data import load_causal_lm

    data = tmp_path / "data"
    limits = ["--max_train_rows", "16", "--max_dev_rows", "8", "--max_validation_rows", "8"]
    cli(["prepare-causal", "--task", "mnli", "--data", str(GLUE), "--output_dir", str(data), *limits])
    argv = ["train-teacher", "--task", "causal_lm", "--data", str(data), "--max_length", "64", *COLUMNS]
    argv += ["--model_name_or_path", "SmolLM2-135M-Instruct", "--num_train_epochs", "1", "--learning_rate", "1e-4"]
    argv += ["--per_device_train_batch_size", "4", "--report_to", "none", "--use_cpu", "true", "--bf16", "false"]
    record = cli([*argv, "--output_dir", str(tmp_path / "teacher")])
    tokenizer, base = load_causal_lm("SmolLM2-135M-Instruct")
    before, _ = completion_nll(base, tokenizer, read_split(data, "dev"), 64)
    assert record.metrics["dev_nll"] < before and record.base_model == "HuggingFaceTB/SmolLM2-135M-Instruct"
    tuned = AutoModelForCausalLM.from_pretrained(tmp_path / "teacher").eval()
    after, _ = completion_nll(tuned, tokenizer, read_split(data, "dev"), 64)
    assert record.metrics["dev_nll"] == pytest.approx(after, rel=1e-4) and record.best_epoch == 1
