"""Reading a logit dataset, wherever it is: a `save_to_disk` folder (what `extract` writes) or a Hub dataset id
(what `publish_logit_dataset` pushed), with each split's distill-trainer metadata in place. Training, the study's
runner and questions read through here; publishing (`hub.py`) only writes what this reads back."""

from __future__ import annotations

import json
import os

import datasets
from huggingface_hub import HfApi, hf_hub_download
from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError

LOGIT_METADATA_FILE = "distill_trainer_logits.json"  # beside a published logit dataset: its metadata per split


def load_logit_dataset(path_or_id: str) -> datasets.DatasetDict:
    """A logit dataset from `save_to_disk` (folder) or published by `publish_logit_dataset` (Hub dataset id).

    Args:
        path_or_id: A folder written by `extract` (or `DatasetDict.save_to_disk`), else a Hub dataset id, with
            `@<branch, tag or commit>` for another revision than main (as `--hub_revision` published it).
    """
    if os.path.isdir(path_or_id):
        return datasets.load_from_disk(path_or_id)
    repo_id, _, revision = path_or_id.partition("@")
    return load_logit_dataset_from_hub(repo_id, revision=revision or None)


def load_logit_dataset_from_hub(
    repo_id: str, revision: str | None = None, token: str | None = None
) -> datasets.DatasetDict:
    """`datasets.load_dataset` of a published logit dataset, with each split's metadata restored: the Hub keeps
    a dataset's features but not `info.description`, where the metadata lives locally, so it travels beside the
    Parquet files as `LOGIT_METADATA_FILE`.

    Args:
        repo_id: The dataset's Hub id.
        revision: A branch, tag or commit (default: main).
        token: Passed to the clients only.
    """
    # Both reads at one commit: a push between them would otherwise pair one commit's rows with another's metadata.
    try:
        revision = HfApi(token=token).dataset_info(repo_id, revision=revision).sha
    except (RepositoryNotFoundError, RevisionNotFoundError) as error:
        raise datasets.exceptions.DatasetNotFoundError(
            f"{repo_id}{'@' + revision if revision else ''} is neither a folder here nor a Hub dataset (revision) "
            "you can read: a private one needs a token (HF_TOKEN or `hf auth login`)."
        ) from error
    logit_dataset = datasets.load_dataset(repo_id, revision=revision, token=token)
    try:
        metadata_path = hf_hub_download(
            repo_id, LOGIT_METADATA_FILE, repo_type="dataset", revision=revision, token=token
        )
    except EntryNotFoundError as error:
        raise ValueError(
            f"{repo_id} is a dataset but not a distill-trainer logit dataset: it has no {LOGIT_METADATA_FILE} "
            "(the teachers' metadata that `publish_logit_dataset` pushes beside the rows)."
        ) from error
    with open(metadata_path) as handle:
        metadata = json.load(handle)
    for split, data in logit_dataset.items():
        if split not in metadata:
            raise ValueError(f"{repo_id}: {LOGIT_METADATA_FILE} has no metadata for split '{split}'.")
        data.info.description = json.dumps(metadata[split], sort_keys=True)
    return logit_dataset
