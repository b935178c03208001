"""Model and dataset cards for what the study publishes: teachers, logit datasets and students, rendered from
the templates in `model_cards/` with their Hub metadata (base model, datasets, tags, model-index)."""

from __future__ import annotations

import importlib.resources
from dataclasses import replace

from huggingface_hub import DatasetCard, DatasetCardData, EvalResult, ModelCard, ModelCardData

from ..card import CARD_TAGS, CardFacts, format_score, hub_link, is_hub_id, student_card, task_kind
from ..topk import TopkDatasetMetadata
from .causal_data import CAUSAL_LM_TASK
from .logit_data import LOGIT_METADATA_FILE
from .runs import StudentResult, TeacherRecord
from .tasks import DEFAULT_GLUE, TASKS, GlueTask, get_task
from .teachers import SKLEARN_TEACHER

BASE_TAGS = CARD_TAGS + ["glue"]
# GLUE's own validation splits, in rows: a score on other rows (a `--max_eval_rows` cut; the QQP and MNLI
# stand-ins cut from train in ../shared/data/glue) is shown on the card with its rows, never in the model-index.
GLUE_VALIDATION_ROWS = {
    "cola": 1043, "sst2": 872, "mrpc": 408, "qqp": 40430, "stsb": 1500,
    "mnli": 9815, "qnli": 5463, "rte": 277, "wnli": 71,
}  # fmt: skip


# ---- cards ----------------------------------------------------------------------------------------


def render_teacher_card(info: TeacherRecord, repo_id: str, license: str = "apache-2.0") -> ModelCard:
    """The model card of a fine-tuned teacher: its base model, task, validation score and how to load it (a
    transformers checkpoint or the scikit-learn pipeline).

    Args:
        info: The teacher's record (`teacher_info.json`).
        repo_id: The teacher's Hub id (the card's title and loading snippet).
        license: The model's license.
    """
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
        eval_results=glue_eval_results(task, info.validation_score, info.validation_rows),
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
        validation_rows=info.validation_rows,
        metric=task.metric,
        score=format_score(info.validation_score),
        label_names=", ".join(task.label_names),
    )


def render_student_card(
    results: StudentResult, repo_id: str, baseline: StudentResult | None = None, license: str = "apache-2.0"
) -> ModelCard:
    """The core's student card (`distill_trainer.card.student_card`, the one `trainer.push_to_hub()` writes) of the
    run's record, with GLUE's model-index and the baseline's score.

    Args:
        results: The student run's record.
        repo_id: The student's Hub id.
        baseline: The no-distillation student's record, whose score the card lists beside it; None: not listed.
        license: The model's license.
    """
    causal = results.task == CAUSAL_LM_TASK
    task = None if causal else get_task(results.task)
    kind = task_kind(1 if task is not None and task.is_regression else 2, causal)
    baseline_rows = (
        [{"name": "no-distillation student (same student, CE only)", "score": format_score(baseline.score)}]
        if baseline is not None
        else []
    )
    facts = CardFacts.of(results, kind=kind, **recorded_loss(results))
    if causal:  # teachers record their token likelihood, exp(-NLL); the card's column is perplexity, exp(NLL)
        facts = replace(facts, teachers=[as_perplexity(teacher) for teacher in facts.teachers or []])
    return student_card(
        facts,
        repo_id=repo_id,
        dataset_text="prompt/completion text (causal LM)" if causal else f"GLUE {task.title} (`{task.name}`)",
        metric=results.metric,
        dataset_ids=[] if causal else [DEFAULT_GLUE, results.logit_dataset],
        tags=[] if causal else ["glue"],
        extra_rows=baseline_rows,
        model_name=repo_id.split("/")[-1],
        license=license,
        language=["en"],
        eval_results=None if causal else glue_eval_results(task, results.score, results.eval_rows),
    )


def as_perplexity(teacher: dict) -> dict:
    """A causal teacher's record (`TeacherInfo` fields) with its validation score as perplexity, the student's metric.

    Args:
        teacher: The teacher's fields; a score in another metric than token likelihood is kept as it is.
    """
    if teacher.get("metric") != "token_likelihood" or not teacher.get("validation_score"):
        return teacher
    return {**teacher, "metric": "perplexity", "validation_score": 1 / teacher["validation_score"]}


def recorded_loss(results: StudentResult) -> dict:
    """`kd_loss` and `jsd_beta` as the run's record holds them (its question's config); records from before
    `kd_loss` existed were trained with the forward KL.

    Args:
        results: The student run's record.
    """
    config = (results.question or {}).get("config", {})
    return {"kd_loss": config.get("kd_loss", "forward_kl"), "jsd_beta": config.get("jsd_beta", 0.5)}


