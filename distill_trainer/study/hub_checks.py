"""Checks made before any training, extraction or upload whose publishing would otherwise fail (or do harm) only
after the work: the repo id, the Hub's reachability and token, an existing repo's kind and visibility, and the
baseline a student's card would show.
"""

from __future__ import annotations

from huggingface_hub import HfApi
from huggingface_hub.errors import (
    HFValidationError,
    LocalTokenNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils import validate_repo_id

from .logit_data import LOGIT_METADATA_FILE
from .runs import StudentResult, TeacherRecord

# The file each kind of publication leaves in its repo: an existing repo with files but not this one was not
# published by distill-trainer as that kind, and publishing would replace (a dataset's data files: delete) them.
RECORD_FILES = {"teacher": TeacherRecord.FILE, "student": StudentResult.FILE, "logit dataset": LOGIT_METADATA_FILE}


def check_publishing(push_to_hub: bool, repo_id: str | None, flag: str) -> None:
    """Refuse, before any work is done, to publish without a valid `owner/name` repo id (`flag` names the
    option the user should set): training for an hour and then failing to push loses the run.

    Args:
        push_to_hub: Whether the user asked to publish (nothing is checked otherwise).
        repo_id: The repo id given (`owner/name`), or None.
        flag: The option that sets `repo_id`, as the error names it (e.g. "--hub_model_id").
    """
    if push_to_hub:
        if not repo_id:
            raise ValueError(f"--push_to_hub needs {flag} (owner/name).")
        try:
            validate_repo_id(repo_id)
        except HFValidationError as error:
            raise ValueError(f"{flag} {repo_id!r} is not a Hub repo id: {error}") from error


def check_hub_before_work(
    repo_id: str,
    *,
    kind: str = "student",
    exist_ok: bool = True,
    private: bool | None = None,
    revision: str | None = None,
    token=None,
) -> None:
    """Ask the Hub, before any training, extraction or upload, whether `repo_id` can be published to; each
    problem would otherwise fail (or do harm) only after the work: an unreachable Hub, no token, an existing repo
    with `--hub_exist_ok false`, an existing repo that distill-trainer did not publish as this `kind` (its files
    would be replaced, a dataset's data files deleted), and `--hub_private` for an existing public repo (it
    would stay public).

    Args:
        repo_id: The repo to publish to (`owner/name`).
        kind: "teacher", "student" or "logit dataset" (a dataset repo); see `RECORD_FILES`.
        exist_ok: Whether an existing repo may be updated (False: refused).
        private: Whether the user asked for a private repo (None/False: not asked).
        revision: The branch to publish to (None: main); a new branch starts from main, whose files are checked.
        token: The Hub token (None: `HF_TOKEN` or the logged-in one).
    """
    api, repo_type = HfApi(token=token), "dataset" if kind == "logit dataset" else "model"
    try:
        api.whoami()
        info = existing_repo(api, repo_id, repo_type, revision)
    except Exception as error:  # no token; connection refused, DNS, proxy, 5xx: the push would fail after the work
        status = getattr(getattr(error, "response", None), "status_code", None)
        if isinstance(error, LocalTokenNotFoundError) or status in (401, 403):
            raise ValueError(
                f"Publishing {repo_id} needs a Hub token with write access: set HF_TOKEN, run `hf auth login`, or "
                "give --hub_token. Nothing was done."
            ) from error
        raise ValueError(
            f"Cannot reach the Hub at {api.endpoint} to publish {repo_id} ({type(error).__name__}): fix the "
            "connection or HF_ENDPOINT, or drop --push_to_hub. Nothing was done."
        ) from error
    if info is None:
        return
    if not exist_ok:
        raise ValueError(f"{repo_id} already exists and --hub_exist_ok is false: choose another repo id.")
    files = sorted({sibling.rfilename for sibling in info.siblings or []} - {".gitattributes"})
    if files and RECORD_FILES[kind] not in files:
        raise ValueError(
            f"{repo_id} exists and holds files that distill-trainer did not publish as a {kind} (no "
            f"{RECORD_FILES[kind]}; it has {', '.join(files[:4])}{', ...' if len(files) > 4 else ''}): publishing "
            "would replace them. Choose another repo id, or empty that repo yourself. Nothing was done."
        )
    if private and not info.private:
        raise ValueError(
            f"{repo_id} exists and is public, and --hub_private does not change an existing repo's visibility: make "
            "it private on the Hub first, or choose another repo id. Nothing was done."
        )


def existing_repo(api: HfApi, repo_id: str, repo_type: str, revision: str | None):
    """The repo's info at `revision` (at main where that branch does not exist yet), or None where there is no repo.

    Args:
        api: The Hub client (with the token).
        repo_id: The repo (`owner/name`).
        repo_type: "model" or "dataset".
        revision: The branch (None: main).
    """
    try:
        return api.repo_info(repo_id, repo_type=repo_type, revision=revision)
    except RevisionNotFoundError:
        return api.repo_info(repo_id, repo_type=repo_type)
    except RepositoryNotFoundError:
        return None


def load_baseline(path: str) -> StudentResult:
    """The no-distillation student's record `--baseline_results` names, refused clearly where it is not one.

    Args:
        path: Its folder or `eval_results.json`.
    """
    try:
        return StudentResult.load(path)
    except FileNotFoundError as error:
        raise ValueError(f"--baseline_results {path}: {error}") from error


def check_baseline(baseline: StudentResult, student: StudentResult | None = None, task: str | None = None) -> None:
    """Refuse a baseline the card would misstate: the card lists it as the same student trained with CE only,
    scored on the same rows in the same metric.

    Args:
        baseline: The no-distillation student's record.
        student: The published student's record (None: before it trains, only `task` and the fusion are checked).
        task: The student's task, where `student` is not there yet.
    """
    task = student.task if student is not None else task
    differ = [] if baseline.fusion == "none" else [f"its fusion is {baseline.fusion!r}, not 'none'"]
    differ += [f"it is a {baseline.task} student, and this one is {task}"] if baseline.task != task else []
    for name in ("metric", "eval_rows", "student_model", "student_layers") if student is not None else ():
        if getattr(baseline, name) != getattr(student, name):
            differ.append(f"its {name} is {getattr(baseline, name)!r}, this student's {getattr(student, name)!r}")
    if differ:
        raise ValueError(
            f"--baseline_results is shown on the card as this student trained without distillation, and "
            f"{'; '.join(differ)}: give the `--fusion none` run of the same student and rows. Nothing was published."
        )
