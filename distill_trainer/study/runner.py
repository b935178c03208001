"""The study: teachers -> logit dataset -> every student method x seed, and T x alpha sweeps; finished
runs are reused, so an interrupted study resumes."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from dataclasses import replace

from transformers import TrainingArguments

from ..config import DistillationConfig
from .args import StudyArguments, with_overrides
from .early_stopping import steps_per_epoch
from .extraction import extract_to_disk
from .logit_data import load_logit_dataset
from .questions import check_same_question, logits_of, student_question, teacher_question
from .results_table import write_results
from .runs import (
    StudentResult,
    TeacherRecord,
    display_name,
    method_options,
    method_temperatures,
    settings_that_differ,
    training_settings,
)
from .task_data import TaskData
from .teacher_training import train_teacher
from .teachers import folder_revision
from .training import distill_student

logger = logging.getLogger(__name__)

REUSE_KEYS = ("fusion", "curriculum_fusion", "calibrate_teachers", "teacher_index", "temperature", "alpha", "seed")


def distill_or_reuse(data: TaskData, student: dict, config: DistillationConfig) -> StudentResult:
    """`distill_student`, unless `config.output_dir` already holds its results (so a study can resume).

    A finished run is reused only for the same `student_question` (its whole configuration and inputs); a folder
    left by another question is refused, naming what differs, rather than silently reported as this one. Records
    from before questions were kept are compared on what they hold (method, T, alpha, seed, labelled rows and
    `training_settings`).

    Args:
        data: The task and its rows.
        student: `distill_student`'s options: `logit_dataset`, `student_model`, `student_layers`,
            `early_stopping_patience`.
        config: The run's configuration (`output_dir` is its folder).
    """
    if not os.path.isfile(os.path.join(config.output_dir, StudentResult.FILE)):
        distill_student(data, config=config, **student)
        return StudentResult.load(config.output_dir)
    found = StudentResult.load(config.output_dir)
    asked = student_question(data, student, config, load_logit_dataset(student["logit_dataset"]))
    if check_same_question(config.output_dir, found.question, asked):
        return found
    logger.warning(
        "%s was recorded before whole questions were kept: compared on its settings only.", config.output_dir
    )
    differ = {key: getattr(found, key) for key in REUSE_KEYS if getattr(found, key) != getattr(config, key)}
    if config.fusion != "single" and found.fusion != "single":
        differ.pop("teacher_index", None)
    if found.labelled_rows != data.options.get("labelled_rows"):
        differ["labelled_rows"] = found.labelled_rows
    differ.update(settings_that_differ(found.training, training_settings(config, data.options, student)))
    if differ:
        raise ValueError(
            f"{config.output_dir} holds a finished run with other settings ({differ}); it is not reused as this "
            "one. Use another --study_dir / --output_dir, or remove that folder."
        )
    return found


def teacher_or_reuse(
    data: TaskData, teacher: str, folder: str, config: DistillationConfig, study: StudyArguments
) -> TeacherRecord:
    """The teacher in `folder` if finished, else fine-tuned there (`study.teacher_epochs`, early stopping with
    `study.teacher_patience`). A transformer teacher that collapses (predicts nearly one class, see
    `TeacherRecord.collapsed`) is not a teacher: its folder is set aside as `collapsed-<folder>-lr<lr>` (kept,
    never deleted) and it is fine-tuned again at a third of the learning rate, up to
    `study.teacher_collapse_retries` times; if the last attempt collapses too, it is kept with a warning (its
    record says so). A finished teacher is reused only under the same `teacher_settings`.

    Args:
        data: The task and its rows.
        teacher: The base model to fine-tune: a Hub id, a folder, a packaged short name or `sklearn_tfidf`.
        folder: The teacher's folder.
        config: The students' configuration, whose batch size, schedule and (without `--teacher_learning_rate`)
            learning rate the teacher shares.
        study: The study's options (teacher epochs, patience, learning rate and collapse retries).
    """
    asked = teacher_settings(data, config, study)
    question = teacher_question(data, teacher, config, study, folder)
    if os.path.isfile(os.path.join(folder, TeacherRecord.FILE)):
        found = TeacherRecord.load(folder)
        if check_same_question(folder, found.question, question):
            return found
        differ = settings_that_differ(found.training, asked)
        if differ:
            raise ValueError(
                f"{folder} holds a teacher trained with other settings ({differ}); it is not reused as this one. "
                "Use another --study_dir, or remove that folder."
            )
        return found
    learning_rate, collapsed = asked["learning_rate"], []
    for attempt in range(study.teacher_collapse_retries + 1):
        teacher_args = with_overrides(
            config,
            TrainingArguments,
            output_dir=folder,
            num_train_epochs=study.teacher_epochs,
            learning_rate=learning_rate,
        )
        info = train_teacher(data, teacher, teacher_args, early_stopping_patience=study.teacher_patience)
        if not (info.collapsed and info.learning_rate) or attempt == study.teacher_collapse_retries:
            break
        logger.warning(
            "Teacher %s collapsed at learning rate %g (%.0f%% of its dev or validation rows predicted as one class); "
            "fine-tuning it again at %g.",
            teacher,
            learning_rate,
            100 * info.majority_prediction_share,
            learning_rate / 3,
        )
        collapsed.append(learning_rate)
        os.replace(
            folder, os.path.join(os.path.dirname(folder), f"collapsed-{os.path.basename(folder)}-lr{learning_rate:g}")
        )
        learning_rate /= 3
    if info.collapsed:
        logger.error(
            "Teacher %s still predicts one class on %.0f%% of its dev or validation rows.",
            teacher,
            100 * info.majority_prediction_share,
        )
    info = replace(info, collapsed_learning_rates=collapsed or None, training=asked, question=question)
    info.save(folder)
    return info


def teacher_settings(data: TaskData, config: DistillationConfig, study: StudyArguments) -> dict:
    """What a study asks of a teacher (before any collapse retry lowers the rate), recorded with it so that a
    finished teacher is not reused under other settings.

    Args:
        data: The task and its rows (`max_train_rows`, `max_length`).
        config: The students' configuration (learning rate, batch size, weight decay).
        study: The study's options (teacher epochs, patience and learning rate).
    """
    return {
        "teacher_epochs": study.teacher_epochs,
        "teacher_patience": study.teacher_patience,
        "learning_rate": study.teacher_learning_rate or config.learning_rate,
        "per_device_train_batch_size": config.per_device_train_batch_size,
        "weight_decay": config.weight_decay,
        "max_train_rows": data.options.get("max_train_rows"),
        "max_length": data.max_length,
    }


def run_study(data: TaskData, study: StudyArguments, config: DistillationConfig):
    """Teachers -> logit dataset -> every student method x seed; returns the results table as a DataFrame (the
    `results_csv` rows after this run: earlier runs' rows kept, this run's replacing their own).

    Finished runs (an `eval_results.json` / `teacher_info.json` in their folder) are reused, so an
    interrupted study picks up where it stopped.

    Args:
        data: The task and its rows (`TaskArguments.task_data()`).
        study: What the study runs: teachers, student model and layers, methods, seeds, folders (`StudyArguments`).
        config: The students' `DistillationConfig` (each run overrides its folder, seed and method options); the
            teachers share its batch size and schedule.
    """
    import pandas as pd

    task = data.task
    root = os.path.join(study.study_dir, task.name)
    teachers_root = os.path.join(study.teachers_from, task.name) if study.teachers_from else root
    teacher_dirs, records, rows = [], [], []
    for teacher in study.teachers:
        folder = os.path.join(teachers_root, f"teacher-{display_name(teacher)}")
        info = teacher_or_reuse(data, teacher, folder, config, study)
        teacher_dirs.append(folder)
        records.append(info)
        rows.append(
            {
                "method": info.method,
                "type": "teacher",
                "seed": None,
                "score": info.validation_score,
                "dev_score": info.dev_score,
            }
        )
    logits_dir = os.path.join(teachers_root, "logits")
    revisions = [folder_revision(folder) for folder in teacher_dirs]
    if not os.path.isdir(logits_dir) or not logits_of(logits_dir, records, data, revisions):
        if study.teachers_from and os.path.isdir(logits_dir):
            raise ValueError(
                f"--teachers_from {study.teachers_from}: its logit dataset {logits_dir} holds other teachers or rows "
                f"than this study's ({[r.name for r in records]}); extracting these would replace it, and that "
                "study's students were trained on it. Ask for its teachers and rows, or drop --teachers_from."
            )
        extract_to_disk(data, teacher_dirs, logits_dir)
    if study.teachers_from:  # linked into this study's folder, so that analyze.py finds them there
        link_into(root, [*teacher_dirs, logits_dir])
    runs = method_runs(study.methods, len(teacher_dirs), method_temperatures(study.method_temperatures, study.methods))
    student = {
        "logit_dataset": logits_dir,
        "student_model": study.student_model,
        "student_layers": study.student_layers,
        "early_stopping_patience": study.student_patience,
    }
    baseline_steps = matched_steps(data, config)
    for seed in study.seeds:
        for name, options in runs:
            folder = os.path.join(root, f"student-{name}-seed{seed}")
            if options["fusion"] == "none" and baseline_steps:
                options = {**options, "max_steps": baseline_steps}
            results = distill_or_reuse(data, student, with_overrides(config, output_dir=folder, seed=seed, **options))
            method, kind = results.method
            rows.append(
                {
                    "method": method,
                    "type": kind,
                    "seed": seed,
                    "score": results.score,
                    "dev_score": results.dev_score,
                    "temperature": results.temperature,
                }
            )
    table = pd.DataFrame(rows).assign(task=task.name, metric=task.metric, alpha=config.alpha)
    table = table.assign(train_rows=data.options.get("max_train_rows"), study_dir=os.path.normpath(study.study_dir))
    return write_results(study.results_csv, table)


def matched_steps(data: TaskData, config: DistillationConfig) -> int | None:
    """In the low-resource regime, the optimizer steps the distilled students take over the whole transfer set,
    which the baseline (trained on the labelled rows alone) is given too, so that it is not compared after a
    fraction of their training (study v2's baseline took 63 steps to their 4,210). None outside the regime or
    where `config.max_steps` already fixes every run's steps.

    Args:
        data: The task's rows (`labelled_rows`, the transfer set).
        config: The students' configuration (epochs, batch size, accumulation).
    """
    if data.labelled_rows is None or config.max_steps > 0:
        return None
    return math.ceil(config.num_train_epochs * steps_per_epoch(len(data.train), config))


def link_into(folder: str, sources: Sequence[str]) -> None:
    """Symbolic links in `folder` to each of `sources` (by name); an existing entry must be that link already.

    Args:
        folder: The folder the links go in (created if missing).
        sources: The files or folders to link to; each link is named by its source's last component.
    """
    os.makedirs(folder, exist_ok=True)
    for source in sources:
        link = os.path.join(folder, os.path.basename(source))
        if not os.path.lexists(link):
            try:  # relative, so the two studies can move together (another checkout, a tarball)
                os.symlink(os.path.relpath(os.path.realpath(source), os.path.realpath(folder)), link)
            except FileExistsError:  # another run of this study, started at the same moment, linked it first
                pass
        if os.path.realpath(link) != os.path.realpath(source):
            raise ValueError(f"{link} exists and is not a link to {source}: --teachers_from would hide it.")


def method_runs(methods: Sequence[str], n_teachers: int, temperatures: dict[str, float]) -> list[tuple[str, dict]]:
    """(run name, `DistillationConfig` options) per study method: 'single' methods once per teacher ('single-<i>'
    for teacher i alone); a method with its own temperature gets it, and a `-T<t>` in its name so that its folder
    differs.

    Args:
        methods: The study's method names (`method_options`).
        n_teachers: How many teachers the logit dataset holds.
        temperatures: A temperature per method that has its own (`method_temperatures`); others use the config's.
    """
    runs = []
    for method in methods:
        options = method_options(method)
        name = method
        if method in temperatures:
            options["temperature"] = temperatures[method]
            name += f"-T{temperatures[method]:g}"
        if "single" in (options["fusion"], options["curriculum_fusion"]) and "teacher_index" not in options:
            runs += [
                (name.replace("single", f"single-{i}", 1), {**options, "teacher_index": i}) for i in range(n_teachers)
            ]
        else:
            runs.append((name, options))
    return runs


def sweep_grid(
    data: TaskData,
    student: dict,
    config: DistillationConfig,
    temperatures: Sequence[float],
    alphas: Sequence[float],
    grid_csv: str | None = None,
    methods: Sequence[str] | None = None,
    temperature_per_method: dict[str, float] | None = None,
):
    """Train one student per (method, T, alpha) with `config`'s seed; the scores as a long DataFrame.

    `methods` (study method names, see `method_options`; default: `config`'s own fusion) are swept in turn; a
    method in `temperature_per_method` sweeps alpha at its own T only. Each cell is a run folder under
    `config.output_dir` (`<method>/` when methods are given); finished cells are reused.

    Args:
        data: The task and its rows.
        student: `distill_student`'s options: `logit_dataset`, `student_model`, `student_layers`,
            `early_stopping_patience`.
        config: The students' configuration; `output_dir` is the grid's root folder.
        temperatures: The temperatures of the grid.
        alphas: The alphas of the grid.
        grid_csv: Where the grid's table is written (None: `<output_dir>/grid.csv`).
        methods: Study method names to sweep in turn (None: `config`'s own fusion).
        temperature_per_method: Methods swept at this T only, alpha alone (None: none).
    """
    import pandas as pd

    temperature_per_method = temperature_per_method or {}
    rows = []
    for method in methods or [None]:
        options = method_options(method) if method else {}
        root = os.path.join(config.output_dir, method) if method else config.output_dir
        for temperature in [temperature_per_method[method]] if method in temperature_per_method else temperatures:
            for alpha in alphas:
                folder = os.path.join(root, f"T{temperature:g}-alpha{alpha:g}")
                overrides = dict(output_dir=folder, temperature=temperature, alpha=alpha, **options)
                results = distill_or_reuse(data, student, with_overrides(config, **overrides))
                row = {key: getattr(results, key) for key in GRID_COLUMNS}
                rows.append({"method": results.method[0], **row, "run": os.path.relpath(folder, config.output_dir)})
    grid = pd.DataFrame(rows)
    grid.to_csv(grid_csv or os.path.join(config.output_dir, "grid.csv"), index=False)
    return grid


GRID_COLUMNS = (
    "task",
    "fusion",
    "teacher_index",
    "seed",
    "temperature",
    "alpha",
    "metric",
    "score",
    "train_rows",
    "train_runtime",
)
