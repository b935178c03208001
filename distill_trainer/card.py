"""The distilled student's model card, one for `DistillationTrainer.create_model_card` (so that a user's own
`trainer.push_to_hub()` publishes it) and for the study's publishing (which adds GLUE's model-index and the
baseline). Rendered from `model_cards/student.md`; local paths never appear in a card."""

from __future__ import annotations

import importlib.resources
import os
from collections.abc import Sequence
from dataclasses import dataclass, fields

import datasets
from huggingface_hub import ModelCard, ModelCardData, constants

from .kd_losses import build_kd_loss
from .logits import read_metadata
from .signals import model_name
from .topk import read_topk_metadata

CARD_TAGS = ["distill-trainer", "distillation", "knowledge-distillation"]
SEQUENCE_CLASSIFIER = ("AutoModelForSequenceClassification", "text-classification")
KINDS = {  # a student's kind: its label term, what its teachers' `t` are, its loading class and pipeline
    "classification": ("CE(s, y)", "the teachers' logits", *SEQUENCE_CLASSIFIER),
    "regression": ("MSE(s, y)", "the teachers' predictions", *SEQUENCE_CLASSIFIER),
    "causal": (
        "CE(s, next token)",
        "the teachers' per-token distributions (stored top-k with a tail bucket, or live teachers)",
        "AutoModelForCausalLM",
        "text-generation",
    ),
}


def task_kind(num_labels: int, causal: bool = False) -> str:
    """`causal`, `regression` (one output, as transformers treats `num_labels=1`) or `classification`.

    Args:
        num_labels: The student's `config.num_labels` (1: regression).
        causal: Whether the student is a causal LM (then `num_labels` does not matter).
    """
    return "causal" if causal else "regression" if num_labels == 1 else "classification"


def loss_text(kd_loss: str, kind: str, fusion: str, jsd_beta: float = 0.5) -> str:
    """The loss a student of `kind` learns under these settings, as its card states it: the one formula
    `DistillationTrainer.compute_loss` computes (`kd_loss`'s registered `formula`; a regression student's soft
    term is always the MSE to the teachers' predictions, and T does not apply; `fusion="none"`: labels only).

    Args:
        kd_loss: The registered KD loss's name (`DistillationConfig.kd_loss`).
        kind: `task_kind`'s answer: `classification`, `regression` or `causal`.
        fusion: The fusion strategy's name; `none` for the labels-only baseline.
        jsd_beta: The mixture weight of `jsd`, written into its formula's note.
    """
    label, teachers, _, _ = KINDS[kind]
    per_token = " per next-token position" if kind == "causal" else ""
    if fusion == "none":
        return f"`{label}`{per_token}: the labels only, no teachers."
    loss = build_kd_loss(kd_loss, jsd_beta, tokens=kind == "causal", regression=kind == "regression")  # as trained
    if kind == "regression":
        soft, note = "MSE(s, t)", "for a one-output student the MSE to the teachers, T does not apply"
    else:
        soft, note = loss.formula or f"{kd_loss}(t, s)", loss.formula_note.replace("{beta}", str(jsd_beta))
    note = f"`{kd_loss}`" + (f": {note}" if note else "")
    return (
        f"`alpha * {soft} + (1 - alpha) * {label}`{per_token}, where `t` are {teachers} fused by `{fusion}` "
        f"(kd_loss {note})."
    )


def is_hub_id(name: str) -> bool:
    """`owner/name` that is not a local path: only those get links (cards never show local paths).

    Args:
        name: A model or dataset name or a local path.
    """
    return name.count("/") == 1 and not os.path.exists(name) and not name.startswith((".", "/"))


def hub_link(name: str | None, prefix: str = "") -> str:
    """A Hub id as a link, anything else by its last path component (a local folder's name, not its path).

    Args:
        name: A Hub id (`owner/name`, or `owner/name@revision`: linked at that revision) or a local path; None or
            empty: "unknown".
        prefix: Put before the id in the URL, e.g. `datasets/` for a dataset.
    """
    if not name:
        return "unknown"
    if is_hub_id(name):
        repo_id, _, revision = name.partition("@")
        return f"[{name}]({constants.ENDPOINT}/{prefix}{repo_id}{f'/tree/{revision}' if revision else ''})"
    return f"`{os.path.basename(os.path.normpath(name))}`"


def format_score(score: float | None) -> str:
    """A score as a card shows it: four decimals, or "unknown" where a run recorded none (never a made-up 0).

    Args:
        score: The score, or None where the run recorded none.
    """
    return "unknown" if score is None else f"{float(score):.4f}"


