"""Shared fixtures: a tiny random BERT, its tokenizer, and a small learnable sentiment-like problem."""

from __future__ import annotations

import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(__file__))
from hub_server import start_server  # noqa: E402

# Every Hub call of the session goes to a local test server (the clients read these at import time), so
# publishing is tested through the real clients and nothing reaches the network. The token is fake and
# known, so tests can check it never leaks.
HUB_SERVER, HUB_STATE = start_server()
TEST_TOKEN = "hf_TestTokenThatMustNeverBeWrittenAnywhere"
os.environ.update(
    HF_ENDPOINT=f"http://127.0.0.1:{HUB_SERVER.server_address[1]}", HF_HUB_DISABLE_XET="1", HF_TOKEN=TEST_TOKEN,
    HF_HOME=tempfile.mkdtemp(prefix="distill-trainer-hf-home-"), HF_HUB_DISABLE_TELEMETRY="1",
    HF_UPDATE_DOWNLOAD_COUNTS="0", TOKENIZERS_PARALLELISM="false", WANDB_DISABLED="true",
)
for offline in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ.pop(offline, None)

import datasets
import numpy as np
import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

datasets.disable_progress_bars()
datasets.config.USE_PARQUET_EXPORT = False


@pytest.fixture(scope="session")
def hub():
    """The session's test Hub: its state (repos, LFS objects, Authorization headers seen)."""
    return HUB_STATE

POSITIVE = ["good", "great", "fine", "lovely", "superb"]
NEGATIVE = ["bad", "awful", "poor", "dull", "boring"]
NEUTRAL = ["the", "film", "was", "a", "plot", "actor", "very", "quite"]
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + POSITIVE + NEGATIVE + NEUTRAL


def tiny_tokenizer() -> BertTokenizerFast:
    return BertTokenizerFast(vocab={word: i for i, word in enumerate(VOCAB)}, do_lower_case=True)


@pytest.fixture(scope="session")
def tokenizer():
    return tiny_tokenizer()


def tiny_student(num_labels: int = 2, seed: int = 0, dropout: float = 0.0, **config) -> BertForSequenceClassification:
    """A 2-layer, 32-wide BERT; dropout off by default so runs are comparable step for step."""
    torch.manual_seed(seed)
    bert_config = BertConfig(
        vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=64, num_labels=num_labels,
        hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout, **config,
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


@pytest.fixture(scope="session")
def sentiment_data(tokenizer):
    """128 tokenized rows with labels and a [3, 2] teacher_logits column (nested lists, no metadata)."""
    sentences, labels = make_sentences(128)
    ds = datasets.Dataset.from_dict({"sentence": sentences, "label": labels})
    ds = ds.map(lambda batch: tokenizer(batch["sentence"]), batched=True)
    return ds.add_column("teacher_logits", teacher_logits_for(labels).tolist())


@pytest.fixture(scope="session")
def sentiment_data_with_lengths(sentiment_data):
    """`sentiment_data` with the `length` column that length-grouped sampling reads."""
    return sentiment_data.map(lambda batch: {"length": [len(ids) for ids in batch["input_ids"]]}, batched=True)
