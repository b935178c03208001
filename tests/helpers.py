"""Helpers the tests share: a tiny random BERT and its tokenizer, a small learnable sentiment problem with
teacher logits, training arguments for it, and parameter comparisons. Imported by the tests and by the
scripts they launch (which must not import conftest: it starts the test Hub server)."""

from __future__ import annotations

import socket
import sys

import numpy as np
import torch
from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

from distill_trainer import DistillationConfig

POSITIVE = ["good", "great", "fine", "lovely", "superb"]
NEGATIVE = ["bad", "awful", "poor", "dull", "boring"]
NEUTRAL = ["the", "film", "was", "a", "plot", "actor", "very", "quite"]
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + POSITIVE + NEGATIVE + NEUTRAL


def tiny_tokenizer() -> BertTokenizerFast:
    return BertTokenizerFast(vocab={word: i for i, word in enumerate(VOCAB)}, do_lower_case=True)


def tiny_student(num_labels: int = 2, seed: int = 0, dropout: float = 0.0, **config) -> BertForSequenceClassification:
    """A 2-layer, 32-wide BERT; dropout off by default so runs are comparable step for step."""
    torch.manual_seed(seed)
    bert_config = BertConfig(
        vocab_size=len(VOCAB),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        num_labels=num_labels,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
        **config,
    )
    return BertForSequenceClassification(bert_config)


def make_sentences(n: int, seed: int = 0) -> tuple[list[str], list[int]]:
    rng = np.random.default_rng(seed)
    sentences, labels = [], []
    for _ in range(n):
        label = int(rng.integers(2))
        keyword = rng.choice(POSITIVE if label else NEGATIVE)
        words = list(rng.choice(NEUTRAL, size=int(rng.integers(2, 6)))) + [keyword]
        rng.shuffle(words)
        sentences.append(" ".join(words))
        labels.append(label)
    return sentences, labels


def teacher_logits_for(labels: list[int], n_teachers: int = 3, seed: int = 0) -> np.ndarray:
    """Teachers of different confidence that mostly agree with the label (the last one is noisy)."""
    rng = np.random.default_rng(seed)
    signs = np.where(np.asarray(labels) == 1, 1.0, -1.0)[:, None]
    logits = []
    for t in range(n_teachers):
        margin = (t + 1) * signs + rng.normal(0, 0.5 + t, size=signs.shape)
        logits.append(np.concatenate([-margin / 2, margin / 2], axis=1))
    return np.stack(logits, axis=1).astype(np.float32)


def tiny_config(tmp_path, **overrides) -> DistillationConfig:
    """Training arguments for the tiny student: CPU, no saving or logging, seed 0; `overrides` on top."""
    options = dict(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=16,
        learning_rate=5e-3,
        num_train_epochs=1,
        use_cpu=True,
        report_to="none",
        save_strategy="no",
        logging_strategy="no",
        disable_tqdm=True,
        seed=0,
        temperature=2.0,
        alpha=0.7,
    )
    options.update(overrides)
    return DistillationConfig(**options)


def params(model):
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def assert_same_params(a, b, **tol):
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], msg=name, **tol)


def launch() -> list[str]:
    """`accelerate launch` of two CPU processes (`--cpu --num_processes 2` silently starts one, accelerate
    1.15), on a free port: a fixed one can still be held by the previous launch, and the start then fails."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--main_process_port",
        str(port),
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
    ]