def method_text(
    fusion: str, teacher_index: int | None, num_teachers: int, curriculum: str | None = None, calibrated: bool = False
) -> str:
    """How the student was taught, in words for the card (the baseline, one named teacher, or a fusion).

    Args:
        fusion: The fusion strategy's name; `none` for the baseline.
        teacher_index: The teacher `single` uses (named when there is no curriculum).
        num_teachers: How many teachers were fused.
        curriculum: `curriculum_fusion`, the strategy the target moved toward, or None.
        calibrated: Whether each teacher was calibrated by its own temperature (`calibrate_teachers`).
    """
    if fusion == "none":
        return "the no-distillation baseline (cross-entropy on the labels only)"
    if fusion == "single" and not curriculum:
        text = f"distilled from one teacher (teacher {teacher_index})"
    else:
        text = f"distilled from {num_teachers} teachers, fused with `{fusion}`"
        if curriculum:
            text += f", moving linearly to `{curriculum}` over training (curriculum)"
    return text + (", each teacher calibrated by its own fitted temperature" if calibrated else "")


@dataclass
class CardFacts:
    """What a student's card states about how it was trained: the same fields whether they come from a
    `DistillationTrainer` (`trainer_facts`, for `trainer.push_to_hub()`) or from a run's record (the study's
    `StudentResult`, whose fields of these names they are: `CardFacts.of(record)`), so both cards agree.

    Args:
        fusion: The fusion strategy's name (`none`: the labels-only baseline).
        temperature: T (its start value under a schedule).
        alpha: The KD weight (its start value under a schedule).
        seed: The run's seed.
        score: The student's last evaluation score; None where none was recorded.
        temperature_schedule: `constant` or the schedule T followed to `temperature_end`.
        temperature_end: T at the end of a schedule; None when constant.
        alpha_schedule: `constant` or the schedule alpha followed to `alpha_end`.
        alpha_end: alpha at the end of a schedule; None when constant.
        teacher_index: The teacher `single` fusion used.
        teachers: One dict per teacher, with `name` and `validation_score`.
        curriculum_fusion: The strategy the fused target moved toward, or None.
        calibrate_teachers: Whether each teacher had its own fitted temperature.
        kd_loss: The KD loss's registered name.
        jsd_beta: `jsd`'s mixture weight.
        kind: `task_kind`'s answer: `classification`, `regression` or `causal`.
        logit_dataset: The teacher-logit dataset (a Hub id or a name), or None.
        student_model: The student's starting checkpoint (a Hub id or a path), or None.
        student_layers: The encoder layers kept from it, in words, or None when all were.
        num_parameters: The student's parameter count.
        train_rows: How many rows the student trained on, where known.
        eval_rows: How many validation rows its score was measured on, where known.
    """

    fusion: str
    temperature: float
    alpha: float
    seed: int
    score: float | None = None
    temperature_schedule: str = "constant"
    temperature_end: float | None = None
    alpha_schedule: str = "constant"
    alpha_end: float | None = None
    teacher_index: int | None = None
    teachers: list[dict] | None = None  # dicts with `name` and `validation_score`
    curriculum_fusion: str | None = None
    calibrate_teachers: bool = False
    kd_loss: str = "forward_kl"
    jsd_beta: float = 0.5
    kind: str = "classification"  # `task_kind`
    logit_dataset: str | None = None
    student_model: str | None = None
    student_layers: str | None = None
    num_parameters: int | None = None
    train_rows: int | None = None
    eval_rows: int | None = None

    @classmethod
    def of(cls, record, **overrides) -> CardFacts:
        """The facts of any object with attributes of these names (a `StudentResult`), `overrides` on top.

        Args:
            record: Any object with attributes named like this class's fields (missing ones keep their defaults).
            **overrides: Field values that replace the record's.
        """
        found = {f.name: getattr(record, f.name) for f in fields(cls) if hasattr(record, f.name)}
        return cls(**{**found, **overrides})


