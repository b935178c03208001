"""Publish teachers, logit datasets and students to the Hugging Face Hub, each with a card that says what it is.

Everything goes through the real clients (`huggingface_hub.HfApi`, `datasets.DatasetDict.push_to_hub`),
so `HF_ENDPOINT`, `HF_TOKEN` / `hf auth login`, private repos and branches behave as their users expect.
A token is only ever handed to the client: it is never printed, logged, or written into a card or file.

Cards are rendered from the Jinja templates in `model_cards/` with `ModelCard.from_template` /
`DatasetCard.from_template`; their YAML carries `base_model`, `datasets`, `license`, `tags` and a
`model-index` with the validation score, so the Hub shows the results.
"""

from __future__ import annotations

import glob
import json
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path

import datasets
from huggingface_hub import (
    CommitOperationAdd,
    DatasetCard,
    HfApi,
    ModelCard,
    hf_hub_download,
)

from ..logits import input_fingerprint, read_metadata
from ..topk import read_topk_metadata
from .cards import render_logit_dataset_card, render_student_card, render_teacher_card
from .hub_checks import check_baseline, check_hub_before_work, load_baseline
from .logit_data import LOGIT_METADATA_FILE, load_logit_dataset_from_hub  # noqa: F401 (read back there; importable here)
from .output_dirs import RUN_MARKER_FILE
from .runs import StudentResult, TeacherRecord

# Training leftovers that do not belong in a published model: checkpoints (optimizer state, gate),
# the pickled TrainingArguments (it may hold a hub_token), half-written folders, logs.
IGNORE_PATTERNS = ["checkpoint-*", "checkpoint-*/**", "training_args.bin", "*.partial-*", "runs/**", RUN_MARKER_FILE]
# What from_pretrained reads from a model repo's top level (weights, config, tokenizer): a republished folder that
# lacks one the repo has (single-file weights now sharded, another tokenizer) would have the old one loaded in its
# place, so such files are deleted with the upload; the repo's other files stay.
MODEL_FILE_PATTERNS = [
    *("model.safetensors", "model-*-of-*.safetensors", "model.safetensors.index.json", "pytorch_model.bin"),
    *("pytorch_model-*-of-*.bin", "pytorch_model.bin.index.json", "tf_model.h5", "flax_model.msgpack"),
    *("adapter_config.json", "adapter_model.safetensors", "adapter_model.bin", "config.json"),
    *("generation_config.json", "tokenizer.json", "tokenizer_config.json", "tokenizer.model", "added_tokens.json"),
    *("special_tokens_map.json", "vocab.txt", "vocab.json", "merges.txt", "spiece.model", "sentencepiece.bpe.model"),
    *("chat_template.jinja", "chat_template.json"),
]


@dataclass
class HubArguments:
    """Publishing options shared by the recipes (`--push_to_hub`, `--hub_model_id` and `--hub_revision`
    come from `TrainingArguments` where a recipe has them)."""

    hub_private: bool = field(
        default=False,
        metadata={
            "help": "Create the repo private (otherwise the namespace's default; "
            "an existing repo keeps its visibility)."
        },
    )
    hub_commit_message: str | None = field(default=None, metadata={"help": "Commit message of the upload."})
    hub_exist_ok: bool = field(
        default=True,
        metadata={
            "help": "Update the repo when it exists (default); with --hub_exist_ok false an existing repo is an error."
        },
    )
    hub_license: str | None = field(
        default=None,
        metadata={"help": "License in the card (default apache-2.0 for models, 'other' for logit datasets)."},
    )
    baseline_results: str | None = field(
        default=None,
        metadata={
            "help": "eval_results.json (or its folder) of the no-distillation student, "
            "shown beside this student on its card."
        },
    )

    def publish_kwargs(self, private_default: bool = False, revision: str | None = None) -> dict:
        """The keyword arguments of `publish_teacher`, `publish_student` and `publish_logit_dataset` these options give
        (`license` only where `--hub_license` is set).

        Args:
            private_default: `TrainingArguments.hub_private_repo`, where the recipe has it: private if either asks.
            revision: The branch to publish to (None: main).
        """
        return {
            "private": True if self.hub_private or private_default else None,
            "revision": revision,
            "commit_message": self.hub_commit_message,
            "exist_ok": self.hub_exist_ok,
            **({"license": self.hub_license} if self.hub_license else {}),
        }

    def check_before_work(
        self, repo_id: str, kind: str, private_default: bool = False, revision: str | None = None, token=None
    ) -> None:
        """`check_hub_before_work` with the options `publish_kwargs` will give the upload, so that what is checked
        before the work is what is published after it.

        Args:
            repo_id: The repo to publish to (`owner/name`).
            kind: "teacher", "student" or "logit dataset".
            private_default: `TrainingArguments.hub_private_repo`, where the recipe has it.
            revision: The branch to publish to (None: main).
            token: The Hub token (None: `HF_TOKEN` or the logged-in one).
        """
        options = self.publish_kwargs(private_default, revision)
        exist_ok, private = options["exist_ok"], options["private"]
        check_hub_before_work(repo_id, kind=kind, exist_ok=exist_ok, private=private, revision=revision, token=token)


