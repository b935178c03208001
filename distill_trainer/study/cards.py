"""Model and dataset cards for what the study publishes: teachers, logit datasets and students, rendered from
the templates in `model_cards/` with their Hub metadata (base model, datasets, tags, model-index)."""

from __future__ import annotations

import importlib.resources
import os

from huggingface_hub import DatasetCard, DatasetCardData, EvalResult, ModelCard, ModelCardData, constants

from .runs import StudentResult, TeacherRecord
from .tasks import DEFAULT_GLUE, TASKS, GlueTask, get_task
from .teachers import SKLEARN_TEACHER

LOGIT_METADATA_FILE = "distill_trainer_logits.json"  # beside a published logit dataset: its metadata per split
BASE_TAGS = ["distill-trainer", "distillation", "knowledge-distillation", "glue"]


# ---- cards ----------------------------------------------------------------------------------------


def render_teacher_card(info: TeacherRecord, repo_id: str, license: str = "apache-2.0") -> ModelCard:
    task = get_task(info.task)
    is_sklearn = info.base_model == SKLEARN_TEACHER
    data = ModelCardData(
        model_name=repo_id.split("/")[-1],
        license=license,
        datasets=[DEFAULT_GLUE],
        language=["en"],
        tags=BASE_TAGS + ["teacher", "scikit-learn" if is_sklearn else "text-classification"],
        base_model=info.base_model if is_hub_id(info.base_model) else None,
        library_name="sklearn" if is_sklearn else "transformers",
        eval_results=[eval_result(task, info.validation_score)],
    )
    if is_sklearn:
        description = (
            "a scikit-learn TF-IDF (word 1-2 grams) + logistic-regression pipeline, "
            "a deliberately different kind of teacher."
        )
        usage = (
            "`sklearn_teacher.json` (vocabulary, settings) and `sklearn_teacher.safetensors` (IDF, classifier "
            "weights) rebuild the pipeline without pickle: "
            "`distill_trainer.study.teachers.SklearnTeacher.load(folder)`. "
            "Its log-probabilities are its logits."
        )
    else:
        description = f"`{info.base_model}` fine-tuned on {task.title}."
        usage = (
            f"```python\nfrom transformers import AutoModelForSequenceClassification, AutoTokenizer\n\n"
            f'model = AutoModelForSequenceClassification.from_pretrained("{repo_id}")\n'
            f'tokenizer = AutoTokenizer.from_pretrained("{repo_id}")\n```'
        )
    return ModelCard.from_template(
        data,
        template_path=template("teacher.md"),
        model_name=repo_id,
        description=description,
        usage=usage,
        task=task.name,
        task_title=task.title,
        base_model_text=hub_link(info.base_model),
        train_rows=info.train_rows,
        metric=task.metric,
        score=format_score(info.validation_score),
        label_names=", ".join(task.label_names),
    )


def render_student_card(
    results: StudentResult, repo_id: str, baseline: StudentResult | None = None, license: str = "apache-2.0"
) -> ModelCard:
    task = get_task(results.task)
    teachers = results.teachers or [] if results.fusion != "none" else []
    logit_dataset = results.logit_dataset
    hub_dataset = logit_dataset if logit_dataset and is_hub_id(logit_dataset) else None
    data = ModelCardData(
        model_name=repo_id.split("/")[-1],
        license=license,
        language=["en"],
        library_name="transformers",
        pipeline_tag="text-classification",
        base_model=results.student_model if is_hub_id(results.student_model or "") else None,
        datasets=[DEFAULT_GLUE] + ([hub_dataset] if hub_dataset else []),
        tags=BASE_TAGS + ["student", f"fusion-{results.fusion.replace('_', '-')}"],
        eval_results=[eval_result(task, results.score)],
    )
    rows = [
        {"name": f"teacher {i}: {t['name']}", "score": format_score(t.get("validation_score"))}
        for i, t in enumerate(teachers)
    ]
    if baseline is not None:
        rows.append({"name": "no-distillation student (same student, CE only)", "score": format_score(baseline.score)})
    rows.append({"name": f"**this student** ({results.fusion})", "score": f"**{format_score(results.score)}**"})
    return ModelCard.from_template(
        data,
        template_path=template("student.md"),
        model_name=repo_id,
        repo_id=repo_id,
        task=task.name,
        task_title=task.title,
        metric=task.metric,
        score_rows=rows,
        method_text=method_text(results, len(teachers)),
        score_note=(f"Seed {results.seed}, one run: differences of about one standard error are not meaningful."),
        student_text=student_text(results),
        num_parameters=f"{results.num_parameters or 0:,}",
        fusion=results.fusion,
        teacher_index=results.teacher_index if results.fusion == "single" else None,
        temperature=results.temperature,
        alpha=results.alpha,
        seed=results.seed,
        logit_dataset_text=hub_link(hub_dataset, "datasets/") if hub_dataset else (logit_dataset or "none"),
        train_rows=results.train_rows,
        teachers=[{"link": hub_link(t["name"]), "score": format_score(t.get("validation_score"))} for t in teachers],
    )


def render_logit_dataset_card(metadata: dict, repo_id: str, pushed_yaml: dict, license: str = "other") -> DatasetCard:
    first = next(iter(metadata.values()))
    task = get_task(first.task) if first.task else task_of(first.label_names)
    data = DatasetCardData(
        **{
            **pushed_yaml,
            "license": license,
            "language": ["en"],
            "pretty_name": f"{task.title} teacher logits",
            "task_categories": ["text-classification"],
            "source_datasets": [DEFAULT_GLUE],
            "tags": BASE_TAGS + ["logit-dataset", "teacher-logits"],
        }
    )
    return DatasetCard.from_template(
        data,
        template_path=template("logit_dataset.md"),
        pretty_name=f"{task.title} teacher logits",
        repo_id=repo_id,
        task=task.name,
        task_title=task.title,
        metric=task.metric,
        num_teachers=len(first.teachers),
        num_labels=len(first.label_names),
        label_names=", ".join(f"{i}: {n}" for i, n in enumerate(first.label_names)),
        teachers=[{"link": hub_link(t.name), "score": format_score(t.validation_score)} for t in first.teachers],
        splits=", ".join(f"{split} ({value.num_rows:,} rows)" for split, value in metadata.items()),
        input_columns=", ".join(first.input_columns),
        metadata_file=LOGIT_METADATA_FILE,
    )


# ---- small helpers --------------------------------------------------------------------------------


def template(name: str) -> str:
    return str(importlib.resources.files("distill_trainer.model_cards") / name)


def eval_result(task: GlueTask, score: float) -> EvalResult:
    return EvalResult(
        task_type="text-classification",
        dataset_type=DEFAULT_GLUE,
        dataset_name=f"GLUE {task.title}",
        dataset_config=task.name,
        dataset_split=task.validation_split,
        metric_type=task.metric,
        metric_value=round(float(score), 4),
    )


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