def student_card(
    facts: CardFacts,
    *,
    repo_id: str,
    dataset_text: str,
    metric: str,
    dataset_ids: Sequence[str | None] = (),
    tags: Sequence[str] = (),
    extra_rows: Sequence[dict] = (),
    **card_data,
) -> ModelCard:
    """The student's card, the one builder behind `trainer.create_model_card()` and the study's publishing: what
    the student is, how to load it, its score beside its teachers' (and `extra_rows`, e.g. the baseline), and how
    it was trained, with the loss it was trained with (`loss_text`). `dataset_ids` and `tags` go into the YAML
    with `card_data` (`language`, `license`, `eval_results`, ...).

    Args:
        facts: How the student was trained, and its score.
        repo_id: The student's Hub repo id (the card's title and its loading example).
        dataset_text: The task or data, in words.
        metric: The name of the score shown for the student and its teachers.
        dataset_ids: Datasets for the YAML; only Hub ids are kept (None entries are skipped).
        tags: Tags added to the library's own.
        extra_rows: More score rows (dicts with `name` and `score`), shown before the student's.
        **card_data: Further `ModelCardData` fields (`language`, `license`, `eval_results`, ...).
    """
    fusion = facts.fusion
    teachers = list(facts.teachers or []) if fusion != "none" else []
    rows = [
        {"name": f"teacher {i}: {t['name']}", "score": format_score(t.get("validation_score"))}
        for i, t in enumerate(teachers)
    ]
    rows += list(extra_rows) + [{"name": f"**this student** ({fusion})", "score": f"**{format_score(facts.score)}**"}]
    student, layers, logit_dataset = hub_link(facts.student_model), facts.student_layers, facts.logit_dataset
    is_hub_dataset = bool(logit_dataset) and is_hub_id(logit_dataset)
    method = method_text(fusion, facts.teacher_index, len(teachers), facts.curriculum_fusion, facts.calibrate_teachers)
    return ModelCard.from_template(
        student_card_data(facts.student_model, fusion, dataset_ids, tags, facts.kind, **card_data),
        template_path=str(importlib.resources.files("distill_trainer.model_cards") / "student.md"),
        model_name=repo_id,
        repo_id=repo_id,
        auto_class=KINDS[facts.kind][2],
        loss_text=loss_text(facts.kd_loss, facts.kind, fusion, facts.jsd_beta),
        dataset_text=dataset_text,
        metric=metric,
        score_rows=rows,
        method_text=method,
        score_note=f"Seed {facts.seed}, one run: differences of about one standard error are not meaningful.",
        student_text=f"{student}, encoder layers {layers} kept" if layers else student,
        num_parameters=f"{facts.num_parameters or 0:,}",
        fusion=fusion,
        teacher_index=facts.teacher_index if fusion == "single" else None,
        temperature=scheduled_text(facts.temperature, facts.temperature_end, facts.temperature_schedule),
        alpha=scheduled_text(facts.alpha, facts.alpha_end, facts.alpha_schedule),
        seed=facts.seed,
        logit_dataset_text=hub_link(logit_dataset, "datasets/" if is_hub_dataset else "") if logit_dataset else "none",
        train_rows=facts.train_rows,
        eval_rows=facts.eval_rows,
        teachers=[{"link": hub_link(t["name"]), "score": format_score(t.get("validation_score"))} for t in teachers],
    )


def student_card_data(
    student_model: str | None, fusion: str, dataset_ids=(), tags=(), kind: str = "classification", **extra
) -> ModelCardData:
    """A student card's YAML: library, pipeline, base model and datasets when they are Hub ids, tags.

    Args:
        student_model: The student's starting checkpoint; the base model only when it is a Hub id.
        fusion: The fusion strategy's name, made into a `fusion-<name>` tag.
        dataset_ids: Dataset names; only Hub ids are listed.
        tags: Tags added to the library's own.
        kind: `task_kind`'s answer, which picks the pipeline tag.
        **extra: Further `ModelCardData` fields.
    """
    return ModelCardData(
        library_name="transformers",
        pipeline_tag=KINDS[kind][3],
        base_model=student_model if is_hub_id(student_model or "") else None,
        datasets=[name.partition("@")[0] for name in dataset_ids if name and is_hub_id(name)] or None,
        tags=CARD_TAGS + ["student", f"fusion-{fusion.replace('_', '-')}", *tags],
        **extra,
    )


def scheduled_text(start: float, end: float | None, schedule: str) -> str:
    """alpha or T as trained: one value, or `start -> end` with the schedule, so a card never hides a schedule.

    Args:
        start: The value at the first step (or the only value).
        end: The value at the last step; only shown under a schedule.
        schedule: The schedule's name; `constant` shows `start` alone.
    """
    return str(start) if schedule == "constant" else f"{start} -> {end} ({schedule} schedule)"