def publish_teacher(folder: str, repo_id: str, *, license: str = "apache-2.0", **hub_kwargs) -> str:
    """Upload a teacher folder written by `train_teacher` (model or scikit-learn pipeline) with its card.

    Args:
        folder: The teacher's folder (with `teacher_info.json`).
        repo_id: The model repo to publish to (`owner/name`).
        license: The license on the card.
        **hub_kwargs: `publish_folder`'s `private`, `revision`, `commit_message`, `exist_ok` and `token`.
    """
    info = TeacherRecord.load(folder)
    card = render_teacher_card(info, repo_id, license)
    return publish_folder(folder, repo_id, card, kind="teacher", message=f"Upload teacher {info.name}", **hub_kwargs)


def publish_student(
    folder: str,
    repo_id: str,
    *,
    baseline: str | StudentResult | None = None,
    license: str = "apache-2.0",
    **hub_kwargs,
) -> str:
    """Upload a student folder written by `distill_student` with its card (no gate weights: never saved there).

    `baseline`: the no-distillation student's results (its folder or `eval_results.json`), shown on the card.

    Args:
        folder: The student's folder (with `eval_results.json`).
        repo_id: The model repo to publish to (`owner/name`).
        baseline: The no-distillation student's results: its folder or `eval_results.json` path, or its
            `StudentResult`; None: none shown.
        license: The license on the card.
        **hub_kwargs: `publish_folder`'s `private`, `revision`, `commit_message`, `exist_ok` and `token`.
    """
    results = StudentResult.load(folder)
    if isinstance(baseline, str):
        baseline = load_baseline(baseline)
    if baseline is not None:
        check_baseline(baseline, results)
    card = render_student_card(results, repo_id, baseline, license)
    return publish_folder(
        folder, repo_id, card, kind="student", message=f"Upload {results.fusion} student", **hub_kwargs
    )


def publish_logit_dataset(
    logit_dataset: datasets.DatasetDict | str,
    repo_id: str,
    *,
    private: bool | None = None,
    revision: str | None = None,
    commit_message: str | None = None,
    exist_ok: bool = True,
    license: str = "other",
    token: str | None = None,
) -> str:
    """Push a logit dataset (object or `save_to_disk` folder; class logits or a causal LM's top-k) as Parquet, then
    its metadata file and card.

    The Hub keeps a dataset's features but not `info.description`, where the metadata lives locally, so
    it travels as `distill_trainer_logits.json` (per split) and `logit_data.load_logit_dataset` puts it back.

    Args:
        logit_dataset: The logit dataset, or the folder `save_to_disk` wrote it to.
        repo_id: The dataset repo to publish to (`owner/name`).
        private: Create the repo private (None: the namespace's default; an existing repo keeps its visibility).
        revision: The branch to upload to, created from main if missing (None: main).
        commit_message: The commit's message (None: "Upload logit dataset").
        exist_ok: Update an existing repo (False: an existing repo is an error).
        license: The license on the card.
        token: The Hub token (None: `HF_TOKEN` or the logged-in one); only ever handed to the client.
    """
    if isinstance(logit_dataset, str):
        logit_dataset = datasets.load_from_disk(logit_dataset)
    metadata = {split: read_metadata(data) or read_topk_metadata(data) for split, data in logit_dataset.items()}
    missing = [split for split, value in metadata.items() if value is None]
    if missing:
        raise ValueError(f"Splits {missing} carry no distill_trainer metadata: publish what extract_logits wrote.")
    for split, value in metadata.items():
        rows = logit_dataset[split]
        columns = getattr(value, "input_columns", ["input_ids"])  # a top-k dataset fingerprints its token ids
        if len(rows) != value.num_rows or input_fingerprint(rows, columns) != value.input_fingerprint:
            raise ValueError(
                f"The {split} split holds {len(rows)} rows, and its metadata describes the {value.num_rows} rows the "
                "teachers were extracted on (a `select`/`filter` subset, or edited inputs, would be published under "
                "their records): publish the dataset extract_logits wrote."
            )
    check_hub_before_work(
        repo_id, kind="logit dataset", exist_ok=exist_ok, private=private, revision=revision, token=token
    )
    api = HfApi(token=token)
    api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    make_branch(api, repo_id, "dataset", revision)
    message = commit_message or "Upload logit dataset"
    logit_dataset.push_to_hub(repo_id, private=private, revision=revision, commit_message=message, token=token)
    pushed_card = DatasetCard.load(  # the README push_to_hub wrote: its YAML (features, splits, configs) is kept
        hf_hub_download(repo_id, "README.md", repo_type="dataset", revision=revision, token=token)
    )
    card = render_logit_dataset_card(metadata, repo_id, pushed_card.data.to_dict(), license)
    payload = json.dumps({split: json.loads(value.to_json()) for split, value in metadata.items()}, indent=2)
    commit = api.create_commit(
        repo_id,
        repo_type="dataset",
        revision=revision,
        commit_message=message,
        operations=[
            CommitOperationAdd("README.md", str(card).encode()),
            CommitOperationAdd(LOGIT_METADATA_FILE, payload.encode()),
        ],
    )
    return commit.commit_url


