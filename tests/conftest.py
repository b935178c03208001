"""Shared fixtures: a tiny random BERT, its tokenizer, and a small learnable sentiment-like problem."""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(__file__))
from hub_server import TEST_TOKEN, start_server  # noqa: E402

# Every Hub call of the session goes to a local test server (the clients read these at import time), so
# publishing is tested through the real clients and nothing reaches the network. The token is fake and
# known, so tests can check it never leaks.
HUB_SERVER, HUB_STATE = start_server()
os.environ.update(
    HF_ENDPOINT=f"http://127.0.0.1:{HUB_SERVER.server_address[1]}",
    HF_HUB_DISABLE_XET="1",
    HF_TOKEN=TEST_TOKEN,
    HF_HOME=tempfile.mkdtemp(prefix="distill-trainer-hf-home-"),  # removed at exit (below)
    HF_HUB_DISABLE_TELEMETRY="1",
    HF_UPDATE_DOWNLOAD_COUNTS="0",
    TOKENIZERS_PARALLELISM="false",
    WANDB_DISABLED="true",
)
atexit.register(shutil.rmtree, os.environ["HF_HOME"], ignore_errors=True)
for offline in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ.pop(offline, None)

import datasets  # noqa: E402
import pytest  # noqa: E402
from helpers import make_sentences, teacher_logits_for, tiny_tokenizer  # noqa: E402

datasets.disable_progress_bars()
datasets.config.USE_PARQUET_EXPORT = False


@pytest.fixture(scope="session")
def hub():
    """The session's test Hub: its state (repos, LFS objects, Authorization headers seen)."""
    return HUB_STATE


@pytest.fixture(scope="session")
def tokenizer():
    return tiny_tokenizer()


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
