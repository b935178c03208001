"""Reading a study folder: the runs' records, the T x alpha grids, and each student's validation predictions.

Layout read: `<study_dir>/<task>/{teacher-*/teacher_info.json, logits/, student-*/eval_results.json,
sweep-*/grid.csv}`, and each student folder's validation logits (`validation_logits.npy`): records only, no model
is run here.
"""

from __future__ import annotations

import glob
import json
import os
from collections import Counter
from dataclasses import asdict

import datasets
import numpy as np
import pandas as pd

from ...logits import read_metadata, teacher_logits_array
from ..extraction import SCORE_TOLERANCE
from ..questions import question_differences
from ..runs import LOGITS_FILE_BY_SPLIT, VALIDATION_LOGITS_FILE, StudentResult, TeacherRecord, short_teacher_name
from ..tasks import compute_task_metrics, get_task


def collect_runs(study_dir: str) -> pd.DataFrame:
    """One row per teacher and per student run found under `study_dir` (the master results table).

    Args:
        study_dir: The study folder (`<task>/teacher-*/teacher_info.json`, `<task>/student-*/eval_results.json`);
            the students found are checked by `check_students`.
    """
    rows = []
    for info_path in sorted(glob.glob(os.path.join(study_dir, "*", "teacher-*", TeacherRecord.FILE))):
        info = TeacherRecord.load(info_path)
        rows.append(
            {
                "task": info.task,
                "method": info.method,
                "type": "teacher",
                "seed": np.nan,
                "score": info.validation_score,
                "metric": info.metric,
                "train_rows": info.train_rows,
                "train_runtime": info.train_runtime,
                "device": info.device,
                "epochs_trained": info.epochs_trained,
                "best_epoch": info.best_epoch,
                "learning_rate": info.learning_rate,
                "collapsed_learning_rates": info.collapsed_learning_rates,
                "run_dir": os.path.dirname(info_path),
            }
        )
    students = {}
    for results_path in sorted(glob.glob(os.path.join(study_dir, "*", "student-*", StudentResult.FILE))):
        results = StudentResult.load(results_path)
        students[os.path.dirname(results_path)] = results
        method, kind = results.method
        rows.append(
            {
                "task": results.task,
                "method": method,
                "type": kind,
                "seed": results.seed,
                "score": results.score,
                "metric": results.metric,
                "train_rows": results.train_rows,
                "labelled_rows": results.labelled_rows,
                "temperature": results.temperature,
                "alpha": results.alpha,
                "train_runtime": results.train_runtime,
                "device": results.device,
                "run_dir": os.path.dirname(results_path),
            }
        )
    if not rows:
        raise FileNotFoundError(
            f"No teacher_info.json or eval_results.json under {study_dir}/<task>/: run compare.py first."
        )
    check_students(study_dir, students)
    return pd.DataFrame(rows)


# What every student of a task shares, whatever its method: the comparisons are between methods on one student.
STUDENT_FIELDS = ("student_model", "student_layers", "max_length", "eval_rows")
# What may differ between the seeds of one method (and between methods' rows) without making them other questions.
# The dev split's outcomes (score, metrics, the step early stopping kept) differ between seeds like `score` does.
NOT_SETTINGS = ("seed", "score", "metrics", "train_runtime", "device", "question", "training")
NOT_SETTINGS += ("dev_score", "dev_metrics", "best_step")


def run_settings(results: StudentResult) -> dict:
    """Everything a student run was trained and scored with but its seed: its `question` where the record has one
    (the whole configuration and inputs), else the record's own fields (records from before questions were kept).

    Args:
        results: The student run's record (`eval_results.json`).
    """
    if results.question:
        settings = json.loads(json.dumps(results.question))
        settings["config"].pop("seed", None)
        return settings
    fields = {key: value for key, value in asdict(results).items() if key not in NOT_SETTINGS}
    return {"record": fields, "training": {k: v for k, v in (results.training or {}).items() if k != "seed"}}


