"""The logit dataset's metadata: which teachers made the logits, in what order, with which label names, on which
inputs, and what was fitted on which split. It travels as JSON in `dataset.info.description`, which survives `map`,
`select`, `shuffle`, `save_to_disk` and `load_from_disk`."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

import datasets

METADATA_KEY = "distill_trainer_logits"


@dataclass
class TeacherInfo:
    """One teacher, as recorded in a logit dataset (never a local path: these get published).

    Args:
        name: The teacher's Hub id or name (never a local path).
        revision: The model revision the logits came from, if known.
        validation_score: The teacher's score on the validation split, if known.
        metric: The name of that score (e.g. `accuracy`), if known.
        dev_score: The teacher's score on a dev split carved from the training rows, if one was.
    """

    name: str
    revision: str | None = None
    validation_score: float | None = None
    metric: str | None = None
    # On a dev split carved from the training rows: where every teacher has one, `weighted` weighs by it, so no
    # choice is made on the rows a study reports (its validation split).
    dev_score: float | None = None


@dataclass
class LogitDatasetMetadata:
    """What must travel with teacher logits so they are never used on the wrong data.

    `input_fingerprint` hashes the input columns row by row, in order: a logit dataset joined to other
    rows, shuffled rows or other text is detected by recomputing it (see `validate_logit_dataset`).

    Args:
        teachers: One `TeacherInfo` per teacher, in the column's teacher order.
        label_names: The label order of the logits' last dimension.
        input_columns: The columns `input_fingerprint` hashes (e.g. `["sentence"]`).
        num_rows: The number of rows the logits were extracted on.
        input_fingerprint: `logits.input_fingerprint` of those rows' input columns.
        column: The teacher column's name.
        task: The task's name (e.g. a GLUE task), for cards and tables; None if unknown.
        teacher_fingerprints: One per teacher column (`logits.teacher_fingerprints`); None: the order is not checked.
        format_version: 2: teacher fingerprints bind each row's logits to its inputs; 1: over the sorted values.
        fitted: Fits made at extraction (`fitting.validation_fits`), or None.
        extra: Anything else to keep with the logits (JSON-serialisable).
        fit_split: The labelled split `fitted` was fitted on: `validation`, or `dev` where one was carved.
    """

    teachers: list[TeacherInfo]
    label_names: list[str]
    input_columns: list[str]
    num_rows: int
    input_fingerprint: str
    column: str = "teacher_logits"
    task: str | None = None  # the GLUE task name when known (cards and tables name it)
    teacher_fingerprints: list[str] | None = None  # one per teacher column, see `teacher_fingerprints`
    format_version: int = 2  # 2: teacher fingerprints bind each row's logits to its inputs; 1: sorted values
    # Fits on the validation split made at extraction (`fitting.validation_fits`): teacher_temperatures,
    # fusion_weights (on raw logits), fusion_weights_calibrated (on calibrated logits), num_rows.
    fitted: dict | None = None
    extra: dict = field(default_factory=dict)
    fit_split: str = "validation"  # the labelled split `fitted` was fitted on: "dev" where one was carved

    @property
    def validation_scores(self) -> list[float | None]:
        """The teachers' validation scores in column order."""
        return [teacher.validation_score for teacher in self.teachers]

    @property
    def weighting_split(self) -> str:
        """The split whose teacher scores `weighted` fusion weighs by: "dev" where every teacher has a dev score,
        else "validation" (a card says which, so it cannot disagree with the weights the trainer uses)."""
        dev = [teacher.dev_score for teacher in self.teachers]
        return "dev" if dev and all(score is not None for score in dev) else "validation"

    @property
    def weighting_scores(self) -> list[float | None]:
        """The scores `weighted` fusion weighs the teachers by, in column order (see `weighting_split`)."""
        if self.weighting_split == "dev":
            return [teacher.dev_score for teacher in self.teachers]
        return self.validation_scores

    def to_json(self) -> str:
        return json.dumps({METADATA_KEY: asdict(self)}, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict) -> LogitDatasetMetadata:
        """The metadata from its JSON form (`asdict`'s dict, teachers as dicts).

        Args:
            data: The dict stored under `METADATA_KEY`; not changed.
        """
        data = dict(data)
        data["teachers"] = [TeacherInfo(**teacher) for teacher in data["teachers"]]
        return cls(**data)


def read_metadata(dataset: datasets.Dataset) -> LogitDatasetMetadata | None:
    """The logit metadata stored in `dataset`, or `None` for a dataset that carries none.

    Args:
        dataset: One split of a logit dataset (any split carries the same teachers and fits).

    Raises:
        ValueError: the metadata is there but corrupt; never read as absent, which would skip every check.
    """
    description = dataset.info.description or ""
    try:
        payload = json.loads(description)
    except (json.JSONDecodeError, TypeError):
        payload = None
    if not isinstance(payload, dict) or METADATA_KEY not in payload:
        if METADATA_KEY in description:  # ours, but truncated or corrupt: never treated as absent (no checks)
            raise ValueError(
                f"The logit metadata in this dataset's info.description is corrupt: {description[:80]!r}..."
            )
        return None
    try:
        return LogitDatasetMetadata.from_dict(payload[METADATA_KEY])
    except (KeyError, TypeError) as error:
        raise ValueError(f"The logit metadata does not match this distill-trainer's format: {error}.") from error


def write_metadata(dataset: datasets.Dataset, metadata: LogitDatasetMetadata) -> datasets.Dataset:
    """Store `metadata` in the dataset's info (in place, and returns the dataset for chaining).

    Args:
        dataset: The split to describe; its `info.description` is replaced.
        metadata: What travels with its teacher columns.
    """
    dataset.info.description = metadata.to_json()
    return dataset