def render_logit_dataset_card(metadata: dict, repo_id: str, pushed_yaml: dict, license: str = "other") -> DatasetCard:
    """The card of a published logit dataset: its teachers, column shapes and how to load it.

    Args:
        metadata: Each split's `LogitDatasetMetadata` or `TopkDatasetMetadata` (a causal LM's top-k).
        repo_id: The dataset's Hub id (shown in the loading snippet).
        pushed_yaml: The card YAML `push_to_hub` wrote (features, splits, configs), kept.
        license: The dataset's license.
    """
    first = next(iter(metadata.values()))
    if isinstance(first, TopkDatasetMetadata):
        return render_topk_dataset_card(metadata, repo_id, pushed_yaml, license)
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
        teachers=[
            {
                "link": hub_link(t.name),
                "score": format_score(t.validation_score),
                "dev_score": None if t.dev_score is None else format_score(t.dev_score),
            }
            for t in first.teachers
        ],
        fit_split=first.fit_split,
        weighting_split=first.weighting_split,
        splits=", ".join(f"{split} ({value.num_rows:,} rows)" for split, value in metadata.items()),
        input_columns=", ".join(first.input_columns),
        metadata_file=LOGIT_METADATA_FILE,
    )


def render_topk_dataset_card(metadata: dict, repo_id: str, pushed_yaml: dict, license: str = "other") -> DatasetCard:
    """`render_logit_dataset_card` of a causal LM's top-k dataset: k, dtype, tokenizer and teachers.

    Args:
        metadata: Each split's `TopkDatasetMetadata`.
        repo_id: The dataset's Hub id (shown in the loading snippet).
        pushed_yaml: The card YAML `push_to_hub` wrote (features, splits, configs), kept.
        license: The dataset's license.
    """
    first = next(iter(metadata.values()))
    pretty_name = f"{first.task or 'causal LM'} teacher top-{first.k} log-probabilities"
    card_data = {"license": license, "pretty_name": pretty_name, "task_categories": ["text-generation"]}
    data = DatasetCardData(**{**pushed_yaml, **card_data, "tags": CARD_TAGS + ["logit-dataset", "teacher-topk"]})
    teachers = [
        {"link": hub_link(t.name), "score": format_score(t.validation_score)}
        | {"dev": None if t.dev_score is None else format_score(t.dev_score)}
        for t in first.teachers
    ]
    return DatasetCard.from_template(
        data,
        template_path=template("topk_dataset.md"),
        pretty_name=pretty_name,
        repo_id=repo_id,
        k=first.k,
        dtype=first.logprobs_dtype,
        tokenizer=hub_link(first.tokenizer.name),
        vocab_size=f"{first.vocab_size:,}",
        fingerprint=first.tokenizer.fingerprint,
        num_teachers=len(first.teachers),
        teachers=teachers,
        weighting_split=first.weighting_split,
        splits=", ".join(f"{split} ({value.num_rows:,} rows)" for split, value in metadata.items()),
        metadata_file=LOGIT_METADATA_FILE,
    )


# ---- small helpers --------------------------------------------------------------------------------


def template(name: str) -> str:
    """The path of a card template in `distill_trainer/model_cards/`.

    Args:
        name: The template's file name, e.g. "teacher.md".
    """
    return str(importlib.resources.files("distill_trainer.model_cards") / name)


def glue_eval_results(task: GlueTask, score: float, rows: int | None) -> list[EvalResult] | None:
    """The model-index entry of a validation score on a GLUE task, where it was measured on GLUE's whole
    validation split (by its row count); None otherwise, so the Hub never lists a subset's score as GLUE's.

    Args:
        task: The GLUE task (its name, title, validation split and metric).
        score: The score in the task's metric (rounded to 4 digits).
        rows: How many validation rows it was measured on (None: unrecorded, so not entered).
    """
    if rows is None or rows != GLUE_VALIDATION_ROWS.get(task.name):
        return None
    return [
        EvalResult(
            task_type="text-classification",
            dataset_type=DEFAULT_GLUE,
            dataset_name=f"GLUE {task.title}",
            dataset_config=task.name,
            dataset_split=task.validation_split,
            metric_type=task.metric,
            metric_value=round(float(score), 4),
        )
    ]


def task_of(label_names: list[str]) -> GlueTask:
    """The GLUE task a logit dataset belongs to, from its label names (metadata does not name the task).

    Args:
        label_names: The logit dataset's label names, in label order.
    """
    matches = [task for task in TASKS.values() if list(task.label_names) == list(label_names)]
    return matches[0] if len(matches) == 1 else GlueTask("glue", (), tuple(label_names), "validation", "score", "GLUE")