def check_students(study_dir: str, students: dict[str, StudentResult]) -> None:
    """Refuse what would be tabulated wrongly, naming the runs: a run in another task's folder, two runs of one
    method and seed, students of one task that are not one student (`STUDENT_FIELDS`), runs of one method with other
    settings than its other seeds (they would be pooled as if they were seeds), runs of a task scored on other
    validation rows than the rest, and a recorded score that the run's own validation logits do not give (an edited
    record).

    Args:
        study_dir: The study folder (each task's logit dataset there gives the validation labels).
        students: Each student run folder's record.
    """
    by_method, rows_scored, seen, student_of = {}, {}, {}, {}
    for folder, results in students.items():
        if os.path.basename(os.path.dirname(os.path.normpath(folder))) != results.task:
            raise ValueError(f"{folder} holds a {results.task} student in another task's folder: move it out.")
        run = (results.task, results.method[0], results.seed)
        if run in seen:
            raise ValueError(
                f"{results.task} {run[1]!r} seed {run[2]}: {seen[run]} and {folder} are two runs of one seed (one "
                "would count twice or replace the other); keep one in the study folder."
            )
        seen[run] = folder
        student = json.dumps([getattr(results, name) for name in STUDENT_FIELDS])
        student_of.setdefault(results.task, {}).setdefault(student, folder)
        by_method.setdefault((results.task, results.method[0]), []).append((folder, run_settings(results)))
        scored = results.question["inputs"].get("validation", {}).get("rows") if results.question else None
        rows_scored.setdefault(results.task, {})[folder] = (results.eval_rows, scored)
    for task, scored in rows_scored.items():
        kinds = {}
        for folder, (count, fingerprint) in scored.items():
            kinds.setdefault(count if fingerprint is None else (count, fingerprint), []).append(folder)
        counts = {count for count, _ in scored.values()}
        fingerprints = {fingerprint for _, fingerprint in scored.values() if fingerprint is not None}
        if len(counts) > 1 or len(fingerprints) > 1:
            shown = "; ".join(
                f"{len(folders)} runs scored {key} rows (e.g. {folders[0]})" for key, folders in kinds.items()
            )
            raise ValueError(
                f"{task}: the students were scored on different validation rows ({shown}): not comparable."
            )
    for (task, method), runs in by_method.items():
        first_folder, first = runs[0]
        for folder, settings in runs[1:]:
            differ = question_differences(first, settings)  # a setting one older record did not keep: unknown
            differ = {key: pair for key, pair in differ.items() if "<absent>" not in pair}
            if differ:
                shown = "; ".join(f"{key}: {a!r} vs {b!r}" for key, (a, b) in list(differ.items())[:6])
                raise ValueError(
                    f"{task} {method!r}: {first_folder} and {folder} were trained with other settings ({shown}); "
                    "they are not seeds of one method and are not pooled. Analyse them in separate study folders."
                )
    for task, kinds in student_of.items():  # methods are compared on one student
        if len(kinds) > 1:
            (one, first), (other, second) = list(kinds.items())[:2]
            raise ValueError(
                f"{task}: {first} and {second} are other students ({', '.join(STUDENT_FIELDS)}: {one} vs {other}); "
                "methods are compared on one student. Analyse them in separate study folders."
            )
    for folder, results in students.items():
        check_recorded_score(study_dir, folder, results)


def check_recorded_score(study_dir: str, folder: str, results: StudentResult, tolerance: float = 1e-6) -> None:
    """A run's recorded scores must be what its saved logits score: its validation score on the validation labels
    and, where it has dev logits (students from 2026-12-05 on, and earlier ones given them from their saved weights by
    `training.save_validation_logits(..., split="dev")`), its dev score, which study v3 chooses by, on the
    dev labels. Nothing is checked where the run saved no such logits or the task has no logit dataset.

    Args:
        study_dir: The study folder (`<task>/logits` there gives the labels of its splits).
        folder: The student run's folder (its `validation_logits.npy` and `dev_logits.npy`).
        results: The run's record, whose `score` and `dev_score` are checked.
        tolerance: The largest absolute difference allowed between the recorded and the rescored metric.
    """
    logits_dir = os.path.join(study_dir, results.task, "logits")
    saved = [
        (LOGITS_FILE_BY_SPLIT[split], split, recorded)
        for split, recorded in (("validation", results.score), ("dev", results.dev_score))
        if recorded is not None and os.path.isfile(os.path.join(folder, LOGITS_FILE_BY_SPLIT[split]))
    ]
    if not saved or not os.path.isdir(logits_dir):
        return
    labelled = datasets.load_from_disk(logits_dir)
    for file, split, recorded in saved:
        logits = np.load(os.path.join(folder, file))
        if split not in labelled:
            raise ValueError(f"{folder} has {file}, but {logits_dir} has no {split} split to score it on.")
        name, rows = ("dev_score", len(labelled[split])) if split == "dev" else (results.metric, results.eval_rows)
        rows = rows or len(labelled[split])  # validation: its first eval_rows rows; dev: every row
        if len(logits) != rows or rows > len(labelled[split]):
            raise ValueError(
                f"{folder}: its {file} holds {len(logits)} rows, and its record's {name} was measured on {rows} of "
                f"the {len(labelled[split])} {split} rows: the file belongs to another run or was cut; it is not "
                "reported."
            )
        labels = np.asarray(labelled[split]["label"][:rows])
        rescored = compute_task_metrics(get_task(results.task), logits, labels)[results.metric]
        if not (abs(rescored - recorded) <= tolerance or np.isnan(rescored) and np.isnan(recorded)):  # constant
            raise ValueError(
                f"{folder}: its {StudentResult.FILE} records {name} {recorded:.6f}, but its own {file} scores "
                f"{rescored:.6f} on the {split} labels: the record was changed or belongs to another run; it is "
                "not reported."
            )


