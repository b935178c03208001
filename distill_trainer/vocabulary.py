"""Vocabularies: token ids mean tokens only under the tokenizer they were taken from. The fingerprint that top-k
metadata stores (`tokenizer_info`), the check that two tokenizers share one vocabulary, and where a student's
tokenizer is found for that check (`student_tokenizer`)."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass

from transformers import AutoTokenizer

logger = logging.getLogger(__name__)


@dataclass
class TokenizerInfo:
    """The tokenizer top-k ids refer to: ids mean tokens only under the vocabulary they were taken from.

    Args:
        name: The tokenizer's Hub id or name (its class name where it has none).
        vocab_size: `len(tokenizer)`, added tokens included.
        fingerprint: SHA-256 of its sorted `(token, id)` pairs (`tokenizer_info`).
    """

    name: str
    vocab_size: int
    fingerprint: str


def tokenizer_info(tokenizer) -> TokenizerInfo:
    """Name, size and vocabulary fingerprint (SHA-256 of its sorted `(token, id)` pairs, added tokens included).

    Args:
        tokenizer: A transformers tokenizer (it needs `get_vocab`).
    """
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda item: (item[1], item[0]))
    digest = hashlib.sha256(json.dumps(vocab, ensure_ascii=False).encode()).hexdigest()
    name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
    return TokenizerInfo(name=name, vocab_size=len(tokenizer), fingerprint=digest)


def check_same_vocabulary(
    expected: TokenizerInfo, found: TokenizerInfo, what: str, owner: str = "The top-k teachers"
) -> None:
    """Refuse two tokenizers whose vocabularies differ, naming both (cross-tokenizer distillation is not supported).

    Args:
        expected: The tokenizer the teachers used (the top-k metadata's, or a live teacher's).
        found: The other tokenizer.
        what: Whose the other tokenizer is, for the error message (e.g. "the student's tokenizer").
        owner: Whose `expected` is, for the error message.
    """
    if expected.fingerprint != found.fingerprint:
        raise ValueError(
            f"{owner} used tokenizer {expected.name!r} ({expected.vocab_size} tokens) but {what} uses "
            f"{found.name!r} ({found.vocab_size} tokens), whose vocabulary differs: token ids would mean other "
            "tokens. Distil between models of one tokenizer (cross-tokenizer distillation is not supported)."
        )


def student_tokenizer(processing_class, data_collator, student):
    """The student's tokenizer, for vocabulary checks: `processing_class`, else the data collator's tokenizer, else
    the one saved with the student (its folder or the Hub cache, never downloaded); None where none is found. A
    causal student of another vocabulary reads stored top-k ids (or a live teacher's) as other tokens without any
    error, so every place a user may have put the tokenizer is looked at. The saved one is what the student was
    loaded with: where tokens were added since (embeddings resized), pass the tokenizer in use as
    `processing_class`, or a correct run is refused as another vocabulary.

    Args:
        processing_class: The trainer's `processing_class` (a tokenizer or a processor), or None.
        data_collator: The trainer's collator; `DistillationDataCollator` and transformers' padding collators
            keep their tokenizer as `.tokenizer`.
        student: The student model.
    """
    for candidate in (processing_class, getattr(data_collator, "tokenizer", None)):
        if hasattr(candidate, "get_vocab"):
            return candidate
    return saved_tokenizer(student)


def saved_tokenizer(model):
    """The tokenizer saved with a model, from its folder or the Hub cache (never downloaded), or None.

    Args:
        model: A transformers model; its `name_or_path` says where it was loaded from.
    """
    path = getattr(model, "name_or_path", "") or ""
    try:
        return AutoTokenizer.from_pretrained(path, local_files_only=True, trust_remote_code=False) if path else None
    except (OSError, ValueError):  # none saved there (or not cached): there is nothing to compare
        return None
    except Exception as error:  # one this transformers/tokenizers cannot read: no check, never a crash
        logger.warning("The tokenizer saved at %s could not be read (%s): its vocabulary is not checked.", path, error)
        return None