def publish_folder(
    folder: str,
    repo_id: str,
    card: ModelCard,
    *,
    kind: str,
    message: str,
    private: bool | None = None,
    revision: str | None = None,
    commit_message: str | None = None,
    exist_ok: bool = True,
    token: str | None = None,
) -> str:
    """Create (or reuse) a model repo, upload `folder`, then `card` as its README.md; the card commit's URL.

    The card is committed from memory, never written into `folder`: a README.md there may be the user's own (it is
    not uploaded; the repo's README is the card). Republishing makes the repo's top-level weights, config and
    tokenizer the folder's (`stale_model_files` are deleted with the upload); its other files stay.

    Args:
        folder: The model folder to upload (training leftovers in `IGNORE_PATTERNS` and its README.md are left
            out); nothing in it is changed.
        repo_id: The model repo (`owner/name`).
        card: The model card.
        kind: "teacher" or "student": an existing repo must hold that kind's record (`check_hub_before_work`).
        message: The default commit message.
        private: Create the repo private (None: the namespace's default; an existing repo keeps its visibility).
        revision: The branch to upload to, created from main if missing (None: main).
        commit_message: The commit's message (None: `message`).
        exist_ok: Update an existing repo (False: an existing repo is an error).
        token: The Hub token (None: `HF_TOKEN` or the logged-in one); only ever handed to the client.
    """
    check_hub_before_work(repo_id, kind=kind, exist_ok=exist_ok, private=private, revision=revision, token=token)
    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    make_branch(api, repo_id, "model", revision)
    api.upload_folder(
        repo_id=repo_id,
        folder_path=folder,
        revision=revision,
        commit_message=commit_message or message,
        ignore_patterns=[*IGNORE_PATTERNS, "README.md"],
        delete_patterns=[glob.escape(name) for name in stale_model_files(api, repo_id, revision, folder)] or None,
    )
    commit = api.upload_file(
        path_or_fileobj=str(card).encode(),
        path_in_repo="README.md",
        repo_id=repo_id,
        revision=revision,
        commit_message=commit_message or message,
    )
    return commit.commit_url


def stale_model_files(api: HfApi, repo_id: str, revision: str | None, folder: str) -> list[str]:
    """The repo's top-level model files (`MODEL_FILE_PATTERNS`) that `folder` does not have: left in place, the
    old weights or tokenizer would be what `from_pretrained` loads.

    Args:
        api: The Hub client (with the token).
        repo_id: The model repo (`owner/name`).
        revision: The branch being published to (None: main); it exists by now.
        folder: The model folder being uploaded.
    """
    local = {path.name for path in Path(folder).iterdir() if path.is_file()}
    remote = [name for name in api.list_repo_files(repo_id, revision=revision) if "/" not in name]
    return [
        name
        for name in remote
        if name not in local and any(fnmatchcase(name, pattern) for pattern in MODEL_FILE_PATTERNS)
    ]


def make_branch(api: HfApi, repo_id: str, repo_type: str, revision: str | None) -> None:
    """Uploading to a branch needs the branch: create it from main when it does not exist yet.

    Args:
        api: The Hub client (with the token).
        repo_id: The repo (`owner/name`).
        repo_type: "model" or "dataset".
        revision: The branch (None or "main": nothing to create).
    """
    if revision and revision != "main":
        api.create_branch(repo_id, branch=revision, repo_type=repo_type, exist_ok=True)