def collect_grids(study_dir: str) -> pd.DataFrame:
    """Every T x alpha grid (`grid.csv` of recipes/sweep.py) under `study_dir`, named by its sweep's folder; a
    sweep over several methods (`--methods`) gives one grid per method, named `<folder>: <method>`.

    Args:
        study_dir: The study folder, searched at any depth; no grid gives an empty frame.
    """
    frames = []
    for path in sorted(glob.glob(os.path.join(study_dir, "**", "grid.csv"), recursive=True)):
        frame, folder = pd.read_csv(path), os.path.dirname(path)
        several = "method" in frame and frame["method"].nunique() > 1
        names = [f"{os.path.basename(folder)}: {m}" for m in frame["method"]] if several else os.path.basename(folder)
        frames.append(frame.assign(grid=names, grid_dir=folder))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def student_predictions(run_dir: str, task_name: str) -> np.ndarray:
    """A student's predictions on the validation rows (class ids; scores `[n]` for regression), from the logits
    its run saved (`validation_logits.npy`, written by `distill_student` before its record): the analysis reads
    run records only and never runs a model. A folder from before students saved them is refused, naming
    `training.save_validation_logits`, which predicts them once from the saved student.

    Args:
        run_dir: The student run's folder.
        task_name: The task (whether it is a regression decides argmax or the one score column).
    """
    path = os.path.join(run_dir, VALIDATION_LOGITS_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"{run_dir} has no {VALIDATION_LOGITS_FILE}: it was trained before students saved their validation "
            "logits. Write them once with distill_trainer.study.training.save_validation_logits(run_dir, "
            "validation rows, task), or train the student again; the analysis does not run models."
        )
    logits = np.load(path)
    return logits[:, 0] if get_task(task_name).is_regression else logits.argmax(-1)


def processor_counts(records) -> dict[str, int]:
    """How many runs each CPU model trained, by name (records keep their `processor` since 2026-12-05): a report
    lists them so that an audit sees which machines its comparisons ran on.

    Args:
        records: Teacher and student records (anything with a `processor` attribute).
    """
    return dict(sorted(Counter(record.processor or "unrecorded" for record in records).items()))


def check_teacher_scores(teachers: dict[str, TeacherRecord], logit_data: datasets.DatasetDict, task_name: str) -> None:
    """Refuse a teacher whose stored logits do not score what its record says, on validation or dev: a study that
    chooses the best teacher by its recorded dev score and reports its validation score would otherwise choose and
    report a teacher retrained, or a record edited, after extraction.

    Args:
        teachers: Each teacher folder's record.
        logit_data: The task's logit dataset (its validation and dev splits, with labels).
        task_name: The task.
    """
    task, metadata = get_task(task_name), read_metadata(logit_data["validation"])
    columns = [short_teacher_name(t.name, task_name) for t in metadata.teachers] if metadata else []
    for folder, record in teachers.items():
        name = short_teacher_name(record.name, task_name)
        for split, recorded in (("validation", record.validation_score), ("dev", record.dev_score)):
            if name not in columns or recorded is None or split not in logit_data:
                continue
            rows = logit_data[split]
            logits = teacher_logits_array(rows)[:, columns.index(name)]
            stored = compute_task_metrics(task, logits, np.asarray(rows["label"][:]))[task.metric]
            if not abs(stored - recorded) <= SCORE_TOLERANCE:
                raise ValueError(
                    f"{task_name}: teacher {name} ({folder}) records {split} {task.metric} {recorded:.4f}, and its "
                    f"logits in the study's logit dataset score {stored:.4f} (tolerance {SCORE_TOLERANCE}): the "
                    "record is not the stored teacher's (retrained or edited after extraction?)."
                )
