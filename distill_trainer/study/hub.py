"""Publish teachers, logit datasets and students to the Hugging Face Hub, each with a card that says what it is.

Everything goes through the real clients (`huggingface_hub.HfApi`, `datasets.DatasetDict.push_to_hub`),
so `HF_ENDPOINT`, `HF_TOKEN` / `hf auth login`, private repos and branches behave as their users expect.
A token is only ever handed to the client: it is never printed, logged, or written into a card or file.

Cards are rendered from the Jinja templates in `model_cards/` with `ModelCard.from_template` /
`DatasetCard.from_template`; their YAML carries `base_model`, `datasets`, `license`, `tags` and a
`model-index` with the validation score, so the Hub shows the results.
"""

from __future__ import annotations

import importlib.resources
import json
import os
from dataclasses import dataclass, field

import datasets
from huggingface_hub import (
    CommitOperationAdd,
    DatasetCard,
    DatasetCardData,
    EvalResult,
    HfApi,
    ModelCard,
    ModelCardData,
    constants,
    hf_hub_download,
)

from ..logits import read_metadata
from .runs import StudentResult, TeacherRecord
from .tasks import DEFAULT_GLUE, TASKS, GlueTask, get_task
from .teachers import SKLEARN_TEACHER

LOGIT_METADATA_FILE = "distill_trainer_logits.json"
# Training leftovers that do not belong in a published model: checkpoints (optimizer state, gate),
# the pickled TrainingArguments (it may hold a hub_token), half-written folders, logs.
IGNORE_PATTERNS = ["checkpoint-*", "checkpoint-*/**", "training_args.bin", "*.partial-*", "runs/**"]
BASE_TAGS = ["distill-trainer", "distillation", "knowledge-distillation", "glue"]


@dataclass
class HubArguments:
    """Publishing options shared by the recipes (`--push_to_hub`, `--hub_model_id` and `--hub_revision`
    come from `TrainingArguments` where a recipe has them)."""

    hub_private: bool = field(default=False, metadata={
        "help": "Create the repo private (otherwise the namespace's default; an existing repo keeps its visibility)."})
    hub_commit_message: str | None = field(default=None, metadata={"help": "Commit message of the upload."})
    hub_exist_ok: bool = field(default=True, metadata={
        "help": "Update the repo when it exists (default); with --hub_exist_ok false an existing repo is an error."})
    hub_license: str | None = field(default=None, metadata={
        "help": "License in the card (default apache-2.0 for models, 'other' for logit datasets)."})
    baseline_results: str | None = field(default=None, metadata={
        "help": "eval_results.json (or its folder) of the no-distillation student, shown beside this student on its card."})

    def publish_kwargs(self, private_default: bool = False, revision: str | None = None) -> dict:
        return {"private": True if self.hub_private or private_default else None,
                "revision": revision, "commit_message": self.hub_commit_message, "exist_ok": self.hub_exist_ok,
                **({"license": self.hub_license} if self.hub_license else {})}


# ---- publishing -----------------------------------------------------------------------------------


def publish_teacher(folder: str, repo_id: str, *, license: str = "apache-2.0", **hub_kwargs) -> str:
    """Upload a teacher folder written by `train_teacher` (model or scikit-learn pipeline) with its card."""
    info = TeacherRecord.load(folder)
    card = render_teacher_card(info, repo_id, license)
    return publish_folder(folder, repo_id, card, message=f"Upload teacher {info.name}", **hub_kwargs)


def publish_student(folder: str, repo_id: str, *, baseline: str | StudentResult | None = None,
                    license: str = "apache-2.0", **hub_kwargs) -> str:
    """Upload a student folder written by `distill_student` with its card (no gate weights: never saved there).

    `baseline`: the no-distillation student's results (its folder or `eval_results.json`), shown on the card.
    """
    results = StudentResult.load(folder)
    if isinstance(baseline, str):
        baseline = StudentResult.load(baseline)
    card = render_student_card(results, repo_id, baseline, license)
    return publish_folder(folder, repo_id, card, message=f"Upload {results.fusion} student", **hub_kwargs)


