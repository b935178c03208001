"""What a run answers, its *question*: the whole configuration and its inputs by fingerprint. A finished run (a
student, a grid cell, a study teacher) is reused only for the same question, and a study's logit dataset only
for exactly its teachers and rows (issue 27: runs were reused for other `--max_eval_rows`, schedules, warmup...,
and logits for other teachers, because reuse compared a hand-kept list of settings)."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import asdict

from transformers import TrainingArguments

from ..config import DistillationConfig
from ..fusion import fusion_strategy
from ..logits import input_fingerprint, read_metadata
from ..topk import read_topk_metadata
from .args import StudyArguments, with_overrides
from .extraction import SCORE_TOLERANCE
from .logit_data import load_logit_dataset
from .runs import TeacherRecord
from .task_data import TaskData

logger = logging.getLogger(__name__)


# The configuration fields that cannot change what a run trains or how it is scored: where it is written and
# published, how it logs, how data is loaded, the device it runs on (recorded as `device`). They are left out of
# a run's `question`; every other field is in it, including any that a later transformers or distill-trainer adds.
NOT_THE_QUESTION = frozenset(
    {
        *("output_dir", "overwrite_output_dir", "resume_from_checkpoint", "run_name", "project", "report_to"),
        *("trackio_space_id", "trackio_bucket_id", "trackio_static_space_id", "disable_tqdm", "debug"),
        *("logging_dir", "logging_strategy", "logging_steps", "logging_first_step", "logging_nan_inf_filter"),
        *(
            "log_level",
            "log_level_replica",
            "log_on_each_node",
            "skip_memory_metrics",
            "include_num_input_tokens_seen",
        ),
        *(
            "save_strategy",
            "save_steps",
            "save_total_limit",
            "save_safetensors",
            "save_on_each_node",
            "save_only_model",
        ),
        *("push_to_hub", "hub_model_id", "hub_strategy", "hub_token", "hub_private_repo", "hub_always_push"),
        *("hub_revision", "dataloader_num_workers", "dataloader_pin_memory", "dataloader_persistent_workers"),
        *("dataloader_prefetch_factor", "dataloader_multiprocessing_context", "per_device_eval_batch_size"),
        *("eval_accumulation_steps", "torch_empty_cache_steps", "local_rank", "use_cpu", "ddp_timeout"),
    }
)


def run_question(config, **parts: dict) -> dict:
    """What a run answers: every field of its `TrainingArguments` / `DistillationConfig` but `NOT_THE_QUESTION`,
    plus `parts` (its task and data options, the fingerprints of its inputs), as JSON values. A finished run is
    reused only for the same question, so a field added later can never be forgotten by a hand-kept list.

    Args:
        config: The run's arguments (`to_dict()` already redacts tokens).
        parts: Sections to add, e.g. `task={...}`, `inputs={...}`.
    """
    settings = {key: value for key, value in config.to_dict().items() if key not in NOT_THE_QUESTION}
    return json.loads(json.dumps({"config": settings, **parts}, sort_keys=True, default=str))


def question_differences(recorded: dict, asked: dict) -> dict:
    """`{"section.field": (recorded, asked)}` for each setting that differs between two `run_question`s.

    Args:
        recorded: The question a finished run's record holds (JSON values).
        asked: The question of the run about to be made (JSON values).
    """
    differ = {}
    for section in sorted(set(recorded) | set(asked)):
        old, new = recorded.get(section), asked.get(section)
        if isinstance(old, dict) and isinstance(new, dict):
            for key in sorted(set(old) | set(new)):
                if old.get(key, "<absent>") != new.get(key, "<absent>"):
                    differ[f"{section}.{key}"] = (old.get(key, "<absent>"), new.get(key, "<absent>"))
        elif old != new:
            differ[section] = (old, new)
    return differ


def check_same_question(folder: str, recorded: dict | None, asked: dict) -> bool:
    """Whether the finished run in `folder` answers `asked`: True if its record's question is the same, False for
    a record from before questions were kept (the caller falls back to what such records hold); a `ValueError`
    naming every setting that differs otherwise, so that it is never reported as this run.

    Args:
        folder: The finished run's folder, as the error names it.
        recorded: The question its record holds (None: a record from before questions were kept).
        asked: The question of the run about to be made (`run_question`).
    """
    if recorded is None:
        return False
    differ = question_differences(recorded, json.loads(json.dumps(asked)))
    if differ:
        shown = "; ".join(f"{key}: {old!r} there, {new!r} asked" for key, (old, new) in list(differ.items())[:8])
        more = f" (and {len(differ) - 8} more)" if len(differ) > 8 else ""
        raise ValueError(
            f"{folder} holds a finished run of another question ({shown}{more}); it is not reused as this one. "
            "Use another --study_dir / --output_dir, or remove that folder."
        )
    return True


def student_question(data: TaskData, student: dict, config: DistillationConfig, logit_data) -> dict:
    """A student run's `run_question`: its whole configuration, its task and student options, and its inputs by
    content (the logit dataset's row fingerprints per split, and those of the teachers the method learns from:
    none for `none`, one for `single`), not by path: the same logits moved to another folder are the same
    question, other rows, teachers or `--data` are not, and adding a teacher leaves the baseline's question as is.

    Args:
        data: The task and its rows (`TaskData.question_options`; the data source enters through the rows'
            fingerprints).
        student: `student_model`, `student_layers` and `early_stopping_patience` (the logit dataset enters
            through its fingerprints).
        config: The run's `DistillationConfig`.
        logit_data: The loaded logit `DatasetDict`.
    """
    names = [name for name in (config.fusion, config.curriculum_fusion) if name and name != "none"]
    uses_fits = config.calibrate_teachers or any(fusion_strategy(name).fits_weights for name in names)
    inputs = {}
    for split, rows in logit_data.items():
        metadata = read_metadata(rows)
        if metadata is None:
            inputs[split] = {"dataset": rows._fingerprint}
            continue
        used = teachers_learnt_from(config, metadata.teacher_fingerprints or [])
        inputs[split] = {"rows": metadata.input_fingerprint, "teachers": used}
        if uses_fits:
            inputs[split]["fitted"] = metadata.fitted
    asked = {key: student[key] for key in ("student_model", "student_layers")}
    asked["labelled_rows"] = data.options.get("labelled_rows")  # where the option lived before the dev split
    if student.get("early_stopping_patience"):  # absent from the questions of runs from before it existed
        asked["early_stopping_patience"] = student["early_stopping_patience"]
    return run_question(config, task=data.question_options, student=asked, inputs=inputs)


def teachers_learnt_from(config: DistillationConfig, fingerprints: Sequence[str]) -> list[str]:
    """The teacher fingerprints a student's question holds: the teachers its method learns from (none for `none`,
    the one `teacher_index` names for `single`, all of them otherwise), so that adding a teacher leaves the
    baseline's and a single teacher's questions as they are.

    Args:
        config: The student's configuration (`fusion`, `curriculum_fusion`, `teacher_index`).
        fingerprints: Every teacher's fingerprint, in column order.
    """
    if all(name in (None, "", "none") for name in (config.fusion, config.curriculum_fusion)):
        return []
    if config.fusion == "single" and not config.curriculum_fusion and fingerprints:
        return [fingerprints[config.teacher_index]]
    return list(fingerprints)


def teacher_question(
    data: TaskData, teacher: str, config: DistillationConfig, study: StudyArguments, folder: str
) -> dict:
    """A study teacher's `run_question`: the arguments of its first attempt, the teacher and study options, and its
    rows by fingerprint (not by `--data` path).

    Args:
        data: The task and its rows (train, dev where carved, validation).
        teacher: The teacher's model name or path.
        config: The study's configuration; `study`: its plan (teacher epochs, patience, retries).
        folder: The teacher's folder.
    """
    first_attempt = with_overrides(
        config,
        TrainingArguments,
        output_dir=folder,
        num_train_epochs=study.teacher_epochs,
        learning_rate=study.teacher_learning_rate or config.learning_rate,
    )
    task = data.task
    rows = {
        split: input_fingerprint(split_rows, task.input_columns(split_rows))
        for split, split_rows in data.splits.items()
    }
    options = {"teacher": teacher, "patience": study.teacher_patience, "retries": study.teacher_collapse_retries}
    task_options = {
        "task": task.name,
        "max_train_rows": data.options.get("max_train_rows"),
        "max_length": data.max_length,
    }
    task_options.update(data.dev_options)
    if data.options.get("labelled_rows") is not None:  # low-resource teachers learn from the labelled rows alone
        task_options["labelled_rows"] = data.options["labelled_rows"]
    return run_question(first_attempt, task=task_options, teacher=options, inputs=rows)


def logits_of(
    logits_dir: str, records: Sequence[TeacherRecord], data: TaskData, revisions: Sequence[str | None] | None = None
) -> bool:
    """Whether the logit dataset in `logits_dir` holds exactly these teachers' logits, in this order, for the
    task's rows: their names, the validation scores their logits reproduce (`check_teacher_reproduces`
    made them equal to each teacher's record), their revisions where both are known (a teacher retrained in its
    folder to a score within the tolerance has another), and every split's rows' fingerprints. Otherwise (a teacher
    added, removed, re-trained, other rows) it is extracted again, with a warning: a study must never train its
    students on other teachers' logits than the ones its table lists.

    Args:
        logits_dir: The study's logit dataset folder.
        records: The study's teachers, in column order.
        data: The task and its rows.
        revisions: The teachers' revisions now (`teachers.folder_revision` of their folders), in column order;
            None, or a logit dataset from before local teachers had one: not compared.
    """
    task = data.task
    stored = load_logit_dataset(logits_dir)
    if set(stored) != set(data.splits):
        return False
    for split, logit_rows in stored.items():
        metadata = read_metadata(logit_rows)
        rows = data.splits[split]
        found = [(t.name, t.validation_score) for t in metadata.teachers] if metadata else []
        same = (
            metadata is not None
            and metadata.input_fingerprint == input_fingerprint(rows, task.input_columns(rows))
            and [name for name, _ in found] == [record.name for record in records]
            and all(
                score is not None and abs(score - record.validation_score) <= SCORE_TOLERANCE
                for (_, score), record in zip(found, records, strict=False)
            )
            and all(
                None in (stored.revision, now) or stored.revision == now
                for stored, now in zip(metadata.teachers, revisions or [None] * len(records), strict=False)
            )
        )
        if not same:
            logger.warning(
                "%s holds the logits of %s on other rows or teachers than asked (%s): extracting them again.",
                logits_dir,
                found,
                [(record.name, record.validation_score) for record in records],
            )
            return False
    return True


def causal_question(
    task_args, columns, student_args, config: DistillationConfig, logit_data, teacher_models=None
) -> dict:
    """A causal student's `run_question`: its whole configuration (the card reads its `kd_loss` there), its task,
    text and student options, its rows by fingerprint (`input_ids` per split) and the stored teachers it learns
    from (their top-k fingerprints: none for `none`, one for `single`), so that a student of other teachers'
    top-k is never reused as this one; live teachers by path, where there are any.

    Args:
        task_args: The task options (the data source and loading options are left out).
        columns: Which columns hold the text.
        student_args: The student options (the logit dataset's path and `check_against_data` are left out).
        config: The run's whole configuration.
        logit_data: The logit dataset's splits, whose `input_ids` are fingerprinted.
        teacher_models: The live teachers' paths (None or empty: the stored top-k).
    """
    task = {k: v for k, v in asdict(task_args).items() if k not in ("data", "trust_remote_code", "allow_pickle")}
    student = {k: v for k, v in asdict(student_args).items() if k not in ("logit_dataset", "check_against_data")}
    if teacher_models:
        student["live_teachers"] = list(teacher_models)
    inputs = {}
    for split, data in logit_data.items():
        stored = [] if teacher_models else read_topk_metadata(data).teacher_fingerprints  # live ones: by path
        rows = input_fingerprint(data, ["input_ids"])
        inputs[split] = {"rows": rows, "teachers": teachers_learnt_from(config, stored)}
    return run_question(config, task=task, text=asdict(columns), student=student, inputs=inputs)
