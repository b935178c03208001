"""The per-token top-k format: causal-LM teachers' k most probable next tokens, stored beside `input_ids`.

A whole next-token distribution costs `vocab` floats per token (49,152 for SmolLM2); the k most probable tokens
carry most of its mass in 2k numbers. `teacher_topk_ids` (int32) and `teacher_topk_logprobs` (float16 by default)
are `[n_teachers, seq_len, k]` per row, aligned with `input_ids` as a causal LM's logits are: position t holds the
distribution of token t + 1, as log-probabilities under the teacher's full softmax at T = 1, so the tail mass
`1 - sum(exp(logprobs))` is implied. -inf marks an empty slot. The metadata mirrors the dense format's
(`logits.py`) and adds the tokenizer (name, vocabulary fingerprint): top-k of another tokenizer is refused.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from .logits import LogitDatasetMetadata, TeacherInfo, input_fingerprint, row_keys, warn_repeated_teachers
from .vocabulary import TokenizerInfo, check_same_vocabulary, tokenizer_info

logger = logging.getLogger(__name__)

TOPK_IDS_COLUMN = "teacher_topk_ids"
TOPK_LOGPROBS_COLUMN = "teacher_topk_logprobs"
TOPK_METADATA_KEY = "distill_trainer_topk"
LOGPROB_DTYPES = {"float16": np.float16, "float32": np.float32}
MASS_ROUNDING = 0.01  # float16 storage moves a top-k's total by at most 2^-11 times its entropy (< 0.004 at k=1024)


@dataclass
class TopkDatasetMetadata:
    """What must travel with top-k teachers so that they are never used on the wrong tokens (see `logits.py`).

    Args:
        teachers: One `TeacherInfo` per teacher, in the columns' teacher order.
        k: How many tokens each position keeps.
        logprobs_dtype: The log-probability column's dtype, `float16` or `float32`.
        tokenizer: The teachers' tokenizer, whose vocabulary the ids refer to.
        vocab_size: Ids are in [0, vocab_size).
        num_rows: The number of rows extracted.
        input_fingerprint: `logits.input_fingerprint` over `input_ids`, row by row, in order.
        teacher_fingerprints: One per teacher (`TopkColumns.fingerprints` with `row_keys` of `input_ids`).
        ids_column: The top-k ids column's name.
        logprobs_column: The top-k log-probabilities column's name.
        task: The task's name, for cards and tables; None if unknown.
        format_version: The top-k format's version.
        extra: Anything else to keep with the columns (JSON-serialisable).
    """

    teachers: list[TeacherInfo]
    k: int
    logprobs_dtype: str
    tokenizer: TokenizerInfo
    vocab_size: int  # ids are in [0, vocab_size)
    num_rows: int
    input_fingerprint: str  # over `input_ids`, row by row, in order
    teacher_fingerprints: list[str]  # per teacher: sorted hashes of (row's input_ids, its ids and log-probs)
    ids_column: str = TOPK_IDS_COLUMN
    logprobs_column: str = TOPK_LOGPROBS_COLUMN
    task: str | None = None
    format_version: int = 1
    extra: dict = field(default_factory=dict)

    validation_scores = LogitDatasetMetadata.validation_scores
    weighting_split, weighting_scores = LogitDatasetMetadata.weighting_split, LogitDatasetMetadata.weighting_scores

    def to_json(self) -> str:
        return json.dumps({TOPK_METADATA_KEY: asdict(self)}, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict) -> TopkDatasetMetadata:
        """The metadata from its JSON form (`asdict`'s dict, teachers and tokenizer as dicts).

        Args:
            data: The dict stored under `TOPK_METADATA_KEY`; not changed.
        """
        data = dict(data)
        data["teachers"] = [TeacherInfo(**teacher) for teacher in data["teachers"]]
        data["tokenizer"] = TokenizerInfo(**data["tokenizer"])
        return cls(**data)


def read_topk_metadata(dataset: datasets.Dataset) -> TopkDatasetMetadata | None:
    """The top-k metadata in `dataset.info.description`, or None if it has none (corrupt metadata: ValueError).

    Args:
        dataset: One split of a top-k logit dataset.
    """
    description = dataset.info.description or ""
    if TOPK_METADATA_KEY not in description:
        return None
    try:
        return TopkDatasetMetadata.from_dict(json.loads(description)[TOPK_METADATA_KEY])
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise ValueError(f"The top-k metadata in this dataset's info.description is corrupt: {error}.") from error


def topk_from_logits(logits: torch.Tensor, k: int, dtype=torch.float16) -> tuple[torch.Tensor, torch.Tensor]:
    """A causal LM's logits `[..., seq_len, vocab]` -> its top-k `(ids int32, log-probabilities in dtype)`.

    What an extraction script calls per batch: the log-softmax runs in float32 over the whole vocabulary, so the
    stored log-probabilities are under the full softmax and the tail mass stays implied.

    Args:
        logits: raw logits at temperature 1, e.g. `model(input_ids).logits`.
        k: how many tokens to keep per position (1 <= k <= vocab).
        dtype: of the log-probabilities (a torch dtype or its name): float16 (the format's default) or float32.
    """
    vocab = logits.shape[-1]
    if not 1 <= k <= vocab:
        raise ValueError(f"k={k} must be between 1 and the vocabulary size {vocab}.")
    dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
    logprobs, ids = torch.log_softmax(logits.float(), dim=-1).topk(k, dim=-1)
    return ids.to(torch.int32), logprobs.to(dtype)


def _rows(values, name: str, dtype) -> list[np.ndarray]:
    """Per-row `[n_teachers, seq_len, k]` arrays from a 4-D array or a sequence of 3-D ones.

    Args:
        values: `[rows, n_teachers, seq_len, k]`, or one `[n_teachers, seq_len_i, k]` array (or nested list) per row.
        name: The argument's name, for the error message.
        dtype: The numpy dtype to cast each row to (no copy where it already has it).
    """
    rows = [np.asarray(row).astype(dtype, copy=False) for row in values]
    if any(row.ndim != 3 for row in rows):
        raise ValueError(f"{name} must hold one [n_teachers, seq_len, k] array per row.")
    return rows


def _nested(rows: list[np.ndarray], pa_type: pa.DataType) -> pa.Array:
    """list<list<list<pa_type>>> from per-row `[n, L_i, k]` arrays, built from offsets (no Python lists).

    Args:
        rows: One `[n_teachers, seq_len_i, k]` array per row, `n_teachers` and `k` the same in all.
        pa_type: The Arrow type of the values.
    """
    n, k = rows[0].shape[0], rows[0].shape[2]
    values = pa.array(np.concatenate([row.reshape(-1) for row in rows]), type=pa_type)
    if len(values) >= 2**31:
        raise ValueError("Too many values for one column chunk: attach shards and concatenate_datasets them.")
    inner = pa.ListArray.from_arrays(pa.array(np.arange(0, len(values) + 1, k), pa.int32()), values)
    positions = np.concatenate([[0], np.cumsum(np.repeat([row.shape[1] for row in rows], n))])
    middle = pa.ListArray.from_arrays(pa.array(positions, pa.int32()), inner)
    return pa.ListArray.from_arrays(pa.array(np.arange(0, len(rows) * n + 1, n), pa.int32()), middle)


def attach_teacher_topk(
    dataset: datasets.Dataset,
    topk_ids,
    topk_logprobs,
    teacher_names: Sequence[TeacherInfo | str],
    tokenizer,
    logprobs_dtype: str = "float16",
    vocab_size: int | None = None,
    task: str | None = None,
) -> datasets.Dataset:
    """Return `dataset` (with `input_ids`) plus the two top-k columns and the metadata that identifies them.

    Args:
        dataset: tokenized rows; the top-k of row i must be aligned with its `input_ids`.
        topk_ids: `[rows, n_teachers, seq_len, k]`, or one `[n_teachers, len(input_ids), k]` array per row.
        topk_logprobs: the same shape: log-probabilities under each teacher's full softmax at T = 1 (`<= 0`,
            a position's summing to at most 1; -inf marks an empty slot). `topk_from_logits` makes both from a
            batch of logits.
        teacher_names: one name (or `TeacherInfo`, with its validation score for `weighted` fusion) per teacher.
        tokenizer: the teachers' tokenizer; its vocabulary is fingerprinted, so a student of another is refused.
        logprobs_dtype: "float16" (half the storage) or "float32".
        vocab_size: ids must be below it (default `len(tokenizer)`; pass the model's `vocab_size` when its
            embedding is padded beyond the tokenizer).
        task: a name for cards and tables.
    """
    if logprobs_dtype not in LOGPROB_DTYPES:
        raise ValueError(f"logprobs_dtype must be one of {tuple(LOGPROB_DTYPES)}, got {logprobs_dtype!r}.")
    if "input_ids" not in dataset.column_names:
        raise ValueError(f"attach_teacher_topk needs a tokenized dataset with input_ids; got {dataset.column_names}.")
    ids = _rows(topk_ids, "topk_ids", np.int32)
    logprobs = _rows(topk_logprobs, "topk_logprobs", LOGPROB_DTYPES[logprobs_dtype])
    if len(ids) != len(dataset) or len(logprobs) != len(dataset):
        raise ValueError(f"topk arrays have {len(ids)} / {len(logprobs)} rows but the dataset has {len(dataset)}.")
    teachers = [t if isinstance(t, TeacherInfo) else TeacherInfo(name=t) for t in teacher_names]
    if not ids or any(
        a.shape != b.shape or a.shape[::2] != (len(teachers), ids[0].shape[2])
        for a, b in zip(ids, logprobs, strict=False)
    ):
        raise ValueError(
            f"topk_ids and topk_logprobs must hold one [n_teachers, seq_len, k] array each per row, with the "
            f"{len(teachers)} teachers named and one k: row shapes {sorted({a.shape for a in ids})[:3]}."
        )
    info = tokenizer_info(tokenizer)
    logprobs_type = pa.float16() if logprobs_dtype == "float16" else pa.float32()
    columns = {TOPK_IDS_COLUMN: _nested(ids, pa.int32()), TOPK_LOGPROBS_COLUMN: _nested(logprobs, logprobs_type)}
    for name, array in columns.items():
        if name in dataset.column_names:
            dataset = dataset.remove_columns(name)
        dtype = "int32" if name == TOPK_IDS_COLUMN else logprobs_dtype
        feature = datasets.List(datasets.List(datasets.List(datasets.Value(dtype))))
        dataset = dataset.add_column(name, array, feature=feature)
    vocab_size = vocab_size or info.vocab_size
    read = check_topk_columns(dataset, vocab_size)  # shapes against input_ids, id range, log-probability values
    metadata = TopkDatasetMetadata(
        teachers=teachers,
        k=read.k,
        logprobs_dtype=logprobs_dtype,
        tokenizer=info,
        vocab_size=vocab_size,
        num_rows=len(dataset),
        input_fingerprint=input_fingerprint(dataset, ["input_ids"]),
        teacher_fingerprints=read.fingerprints(row_keys(dataset, ["input_ids"])),
        task=task,
    )
    warn_repeated_teachers(metadata.teachers, metadata.teacher_fingerprints)
    dataset.info.description = metadata.to_json()
    return dataset


@dataclass
class TopkColumns:
    """Both top-k columns of a dataset, read flat: `[rows * n_teachers * seq_len_i * k]` values each.

    Args:
        ids: The ids column's values, flat, row after row (`[n_teachers, seq_len_i, k]` each).
        logprobs: The log-probabilities column's values, flat, in the same order.
        n_teachers: The number of teachers per row.
        k: The number of tokens per position.
        lengths: `[rows]` each row's seq_len (its `input_ids`' length).
    """

    ids: np.ndarray
    logprobs: np.ndarray
    n_teachers: int
    k: int
    lengths: np.ndarray  # per row: its seq_len

    def fingerprints(self, keys: Sequence[bytes]) -> list[str]:
        """One SHA-256 per teacher over the sorted hashes of (row key, that row's ids and log-probabilities).

        Args:
            keys: One `logits.row_keys` key per row, over `input_ids`, in the columns' row order.
        """
        starts = np.cumsum(self.lengths * self.n_teachers * self.k) - self.lengths * self.n_teachers * self.k
        hashes = [[] for _ in range(self.n_teachers)]
        for key, start, size in zip(keys, starts, self.lengths * self.k, strict=False):
            for t in range(self.n_teachers):
                part = slice(start + t * size, start + (t + 1) * size)
                row = self.ids[part].tobytes() + self.logprobs[part].tobytes()
                hashes[t].append(hashlib.blake2b(key + row, digest_size=16).digest())
        return [hashlib.sha256(b"".join(sorted(h))).hexdigest() for h in hashes]


def _read_nested(dataset: datasets.Dataset, column: str, lengths: np.ndarray):
    """Flat values and (n_teachers, k) of a `[n_teachers, seq_len, k]` column, its shapes checked row by row.

    Args:
        dataset: The dataset holding the column.
        column: The top-k column's name.
        lengths: `[rows]` each row's `input_ids` length, which its seq_len must equal.
    """
    depth, level = 0, (array := dataset.with_format("arrow", columns=[column])[:].column(column).combine_chunks())
    while pa.types.is_list(level.type) or pa.types.is_large_list(level.type):
        level, depth = level.flatten(), depth + 1
    if depth != 3 or array.null_count:
        raise ValueError(f"Column {column!r} must hold one [n_teachers, seq_len, k] list per row, without nulls.")
    teachers = pc.list_value_length(array).to_numpy(zero_copy_only=False)
    seq = pc.list_value_length(array.flatten()).to_numpy(zero_copy_only=False)
    ks = pc.list_value_length(array.flatten().flatten()).to_numpy(zero_copy_only=False)
    n, k = int(teachers[0]), int(ks[0]) if len(ks) else 0
    if (teachers != n).any() or n < 1:
        raise ValueError(f"Column {column!r} has rows with different numbers of teachers: {sorted(set(teachers))}.")
    if (ks != k).any() or k < 1:
        raise ValueError(f"Column {column!r} has positions with different k: {sorted(set(ks.tolist()))[:5]}.")
    bad = np.flatnonzero((seq.reshape(-1, n) != lengths[:, None]).any(axis=1))
    if len(bad):
        raise ValueError(
            f"Column {column!r} has top-k of another length than input_ids in {len(bad)} rows (first rows: "
            f"{bad[:5].tolist()}: {seq.reshape(-1, n)[bad[0]].tolist()} positions for {lengths[bad[0]]} tokens); "
            "position t must hold the distribution of token t + 1, one per input token."
        )
    return level.to_numpy(zero_copy_only=False), n, k


def topk_mass(logprobs: np.ndarray, k: int) -> np.ndarray:
    """Each position's total top-k probability `sum(exp(logprobs))`, from the flat values (in float32, by chunks: a
    dataset's values can be far more than fit twice in memory).

    Args:
        logprobs: The flat stored log-probabilities, k per position.
        k: Slots per position.
    """
    positions, step = logprobs.reshape(-1, k), max(1, 2**22 // k)
    parts = [np.exp(positions[i : i + step], dtype=np.float32).sum(1) for i in range(0, len(positions), step)]
    return np.concatenate(parts) if parts else np.zeros(0, np.float32)


def repeated_ids(ids: np.ndarray, k: int) -> np.ndarray:
    """Whether each position's k ids list a token twice (by chunks, as `topk_mass`): a top-k names k distinct tokens,
    and a repeated one would be counted twice by the loss but once by the fusion.

    Args:
        ids: The flat stored ids, k per position.
        k: Slots per position.
    """
    positions, step = ids.reshape(-1, k), max(1, 2**22 // k)
    parts = [
        (np.diff(np.sort(positions[i : i + step], 1), axis=1) == 0).any(1) for i in range(0, len(positions), step)
    ]
    return np.concatenate(parts) if parts else np.zeros(0, bool)


def check_topk_columns(
    dataset: datasets.Dataset,
    vocab_size: int,
    ids_column: str = TOPK_IDS_COLUMN,
    logprobs_column: str = TOPK_LOGPROBS_COLUMN,
) -> TopkColumns:
    """Read both top-k columns and refuse what cannot be distilled from, naming the first offending rows.

    Args:
        dataset: Rows with `input_ids` and both top-k columns.
        vocab_size: Ids must be in [0, vocab_size).
        ids_column: The top-k ids column's name.
        logprobs_column: The top-k log-probabilities column's name.
    """
    for column in ("input_ids", ids_column, logprobs_column):
        if column not in dataset.column_names:
            raise ValueError(f"The dataset has no {column!r} column (columns: {dataset.column_names}).")
    lengths = pc.list_value_length(dataset.with_format("arrow", columns=["input_ids"])[:].column("input_ids"))
    lengths = lengths.to_numpy(zero_copy_only=False).astype(np.int64)
    ids, n, k = _read_nested(dataset, ids_column, lengths)
    logprobs, n_lp, k_lp = _read_nested(dataset, logprobs_column, lengths)
    if (n, k) != (n_lp, k_lp):
        raise ValueError(f"{ids_column!r} holds {n} teachers x k={k} but {logprobs_column!r} {n_lp} x k={k_lp}.")
    if k > vocab_size:
        raise ValueError(f"k={k} is larger than the vocabulary ({vocab_size} tokens).")
    row_of = np.repeat(np.arange(len(lengths)), lengths * n * k)
    mass = topk_mass(logprobs, k)
    for what, bad, row_of_bad in (
        (f"ids outside [0, {vocab_size})", (ids < 0) | (ids >= vocab_size), row_of),
        ("log-probabilities above 0 or NaN", ~(logprobs <= 0), row_of),
        (
            f"positions whose k probabilities sum above 1 by more than rounding (up to {mass.max(initial=0):.4f}; "
            "they must be log-probabilities under the teacher's full softmax)",
            mass > 1 + MASS_ROUNDING,
            row_of[::k],
        ),
        ("positions that list an id twice", repeated_ids(ids, k), row_of[::k]),
    ):
        if bad.any():
            rows = np.unique(row_of_bad[bad])
            raise ValueError(f"The top-k columns have {what} in {len(rows)} rows (first rows: {rows[:5].tolist()}).")
    return TopkColumns(ids=ids, logprobs=logprobs, n_teachers=n, k=k, lengths=lengths)


def validate_topk_dataset(dataset: datasets.Dataset, tokenizer=None, vocab_size: int | None = None):
    """Check a top-k dataset before any step is spent on it; returns `(metadata or None, TopkColumns)`.

    Checks the columns' shapes against `input_ids`, ids in range, log-probabilities `<= 0` and not NaN, each
    position's probabilities summing to at most 1 (give or take `MASS_ROUNDING`), and, with metadata: teacher count,
    k, the tokenizer's vocabulary against `tokenizer`'s, and (when all rows are there) that the columns are the
    extracted ones in the metadata's order, each row's on the tokens it was computed on (`metadata.input_fingerprint`
    also checks the row order, against a reference, like `check_logits_match_inputs`).

    Args:
        dataset: with `input_ids` and the two top-k columns.
        tokenizer: the student's; refused when its vocabulary is not the teachers'.
        vocab_size: the student's; ids must be below it (and below the metadata's vocabulary size).
    """
    metadata = read_topk_metadata(dataset)
    sizes = [size for size in (vocab_size, metadata and metadata.vocab_size) if size]
    if not sizes:
        raise ValueError("validate_topk_dataset needs vocab_size for a dataset without top-k metadata.")
    ids_column = metadata.ids_column if metadata else TOPK_IDS_COLUMN
    logprobs_column = metadata.logprobs_column if metadata else TOPK_LOGPROBS_COLUMN
    if metadata is not None and tokenizer is not None:
        check_same_vocabulary(metadata.tokenizer, tokenizer_info(tokenizer), "the student's tokenizer")
    read = check_topk_columns(dataset, min(sizes), ids_column, logprobs_column)
    if metadata is None:
        return None, read
    if (len(metadata.teachers), metadata.k) != (read.n_teachers, read.k):
        raise ValueError(
            f"The top-k columns hold {read.n_teachers} teachers x k={read.k} but the metadata lists "
            f"{len(metadata.teachers)} x k={metadata.k}: the columns were changed after extraction."
        )
    if len(dataset) != metadata.num_rows:
        logger.warning(
            "%d of the %d rows the top-k teachers were extracted for: a subset's top-k columns cannot be checked "
            "against the metadata's fingerprints (reordered or edited teachers); validate the whole dataset before "
            "selecting from it (validate_topk_dataset).",
            len(dataset),
            metadata.num_rows,
        )
        return metadata, read
    found = read.fingerprints(row_keys(dataset, ["input_ids"]))  # order-free: shuffled rows keep it, moved top-k not
    if found != metadata.teacher_fingerprints:
        change = "reordered" if sorted(found) == sorted(metadata.teacher_fingerprints) else "edited"
        raise ValueError(
            f"The top-k teacher columns were {change} after extraction (teachers "
            f"{[t.name for t in metadata.teachers]}): re-extract them."
        )
    return metadata, read