def publish_logit_dataset(logit_dataset: datasets.DatasetDict | str, repo_id: str, *, private: bool | None = None,
                          revision: str | None = None, commit_message: str | None = None, exist_ok: bool = True,
                          license: str = "other", token: str | None = None) -> str:
    """Push a logit dataset (object or `save_to_disk` folder) as Parquet, then its metadata file and card.

    The Hub keeps a dataset's features but not `info.description`, where the metadata lives locally, so
    it travels as `distill_trainer_logits.json` (per split) and `load_logit_dataset_from_hub` puts it back.
    """
    if isinstance(logit_dataset, str):
        logit_dataset = datasets.load_from_disk(logit_dataset)
    metadata = {split: read_metadata(data) for split, data in logit_dataset.items()}
    missing = [split for split, value in metadata.items() if value is None]
    if missing:
        raise ValueError(f"Splits {missing} carry no distill_trainer metadata: publish what extract_logits wrote.")
    api = HfApi(token=token)
    api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=exist_ok)
    make_branch(api, repo_id, "dataset", revision)
    message = commit_message or "Upload logit dataset"
    logit_dataset.push_to_hub(repo_id, private=private, revision=revision, commit_message=message, token=token)
    pushed_card = DatasetCard.load(  # the README push_to_hub wrote: its YAML (features, splits, configs) is kept
        hf_hub_download(repo_id, "README.md", repo_type="dataset", revision=revision, token=token))
    card = render_logit_dataset_card(metadata, repo_id, pushed_card.data.to_dict(), license)
    payload = json.dumps({split: json.loads(value.to_json()) for split, value in metadata.items()}, indent=2)
    commit = api.create_commit(repo_id, repo_type="dataset", revision=revision, commit_message=message, operations=[
        CommitOperationAdd("README.md", str(card).encode()),
        CommitOperationAdd(LOGIT_METADATA_FILE, payload.encode()),
    ])
    return commit.commit_url


def load_logit_dataset_from_hub(repo_id: str, revision: str | None = None, token: str | None = None) -> datasets.DatasetDict:
    """`datasets.load_dataset` of a published logit dataset, with each split's metadata restored."""
    logit_dataset = datasets.load_dataset(repo_id, revision=revision, token=token)
    metadata_path = hf_hub_download(repo_id, LOGIT_METADATA_FILE, repo_type="dataset", revision=revision, token=token)
    with open(metadata_path) as handle:
        metadata = json.load(handle)
    for split, data in logit_dataset.items():
        if split not in metadata:
            raise ValueError(f"{repo_id}: {LOGIT_METADATA_FILE} has no metadata for split '{split}'.")
        data.info.description = json.dumps(metadata[split], sort_keys=True)
    return logit_dataset


def publish_folder(folder: str, repo_id: str, card: ModelCard, *, message: str, private: bool | None = None,
                   revision: str | None = None, commit_message: str | None = None, exist_ok: bool = True,
                   token: str | None = None) -> str:
    """Create (or reuse) a model repo and upload `folder` with `card` as README.md in one commit; the commit URL."""
    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=exist_ok)
    make_branch(api, repo_id, "model", revision)
    card.save(os.path.join(folder, "README.md"))  # the local folder gets the same card
    commit = api.upload_folder(repo_id=repo_id, folder_path=folder, revision=revision,
                               commit_message=commit_message or message, ignore_patterns=IGNORE_PATTERNS)
    return commit.commit_url


def make_branch(api: HfApi, repo_id: str, repo_type: str, revision: str | None) -> None:
    """Uploading to a branch needs the branch: create it from main when it does not exist yet."""
    if revision and revision != "main":
        api.create_branch(repo_id, branch=revision, repo_type=repo_type, exist_ok=True)


# ---- cards ----------------------------------------------------------------------------------------


def render_teacher_card(info: TeacherRecord, repo_id: str, license: str = "apache-2.0") -> ModelCard:
    task = get_task(info.task)
    is_sklearn = info.base_model == SKLEARN_TEACHER
    data = ModelCardData(
        model_name=repo_id.split("/")[-1], license=license, datasets=[DEFAULT_GLUE], language=["en"],
        tags=BASE_TAGS + ["teacher", "scikit-learn" if is_sklearn else "text-classification"],
        base_model=info.base_model if is_hub_id(info.base_model) else None,
        library_name="sklearn" if is_sklearn else "transformers", eval_results=[eval_result(task, info.validation_score)],
    )
    if is_sklearn:
        description = "a scikit-learn TF-IDF (word 1-2 grams) + logistic-regression pipeline, a deliberately different kind of teacher."
        usage = ("`sklearn_teacher.json` (vocabulary, settings) and `sklearn_teacher.safetensors` (IDF, classifier "
                 "weights) rebuild the pipeline without pickle: `distill_trainer.teachers.SklearnTeacher.load(folder)`. "
                 "Its log-probabilities are its logits.")
    else:
        description = f"`{info.base_model}` fine-tuned on {task.title}."
        usage = (f'```python\nfrom transformers import AutoModelForSequenceClassification, AutoTokenizer\n\n'
                 f'model = AutoModelForSequenceClassification.from_pretrained("{repo_id}")\n'
                 f'tokenizer = AutoTokenizer.from_pretrained("{repo_id}")\n```')
    return ModelCard.from_template(
        data, template_path=template("teacher.md"), model_name=repo_id, description=description, usage=usage, task=task.name,
        task_title=task.title, base_model_text=hub_link(info.base_model), train_rows=info.train_rows,
        metric=task.metric, score=format_score(info.validation_score), label_names=", ".join(task.label_names))


