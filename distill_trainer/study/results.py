"""The one place a trained student's `StudentResult` is built from its trainer, configuration and options, so the
classification and causal-LM paths record the same fields the same way."""

from __future__ import annotations

from collections.abc import Sequence

from ..config import DistillationConfig
from .runs import StudentResult, base_model_name, device_name, display_name, processor_name


def student_result(
    trainer,
    config: DistillationConfig,
    *,
    max_length: int,
    logit_dataset: str,
    student_model: str,
    student_layers: Sequence[int] | None,
    task: str,
    metric: str,
    metrics: dict,
    teachers: Sequence[dict] | None,
    train_rows: int,
    eval_rows: int,
    train_runtime: float | None,
    **recorded,
) -> StudentResult:
    """A student's record: how it was trained (the method, T and alpha with their schedules, the weights and
    temperatures the trainer used), from what (teachers, logit dataset, rows, student), what it scored (`metrics`,
    `metric` the score), and on what machine.

    Args:
        trainer: The `DistillationTrainer` that trained it (its fusion weights, fitted weights, teacher
            temperatures, model and device).
        config: Its `DistillationConfig`.
        max_length: Tokens per input it was trained with.
        logit_dataset: The logit dataset it learnt from (folder or Hub id; recorded by name).
        student_model: The checkpoint it started from; `student_layers`: the layers it kept (None: all).
        task: The task's name; `metric`: the metric of `metrics` that is the run's score.
        teachers: The logit dataset's teachers, as `TeacherInfo` fields (None without metadata).
        train_rows: Training rows; `eval_rows`: validation rows scored; `train_runtime`: seconds.
        recorded: Further fields (`labelled_rows`, `training`, `question`).
    """
    return StudentResult(
        task=task,
        metric=metric,
        score=metrics[metric],
        metrics=metrics,
        fusion=config.fusion,
        temperature=config.temperature,
        alpha=config.alpha,
        seed=config.seed,
        alpha_schedule=config.alpha_schedule,
        alpha_end=config.alpha_end,
        temperature_schedule=config.temperature_schedule,
        temperature_end=config.temperature_end,
        teacher_index=config.teacher_index,
        fusion_weights=trainer.fusion_weights,
        teacher_temperatures=trainer.teacher_temperatures,
        curriculum_fusion=config.curriculum_fusion,
        fitted_weights=trainer.fitted_weights,
        calibrate_teachers=config.calibrate_teachers,
        teachers=list(teachers) if teachers is not None else None,
        logit_dataset=display_name(logit_dataset),
        train_rows=train_rows,
        student_model=base_model_name(student_model),
        student_layers=",".join(map(str, student_layers)) if student_layers else None,
        num_parameters=trainer.model.num_parameters(),
        eval_rows=eval_rows,
        max_length=max_length,
        train_runtime=train_runtime,
        device=device_name(trainer.args),
        processor=processor_name(),
        **recorded,
    )