def trainer_facts(trainer, student: str | None = None, logit_dataset: str | None = None) -> CardFacts:
    """`CardFacts` from what a `DistillationTrainer` knows: its arguments, the teachers in its train set's logit
    metadata, its model, and its last evaluation of the teachers' metric (`eval_<metric>`; with
    `load_best_model_at_end`, the best checkpoint's, whose weights it holds and pushes).

    Args:
        trainer: The `DistillationTrainer` (after training, for its last evaluation).
        student: The student's name for the card (a Hub id links); None: the model's `name_or_path`.
        logit_dataset: The teacher-logit dataset's Hub id or name, or None.
    """
    metadata, train, args = train_metadata(trainer), trainer.train_dataset, trainer.args
    teachers = [{"name": "unnamed", "validation_score": None}] * (trainer.n_teachers or 0)  # a column, no metadata
    if trainer.signals.teachers:  # live teachers taught it, whatever columns the train set also carries
        teachers = [{"name": model_name(teacher), "validation_score": None} for teacher in trainer.signals.teachers]
    elif metadata:
        teachers = [{"name": t.name, "validation_score": t.validation_score} for t in metadata.teachers]
    key, state = f"eval_{trainer_metric(trainer)}", trainer.state
    best = state.best_global_step if args.load_best_model_at_end else None  # the weights it holds now
    evaluated = [log[key] for log in state.log_history if key in log and best in (None, log["step"])]
    return CardFacts.of(
        args,  # fusion, T, alpha, their schedules, seed, teacher_index, curriculum, calibration, kd_loss
        **({} if args.uses_teachers else {"fusion": "none"}),  # alpha 0 throughout: plain fine-tuning
        score=evaluated[-1] if evaluated else None,
        teachers=teachers,
        kind=task_kind(trainer.num_labels, trainer.token_level),
        logit_dataset=logit_dataset,
        student_model=student or trainer.model.config.name_or_path,
        student_layers=None,
        num_parameters=trainer.model.num_parameters(),
        train_rows=len(train) if hasattr(train, "__len__") else None,
        eval_rows=len(trainer.eval_dataset) if isinstance(trainer.eval_dataset, datasets.Dataset) else None,
    )


def train_metadata(trainer):
    """The logit metadata of the trainer's train set (dense or top-k), or None.

    Args:
        trainer: The `DistillationTrainer`; a train set that is not a `datasets.Dataset` has no metadata.
    """
    train = trainer.train_dataset
    return (read_metadata(train) or read_topk_metadata(train)) if isinstance(train, datasets.Dataset) else None


# What the Trainer and DistillationTrainer log at evaluation besides the user's metrics.
LOGGED_BY_TRAINER = ("loss", "runtime", "samples_per_second", "steps_per_second", "model_preparation_time")


def trainer_metric(trainer) -> str:
    """The metric the card shows: the teachers' as the logit metadata names it, else `metric_for_best_model`, else
    the one metric the user's `compute_metrics` logged ("score" where none of these names one).

    Args:
        trainer: The `DistillationTrainer`.
    """
    metadata = train_metadata(trainer)
    named = next((t.metric for t in metadata.teachers if t.metric), None) if metadata else None
    best = (trainer.args.metric_for_best_model or "").removeprefix("eval_")
    logged = {
        key.removeprefix("eval_")
        for log in trainer.state.log_history
        for key in log
        if key.startswith("eval_") and not key.endswith(tuple(f"_{name}" for name in LOGGED_BY_TRAINER))
    }  # a dict of eval splits logs eval_<split>_loss, ...
    return named or (best if best and best != "loss" else None) or (logged.pop() if len(logged) == 1 else "score")


def trainer_card(
    trainer, language="en", license=None, tags=None, model_name=None, finetuned_from=None, dataset=None, **_
):
    """`student_card` of `trainer_facts`: what `DistillationTrainer.create_model_card` writes.

    Args:
        trainer: The `DistillationTrainer` whose student the card describes.
        language: The card's language.
        license: The student's license, or None.
        tags: One tag or a list, added to the library's own.
        model_name: The repo id the card names; None: `hub_model_id`, else the output folder's name.
        finetuned_from: The student's base model for the card; None: the model's `name_or_path`.
        dataset: The logit dataset's Hub id or name; anything but a string is ignored.
        **_: `Trainer.create_model_card`'s other options, ignored.
    """
    args, metadata = trainer.args, train_metadata(trainer)
    dataset = dataset if isinstance(dataset, str) else None
    return student_card(
        trainer_facts(trainer, finetuned_from, dataset),
        repo_id=model_name or args.hub_model_id or os.path.basename(os.path.normpath(args.output_dir)),
        dataset_text=metadata.task if metadata and metadata.task else "its training data",
        metric=trainer_metric(trainer),
        dataset_ids=[dataset],
        tags=[tags] if isinstance(tags, str) else list(tags or []),
        language=language,
        license=license,
    )
