"""Running teachers over a task's rows into one logit dataset: resumable per teacher, shared across
`accelerate` processes, written atomically."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from collections.abc import Sequence
from dataclasses import replace

import datasets
import numpy as np

from ..fitting import validation_fits
from ..logits import TeacherInfo, attach_teacher_logits, input_fingerprint, read_metadata, write_metadata
from ..topk import read_topk_metadata
from .dev_split import DEV_SPLIT_KEY
from .early_stopping import majority_shares
from .logit_data import load_logit_dataset  # noqa: F401 (its old home: still importable from here)
from .runs import TeacherRecord, display_name, is_collapsed, write_atomically
from .task_data import TaskData
from .tasks import GlueTask, compute_task_metrics, task_texts
from .teachers import folder_revision, load_teacher, process_state, sharded_logits

logger = logging.getLogger(__name__)


SCORE_TOLERANCE = 0.005  # a stored teacher's validation score may differ this much from its record (0.5 pp)


def build_logit_dataset(
    data: TaskData,
    teacher_paths: Sequence[str],
    batch_size: int = 64,
    cache_dir: str | None = None,
) -> datasets.DatasetDict:
    """Run every teacher over train, dev (where `data` has one) and validation; one `DatasetDict` with a
    `teacher_logits` column per split.

    Teachers are loaded one at a time. Under `accelerate launch` each process runs a contiguous share of
    the rows and all processes get every row back in order. With `cache_dir`, each finished teacher's
    logits are kept there (written atomically), so an interrupted extraction resumes at the first
    unfinished teacher. Each teacher's validation score, and its dev score (the `weighted` fusion's weight where
    there is one), are measured on the same rows for every teacher, so they are comparable. Before anything
    is written (the cache included), each teacher's logits are checked against its record
    (`check_teacher_reproduces`).

    Args:
        data: The task and its rows (`TaskArguments.task_data()` builds it from the recipes' options).
        teacher_paths: Teacher folders or Hub ids, in column order.
        batch_size: Inference batch size.
        cache_dir: Where finished teachers' logits are kept until the dataset is written (None: not kept).
    """
    task, splits = data.task, dict(data.splits)
    for path in teacher_paths:  # every teacher's rows checked before any teacher runs
        check_teacher_rows(path, data)
    input_columns = task.input_columns(splits["train"])
    fingerprints = {split: input_fingerprint(rows, input_columns) for split, rows in splits.items()}
    labels = {split: splits[split]["label"][:] for split in splits if split != "train"}
    fit_split = "dev" if "dev" in splits else "validation"  # what chooses and fits: never the reported rows if it can
    logits, infos = {split: [] for split in splits}, []
    for index, path in enumerate(teacher_paths):
        revision = folder_revision(path)  # a teacher retrained in its folder since is not reused
        key = {"teacher": path, "revision": revision, "max_length": data.max_length, "inputs": fingerprints}
        found = read_teacher_cache(cache_dir, index, key)
        if found is None:
            teacher = load_teacher(
                path, task.label_names, batch_size=batch_size, max_length=data.max_length, **data.loading
            )
            found = {
                "name": display_name(teacher.name),
                "revision": teacher.revision or revision,  # a Hub teacher's commit, else the folder's hash
                "logits": {split: sharded_logits(teacher, task_texts(task, rows)) for split, rows in splits.items()},
            }
            score = check_teacher_reproduces(task, path, found, labels["validation"], fingerprints["validation"])
            write_teacher_cache(cache_dir, index, key, found)
        else:
            logger.warning("Teacher %d (%s): reusing its logits from %s.", index, found["name"], cache_dir)
            score = check_teacher_reproduces(task, path, found, labels["validation"], fingerprints["validation"])
        for split in splits:
            logits[split].append(found["logits"][split])
        dev_score = (
            compute_task_metrics(task, found["logits"]["dev"], labels["dev"])[task.metric] if "dev" in splits else None
        )
        infos.append(
            TeacherInfo(
                name=found["name"],
                revision=found["revision"],
                metric=task.metric,
                validation_score=score,
                dev_score=dev_score,
            )
        )
    # Fitted once here and stored with every split's metadata, so `fitted` and `calibrate_teachers` students all
    # use the same fits: on the dev split where one is carved, else on the whole validation split.
    fitted = validation_fits(np.stack(logits[fit_split], axis=1), labels[fit_split])
    built = {}
    for split, rows in splits.items():
        built[split] = attach_teacher_logits(
            rows,
            np.stack(logits[split], axis=1),
            infos,
            task.label_names,
            input_columns,
            task=task.name,
            fitted=fitted,
            fit_split=fit_split,
        )
        if "dev" in splits:  # which training rows were set aside, so a student can check it uses the same split
            metadata = read_metadata(built[split])
            write_metadata(built[split], replace(metadata, extra={**metadata.extra, DEV_SPLIT_KEY: data.dev_split}))
    return datasets.DatasetDict(built)


def check_teacher_rows(path: str, data: TaskData) -> None:
    """Refuse a teacher whose record says it learnt from rows this extraction scores it on or hides: trained for
    another task, without this dev split (its dev score, `weighted`'s weights and the fits would be measured on rows
    it trained on), at another `max_length` than `data`'s (its logits would not be those its record scored), or,
    in the low-resource regime, on more labelled rows than `data` keeps (the students would receive the hidden
    labels through it). A teacher without a record (a Hub id) is not checked, nor one recorded before its
    `max_length` was.

    Args:
        path: The teacher's folder or Hub id.
        data: The task and rows being extracted (its `dev_split` and `labelled_rows` options).
    """
    if not os.path.isfile(os.path.join(path, TeacherRecord.FILE)):
        return
    record, task = TeacherRecord.load(path), data.task
    labelled = data.options.get("labelled_rows")
    problem = None
    if record.task != task.name:
        problem = f"it was trained on {record.task}, and this is {task.name}"
    elif data.dev_split is not None and (record.dev_split or {}).get("positions") != data.dev_split["positions"]:
        problem = "it was trained without this dev split, so it may have learnt the dev rows it would be chosen on"
    elif record.max_length is not None and record.max_length != data.max_length:
        problem = (
            f"it was trained and scored at --max_length {record.max_length}, and this extraction would read "
            f"{data.max_length} tokens per input (its logits would not be the ones its record scored)"
        )
    elif labelled is not None and (record.labelled_rows is None or record.labelled_rows > labelled):
        problem = (
            f"it learnt from {record.labelled_rows or 'all the'} labelled training rows, and --labelled_rows "
            f"{labelled} hides the others' labels from the students"
        )
    if problem:
        raise ValueError(
            f"Teacher {record.name} ({path}): {problem}. Extract with the options it was trained with, or train it "
            "again with these (--dev_rows, --labelled_rows, --max_length as here); nothing was extracted."
        )


def check_teacher_reproduces(
    task: GlueTask,
    path: str,
    found: dict,
    labels: Sequence,
    validation_fingerprint: str,
) -> float:
    """The teacher's validation score, recomputed from the logits about to be stored; refused (a `ValueError`
    naming the teacher and both scores) where it differs from the score its record (`teacher_info.json`)
    states for the same validation rows by more than `SCORE_TOLERANCE`, or where it is not a number (a
    regression teacher predicting one value has no correlation); a warning where the logits predict one class on
    >= 95% of the rows (a collapsed teacher). Logits that are not the teacher's own (a broken
    save/load, a wrong label order, the wrong `max_length`) would otherwise train every student silently wrong.

    Args:
        task: The task, for its metric and label space.
        path: The teacher's folder or Hub id; its record is read from a folder only.
        found: `{"name", "logits": {"validation": [n, n_labels] array, ...}}` for this teacher.
        labels: The validation labels, in row order.
        validation_fingerprint: `input_fingerprint` of the validation rows; a record of other rows (or one
            from before records kept it) is not compared, with a warning.
    """
    validation = found["logits"]["validation"]
    score = compute_task_metrics(task, validation, labels)[task.metric]
    if not np.isfinite(score):
        raise ValueError(
            f"Teacher {found['name']} ({path}): the logits extracted from it score {task.metric} {score} on the "
            "validation rows (a regression teacher that predicts one value for every row has no correlation): it "
            "gives students nothing to learn and no score to weigh or choose it by. Retrain it; nothing was written."
        )
    record = TeacherRecord.load(path) if os.path.isfile(os.path.join(path, TeacherRecord.FILE)) else None
    if record is None:
        logger.warning(
            "Teacher %s has no %s: its logits' score %.4f is not checked.", found["name"], TeacherRecord.FILE, score
        )
    elif record.validation_fingerprint != validation_fingerprint:
        logger.warning(
            "Teacher %s: its record's validation score was measured on %s validation rows; %.4f here is not "
            "compared with it.",
            found["name"],
            "unrecorded" if record.validation_fingerprint is None else "other",
            score,
        )
    elif not abs(score - record.validation_score) <= SCORE_TOLERANCE:
        raise ValueError(
            f"Teacher {found['name']} ({path}): the logits extracted from it score {task.metric} {score:.4f} on the "
            f"validation rows, but its {TeacherRecord.FILE} records {record.validation_score:.4f} on the same rows "
            f"(tolerance {SCORE_TOLERANCE}). They are not the teacher's own predictions (a save/load defect, another "
            "--max_length than it was trained with?); nothing was written."
        )
    if not task.is_regression:
        shares = majority_shares(validation, labels)
        if is_collapsed(**shares):
            logger.warning(
                "Teacher %s (%s) predicts one class on %.0f%% of the validation rows (the commonest label covers "
                "%.0f%%): a collapsed teacher gives students little to learn.",
                found["name"],
                path,
                100 * shares["majority_prediction_share"],
                100 * shares["majority_label_share"],
            )
    return score


def teacher_cache_path(cache_dir: str, index: int) -> str:
    """The cache file of teacher `index`: `<cache_dir>/teacher-<index>.npz`.

    Args:
        cache_dir: The per-teacher cache folder.
        index: The teacher's column, counted from 0.
    """
    return os.path.join(cache_dir, f"teacher-{index}.npz")


def read_teacher_cache(cache_dir: str | None, index: int, key: dict) -> dict | None:
    """A finished teacher's arrays (`found["logits"]`, by name), if cached for exactly this `key` (teacher, settings
    and input rows).

    Args:
        cache_dir: The per-teacher cache folder (None: no cache, nothing read).
        index: The teacher's column, counted from 0.
        key: What the cached arrays answer: the teacher, its settings and the input rows' fingerprints
            (JSON-serializable).
    """
    if cache_dir is None or not os.path.isfile(teacher_cache_path(cache_dir, index)):
        return None
    with np.load(teacher_cache_path(cache_dir, index)) as cached:
        info = json.loads(str(cached["info"]))
        if info["key"] != json.loads(json.dumps(key)):
            logger.warning(
                "Teacher %d: the cached logits in %s are for other inputs or settings; recomputing.", index, cache_dir
            )
            return None
        return {
            "name": info["name"],
            "revision": info["revision"],
            "logits": {name: cached[name] for name in cached.files if name != "info"},
        }


def write_teacher_cache(cache_dir: str | None, index: int, key: dict, found: dict) -> None:
    """Main process only; written under a temporary name and renamed, so a cache file is always whole.

    Args:
        cache_dir: The per-teacher cache folder (None: nothing is written).
        index: The teacher's column, counted from 0.
        key: What the cached arrays answer: the teacher, its settings and the input rows' fingerprints
            (JSON-serializable).
        found: The teacher's `name`, `revision` and `logits` (arrays by name).
    """
    state = process_state()
    if cache_dir is not None and state.is_main_process:
        os.makedirs(cache_dir, exist_ok=True)
        info = json.dumps({"key": key, "name": found["name"], "revision": found["revision"]})

        def write(partial: str) -> None:
            with open(partial, "wb") as handle:  # a file object: np.savez would append .npz to a name
                np.savez(handle, info=np.array(info), **found["logits"])

        write_atomically(teacher_cache_path(cache_dir, index), write)
    state.wait_for_everyone()


def extract_to_disk(
    data: TaskData,
    teacher_paths: Sequence[str],
    output_dir: str,
    batch_size: int = 64,
) -> datasets.DatasetDict:
    """`build_logit_dataset` with a resumable per-teacher cache beside `output_dir` (`write_with_teacher_cache`).

    Args:
        data: The task and its rows (`TaskArguments.task_data()`).
        teacher_paths: Teacher folders or Hub ids, in column order.
        output_dir: The logit dataset's folder: new, empty, or a logit dataset this tool wrote (replaced).
        batch_size: Inference batch size.
    """
    return write_with_teacher_cache(
        output_dir,
        len(teacher_paths),
        lambda cache_dir: build_logit_dataset(data, teacher_paths, batch_size, cache_dir),
    )


def write_with_teacher_cache(output_dir: str, n_teachers: int, build) -> datasets.DatasetDict:
    """`build(cache_dir)` with its per-teacher cache beside `output_dir`, the dataset written atomically by the main
    process; the cache's files go once the dataset is in place. `output_dir` must be new, empty, or a logit dataset
    this tool wrote: checked before any teacher runs.

    Args:
        output_dir: The logit dataset's folder.
        n_teachers: How many teacher cache files `build` may leave.
        build: Makes the `DatasetDict`, keeping each finished teacher in the cache folder it is given.
    """
    check_replaceable(output_dir)  # before any teacher runs
    cache_dir = f"{os.path.normpath(output_dir)}.teacher-cache"
    logit_dataset = build(cache_dir)
    state = process_state()
    if state.is_main_process:
        save_dataset_atomically(logit_dataset, output_dir)
        for index in range(n_teachers):  # only the files this tool wrote, then the folder if empty
            if os.path.isfile(teacher_cache_path(cache_dir, index)):
                os.remove(teacher_cache_path(cache_dir, index))
        if os.path.isdir(cache_dir) and not os.listdir(cache_dir):
            os.rmdir(cache_dir)
    state.wait_for_everyone()
    return logit_dataset


def check_replaceable(output_dir: str) -> None:
    """Refuse an `output_dir` that holds anything but a logit dataset this tool wrote (a project folder,
    `.`, a teacher): replacing the dataset deletes the folder, and nothing the tool did not create may go.

    Args:
        output_dir: The folder a logit dataset is about to be written to.
    """
    if not os.path.exists(output_dir) or (os.path.isdir(output_dir) and not os.listdir(output_dir)):
        return
    try:
        written_by_us = os.path.isfile(os.path.join(output_dir, "dataset_dict.json")) and all(
            read_metadata(split) is not None or read_topk_metadata(split) is not None
            for split in datasets.load_from_disk(output_dir).values()
        )
    except Exception:  # anything that does not load as a dataset is not ours to replace
        written_by_us = False
    if not written_by_us:
        raise ValueError(
            f"--output_dir {output_dir} exists and is not a logit dataset written by extract_logits; it would be "
            "replaced (deleted). Choose a new folder, or remove it yourself if you mean to."
        )
    foreign = not_written_by_save_to_disk(output_dir)
    if foreign:
        raise ValueError(
            f"--output_dir {output_dir} is a logit dataset, but it also holds what extract_logits did not write "
            f"({', '.join(foreign[:5])}{' ...' if len(foreign) > 5 else ''}), which replacing it would delete. Move "
            "that out, or choose a new folder."
        )


def not_written_by_save_to_disk(folder: str) -> list[str]:
    """The entries of a saved `DatasetDict` folder that neither `save_to_disk` nor `datasets` caches nor the card
    wrote (e.g. a user's notes or a student folder put inside it).

    Args:
        folder: A folder `datasets.load_from_disk` reads as a `DatasetDict`.
    """
    with open(os.path.join(folder, "dataset_dict.json")) as handle:
        splits = json.load(handle)["splits"]
    found = sorted(set(os.listdir(folder)) - {"dataset_dict.json", "README.md", *splits})
    for split in splits:
        for entry in sorted(os.listdir(os.path.join(folder, split))):
            if not re.fullmatch(r"(data|cache)-.*\.arrow|dataset_info\.json|state\.json", entry):
                found.append(f"{split}/{entry}")
    return found


def save_dataset_atomically(dataset: datasets.DatasetDict, output_dir: str) -> None:
    """Write next to `output_dir`, then rename: a crash never leaves a half-written dataset in its place.

    Args:
        dataset: The logit dataset.
        output_dir: Its folder: new, empty, or a logit dataset this tool wrote (replaced).
    """

    check_replaceable(output_dir)

    def write(partial: str) -> None:
        dataset.save_to_disk(partial)
        if os.path.exists(output_dir):
            shutil.rmtree(output_dir)

    write_atomically(output_dir, write)
