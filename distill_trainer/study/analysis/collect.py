"""Reading a study folder: the runs' records, the T x alpha grids, and each student's validation predictions.

Layout read: `<study_dir>/<task>/{teacher-*/teacher_info.json, logits/, student-*/eval_results.json,
sweep-*/grid.csv}`. A student folder's validation logits (`validation_logits.npy`) are used when present,
otherwise computed once from the saved student and cached there.
"""

from __future__ import annotations

import glob
import os

import datasets
import numpy as np
import pandas as pd

from ..runs import VALIDATION_LOGITS_FILE, StudentResult, TeacherRecord
from ..tasks import get_task
from ..training import load_for_task, tokenize_task


def collect_runs(study_dir: str) -> pd.DataFrame:
    """One row per teacher and per student run found under `study_dir` (the master results table)."""
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
    for results_path in sorted(glob.glob(os.path.join(study_dir, "*", "student-*", StudentResult.FILE))):
        results = StudentResult.load(results_path)
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
    return pd.DataFrame(rows)


def collect_grids(study_dir: str) -> pd.DataFrame:
    """Every T x alpha grid (`grid.csv` of recipes/sweep.py) under `study_dir`, named by its sweep's folder; a
    sweep over several methods (`--methods`) gives one grid per method, named `<folder>: <method>`."""
    frames = []
    for path in sorted(glob.glob(os.path.join(study_dir, "**", "grid.csv"), recursive=True)):
        frame, folder = pd.read_csv(path), os.path.dirname(path)
        several = "method" in frame and frame["method"].nunique() > 1
        names = [f"{os.path.basename(folder)}: {m}" for m in frame["method"]] if several else os.path.basename(folder)
        frames.append(frame.assign(grid=names, grid_dir=folder))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def student_predictions(run_dir: str, validation: datasets.Dataset, task_name: str) -> np.ndarray:
    """A student's predictions on the validation rows (class ids; scores `[n]` for regression): from its cached
    logits, else computed from the saved model."""
    path = os.path.join(run_dir, VALIDATION_LOGITS_FILE)
    if not os.path.isfile(path):
        from transformers import Trainer, TrainingArguments

        results = StudentResult.load(run_dir)
        task = get_task(task_name)
        tokenizer, model = load_for_task(run_dir, task)
        rows = validation.select(range(results.eval_rows or len(validation)))
        trainer = Trainer(
            model=model,
            processing_class=tokenizer,
            args=TrainingArguments(
                output_dir=os.path.join(run_dir, "analysis-tmp"),
                report_to="none",
                per_device_eval_batch_size=64,
                use_cpu=True,
                disable_tqdm=True,
            ),
        )
        logits = trainer.predict(tokenize_task(rows, tokenizer, task, results.max_length or 128)).predictions
        np.save(path, logits.astype(np.float32))
    logits = np.load(path)
    return logits[:, 0] if get_task(task_name).is_regression else logits.argmax(-1)