def render_student_card(results: StudentResult, repo_id: str, baseline: StudentResult | None = None,
                        license: str = "apache-2.0") -> ModelCard:
    task = get_task(results.task)
    teachers = results.teachers or [] if results.fusion != "none" else []
    logit_dataset = results.logit_dataset
    hub_dataset = logit_dataset if logit_dataset and is_hub_id(logit_dataset) else None
    data = ModelCardData(
        model_name=repo_id.split("/")[-1], license=license, language=["en"], library_name="transformers",
        pipeline_tag="text-classification",
        base_model=results.student_model if is_hub_id(results.student_model or "") else None,
        datasets=[DEFAULT_GLUE] + ([hub_dataset] if hub_dataset else []),
        tags=BASE_TAGS + ["student", f"fusion-{results.fusion.replace('_', '-')}"],
        eval_results=[eval_result(task, results.score)],
    )
    rows = [{"name": f"teacher {i}: {t['name']}", "score": format_score(t.get("validation_score"))} for i, t in enumerate(teachers)]
    if baseline is not None:
        rows.append({"name": "no-distillation student (same student, CE only)", "score": format_score(baseline.score)})
    rows.append({"name": f"**this student** ({results.fusion})", "score": f"**{format_score(results.score)}**"})
    return ModelCard.from_template(
        data, template_path=template("student.md"), model_name=repo_id, repo_id=repo_id, task=task.name, task_title=task.title,
        metric=task.metric, score_rows=rows, method_text=method_text(results, len(teachers)),
        score_note=(f"Seed {results.seed}, one run: differences of about one standard error are not meaningful."),
        student_text=student_text(results), num_parameters=f"{results.num_parameters or 0:,}",
        fusion=results.fusion, teacher_index=results.teacher_index if results.fusion == "single" else None,
        temperature=results.temperature, alpha=results.alpha, seed=results.seed,
        logit_dataset_text=hub_link(hub_dataset, "datasets/") if hub_dataset else (logit_dataset or "none"),
        train_rows=results.train_rows,
        teachers=[{"link": hub_link(t["name"]), "score": format_score(t.get("validation_score"))} for t in teachers],
    )


def render_logit_dataset_card(metadata: dict, repo_id: str, pushed_yaml: dict, license: str = "other") -> DatasetCard:
    first = next(iter(metadata.values()))
    task = get_task(first.task) if first.task else task_of(first.label_names)
    data = DatasetCardData(**{**pushed_yaml, "license": license, "language": ["en"], "pretty_name": f"{task.title} teacher logits",
                              "task_categories": ["text-classification"], "source_datasets": [DEFAULT_GLUE],
                              "tags": BASE_TAGS + ["logit-dataset", "teacher-logits"]})
    return DatasetCard.from_template(
        data, template_path=template("logit_dataset.md"), pretty_name=f"{task.title} teacher logits", repo_id=repo_id,
        task=task.name, task_title=task.title, metric=task.metric, num_teachers=len(first.teachers),
        num_labels=len(first.label_names), label_names=", ".join(f"{i}: {n}" for i, n in enumerate(first.label_names)),
        teachers=[{"link": hub_link(t.name), "score": format_score(t.validation_score)} for t in first.teachers],
        splits=", ".join(f"{split} ({value.num_rows:,} rows)" for split, value in metadata.items()),
        input_columns=", ".join(first.input_columns), metadata_file=LOGIT_METADATA_FILE)


# ---- small helpers --------------------------------------------------------------------------------


def template(name: str) -> str:
    return str(importlib.resources.files("distill_trainer.model_cards") / name)


def eval_result(task: GlueTask, score: float) -> EvalResult:
    return EvalResult(task_type="text-classification", dataset_type=DEFAULT_GLUE, dataset_name=f"GLUE {task.title}",
                      dataset_config=task.name, dataset_split=task.validation_split, metric_type=task.metric,
                      metric_value=round(float(score), 4))


def is_hub_id(name: str) -> bool:
    """`owner/name` that is not a local path: only those get links (cards never show local paths)."""
    return name.count("/") == 1 and not os.path.exists(name) and not name.startswith((".", "/"))


def hub_link(name: str | None, prefix: str = "") -> str:
    if not name:
        return "unknown"
    return f"[{name}]({constants.ENDPOINT}/{prefix}{name})" if is_hub_id(name) else f"`{name}`"


def format_score(score: float | None) -> str:
    return "unknown" if score is None else f"{float(score):.4f}"


def task_of(label_names: list[str]) -> GlueTask:
    """The GLUE task a logit dataset belongs to, from its label names (metadata does not name the task)."""
    matches = [task for task in TASKS.values() if list(task.label_names) == list(label_names)]
    return matches[0] if len(matches) == 1 else GlueTask("glue", (), tuple(label_names), "validation", "score", "GLUE")


def method_text(results: StudentResult, num_teachers: int) -> str:
    if results.fusion == "none":
        return "the no-distillation baseline (cross-entropy on the labels only)"
    if results.fusion == "single":
        return f"distilled from one teacher (teacher {results.teacher_index})"
    return f"distilled from {num_teachers} teachers, fused with `{results.fusion}`"


def student_text(results: StudentResult) -> str:
    base = hub_link(results.student_model)
    return f"{base}, encoder layers {results.student_layers} kept" if results.student_layers else base
