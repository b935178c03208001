"""The causal study of one task (issue 31): its data folder -> two task teachers fine-tuned from the base model ->
one top-k extraction at the largest k, the smaller k cut from it -> every student run (methods x seeds, the k grid,
dense online references with the teachers live). Finished steps are reused only for the same question, so an
interrupted study resumes; a step left by another question is refused, naming what differs."""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import replace
from functools import partial

from transformers import TrainingArguments

from ..config import DistillationConfig
from ..topk import read_topk_metadata
from .args import StudentArguments, TaskArguments, with_overrides
from .causal_data import CAUSAL_LM_TASK, CausalLMArguments, load_causal_tokenizer_and_config
from .causal_lm import distill_causal_student, extract_topk_to_disk
from .causal_storage import fit_mixture_weights, folder_bytes, read_record, top1_agreement, truncate_topk
from .causal_study_args import CausalStudyArguments, data_fingerprint, prepare_or_reuse
from .causal_teacher import train_causal_teacher
from .extraction import save_dataset_atomically
from .logit_data import load_logit_dataset
from .questions import causal_question, check_same_question, question_differences, run_question
from .runs import StudentResult, TeacherRecord, display_name, method_options, save_json

logger = logging.getLogger(__name__)

COLUMNS = CausalLMArguments(prompt_column="prompt", completion_column="completion")
RESULTS_FILE = "results.csv"  # one row per teacher and run


def agreement_path(args: CausalStudyArguments) -> str:
    """`teachers.json`: the teachers' names and pairwise top-1 agreement on dev and validation (how they differ).

    Args:
        args: The study's arguments (`task_root` is the task's folder).
    """
    return os.path.join(args.task_root, "teachers.json")


def task_arguments(args: CausalStudyArguments, data: str, max_train_rows: int | None = None) -> TaskArguments:
    """The `--task causal_lm` options every step reads the data folder with.

    Args:
        args: The study's arguments (`max_length`).
        data: The task's data folder (`prepare_or_reuse`'s).
        max_train_rows: Keep only the first training rows (None: all).
    """
    return TaskArguments(task=CAUSAL_LM_TASK, data=data, max_length=args.max_length, max_train_rows=max_train_rows)


def teacher_or_reuse(args, data: str, index: int, config: DistillationConfig) -> tuple[str, TeacherRecord]:
    """Task teacher `index` (its learning rate and share of the training pairs), fine-tuned from the base model in
    its own folder and early-stopped on dev, or the finished one there when it answers the same question.

    Args:
        args: The study's arguments (`CausalStudyArguments`: base model, the teachers' learning rates, shares of the
            training rows, epochs and patience).
        data: The task's data folder (holding `train.jsonl`).
        index: Which teacher, counted from 0 (its place in `teacher_learning_rates`).
        config: The students' configuration, whose batch sizes and schedule the teacher shares.
    """
    rate, share = args.teacher_learning_rates[index], args.teacher_train_fractions[index]
    folder = os.path.join(args.task_root, f"teacher-{index + 1}-lr{rate:g}" + (f"-rows{share:g}" if share < 1 else ""))
    with open(os.path.join(data, "train.jsonl")) as handle:
        train_rows = sum(1 for _ in handle)
    rows = None if share == 1 else max(1, round(share * train_rows))
    training = with_overrides(
        config,
        TrainingArguments,
        output_dir=folder,
        learning_rate=rate,
        num_train_epochs=args.teacher_epochs,
        max_steps=args.teacher_max_steps,
    )
    name = f"{display_name(args.base_model)}-{args.task}-{os.path.basename(folder).removeprefix('teacher-')}"
    question = run_question(
        training,
        task={"task": args.task, "max_length": args.max_length, "max_train_rows": rows},
        teacher={"base_model": args.base_model, "name": name, "patience": args.teacher_patience},
        inputs={"data": data_fingerprint(data)},
    )
    if os.path.isfile(os.path.join(folder, TeacherRecord.FILE)):
        found = TeacherRecord.load(folder)
        if check_same_question(folder, found.question, question):
            return folder, found
        raise ValueError(f"{folder} holds a teacher recorded without its question: remove it to train it again.")
    record = train_causal_teacher(
        task_arguments(args, data, rows), COLUMNS, args.base_model, training, name, args.teacher_patience
    )
    record = replace(record, question=question)
    record.save(folder)
    return folder, record


def topk_or_reuse(folder: str, question: dict, build) -> dict:
    """The top-k dataset in `folder` with its record `<folder>.json` (`question`, `wall_time_s`, `bytes`): reused
    when that record asks the same question; else `build()` writes it there (replacing a top-k dataset the tool
    wrote for another question, with a warning) and the record is written last.

    Args:
        folder: Where the top-k dataset is (or goes).
        question: What the dataset answers: teachers, data fingerprint, max length, dtype, k.
        build: Writes the dataset to `folder` when called with no arguments.
    """
    record_path = f"{folder}.json"
    found = read_record(record_path)
    if found is not None and os.path.isdir(folder):
        differ = question_differences(found["question"], question)
        if not differ:
            return found
        logger.warning("%s holds other teachers, rows or k (%s): writing it again.", folder, list(differ)[:4])
    started = time.perf_counter()
    build()
    record = {"question": question, "wall_time_s": time.perf_counter() - started, "bytes": folder_bytes(folder)}
    save_json(record, record_path)
    return record


def cut_topk(source: str, target: str, k: int, tokenizer) -> None:
    """Write the top-k dataset at `k` cut from the one in `source` (`truncate_topk`) to `target`, atomically.

    Args:
        source: The folder of the top-k dataset at the larger k.
        target: The folder to write.
        k: Tokens kept per position, at most the source's k.
        tokenizer: The teachers' tokenizer.
    """
    save_dataset_atomically(truncate_topk(load_logit_dataset(source), k, tokenizer), target)


def student_or_reuse(task_args, student: StudentArguments, config: DistillationConfig, live=None) -> StudentResult:
    """`distill_causal_student`, unless `config.output_dir` already holds a run of the same question.

    Args:
        task_args: `--data`, row limits and `--max_length` (`task_arguments`).
        student: The logit dataset, the student model and the layers kept.
        config: The run's configuration (`output_dir` is its folder).
        live: Live teachers' folders for a dense online run (None: the stored top-k).
    """
    if not os.path.isfile(os.path.join(config.output_dir, StudentResult.FILE)):
        return distill_causal_student(task_args, COLUMNS, student, config, teacher_models=live)
    found = StudentResult.load(config.output_dir)
    logit_data = load_logit_dataset(student.logit_dataset)
    asked = causal_question(task_args, COLUMNS, student, config, logit_data, live)
    recorded_inputs = (found.question or {}).get("inputs") or {}
    if recorded_inputs and not any("teachers" in split for split in recorded_inputs.values()):
        logger.warning("%s was recorded before its teachers were in its question: not compared.", config.output_dir)
        for split in asked["inputs"].values():
            split.pop("teachers", None)
    if not check_same_question(config.output_dir, found.question, asked):
        raise ValueError(f"{config.output_dir} holds a run recorded without its question: remove it to train again.")
    return found


def student_runs(args: CausalStudyArguments, n_teachers: int, best: int, largest: int) -> list[tuple[str, str, int]]:
    """(run name, method, k) of every student per seed: the methods at the largest k (`single` once per teacher),
    the k grid for `k_grid_methods` (`best_single`: the teacher with the best dev likelihood), and the dense online
    references (k None: the teachers live).

    Args:
        args: The study's arguments (`methods`, `k_grid`, `k_grid_methods`, `dense_methods`).
        n_teachers: How many teachers the top-k dataset holds (`single` runs once per teacher).
        best: The index of the teacher with the best dev likelihood (`best_single`).
        largest: The largest k of the grid, at which every method runs.
    """
    runs = []
    for method in args.methods:
        if method == "none":
            runs.append(("none", "none", None))
        elif method == "single":
            runs += [(f"single-{i}-k{largest}", f"single-{i}", largest) for i in range(n_teachers)]
        else:
            runs.append((f"{method}-k{largest}", method, largest))
    for k in sorted(set(args.k_grid) - {largest}):
        for method in args.k_grid_methods:
            runs.append((f"{method}-k{k}", f"single-{best}" if method == "best_single" else method, k))
    for method in args.dense_methods:
        runs.append((f"{method}-dense", f"single-{best}" if method == "best_single" else method, None))
    return runs


def run_causal_study(args: CausalStudyArguments, config: DistillationConfig):
    """The whole study of `args.task`; returns its table (one row per teacher and student run, also written to
    `<study_dir>/<task>/results.csv`): validation per-token NLL and perplexity, dev score, k, storage bytes and
    wall times (extraction and training).

    Args:
        args: What the study asks (`CausalStudyArguments`: data, teachers, methods, k grid, seeds).
        config: The students' `DistillationConfig` (and the task teachers' batch sizes and schedule).
    """
    import pandas as pd

    data = prepare_or_reuse(args)
    task_args = task_arguments(args, data)
    teachers, questions = [args.base_model] if args.include_base_teacher else [], []
    questions += [{"teacher": args.base_model}] if args.include_base_teacher else []
    for index in range(len(args.teacher_learning_rates)):
        folder, record = teacher_or_reuse(args, data, index, config)
        teachers.append(folder)
        questions.append({"teacher": record.question, "score": record.validation_score})
    largest = max(args.k_grid)
    base_question = {"teachers": questions, "data": data_fingerprint(data), "max_length": args.max_length}
    base_question["dtype"] = args.logprobs_dtype
    folders = {k: os.path.join(args.task_root, f"logits-k{k}") for k in args.k_grid}
    records = {
        largest: topk_or_reuse(
            folders[largest],
            {**base_question, "k": largest},
            lambda: extract_topk_to_disk(
                task_args,
                COLUMNS,
                teachers,
                folders[largest],
                k=largest,
                batch_size=args.extract_batch_size,
                logprobs_dtype=args.logprobs_dtype,
            ),
        )
    }
    tokenizer, _ = load_causal_tokenizer_and_config(args.base_model)
    for k in sorted(set(args.k_grid) - {largest}):
        cut = partial(cut_topk, folders[largest], folders[k], k, tokenizer)
        records[k] = topk_or_reuse(folders[k], {**base_question, "k": k, "cut_from_k": largest}, cut)
    stored = load_logit_dataset(folders[largest])
    metadata = read_topk_metadata(stored["train"])
    dev_scores = [teacher.dev_score for teacher in metadata.teachers]
    best = max(range(len(dev_scores)), key=lambda i: dev_scores[i])
    fitted = fit_mixture_weights(stored["dev"]) if "fitted" in args.methods else None
    agreement = {split: top1_agreement(stored[split]) for split in ("dev", "validation")}
    save_json({"teachers": [t.name for t in metadata.teachers], "top1_agreement": agreement}, agreement_path(args))
    rows = [
        {"run": f"teacher-{i}", "type": "teacher", "teacher": t.name, "dev_score": t.dev_score, "k": None}
        | {"dev_loss": -math.log(t.dev_score)}  # per-token NLL, as the students' (their scores are perplexities)
        | {"score": t.validation_score, "extraction_wall_s": records[largest]["wall_time_s"]}
        for i, t in enumerate(metadata.teachers)
    ]
    smallest = min(args.k_grid)
    for seed in args.seeds:
        for name, method, k in student_runs(args, len(teachers), best, largest):
            options = method_options("weighted" if method == "fitted" else method)
            if method == "fitted":
                options["fusion_weights"] = fitted
            folder = os.path.join(args.task_root, f"student-{name}-seed{seed}")
            student = StudentArguments(
                logit_dataset=folders[k or smallest], student_model=args.base_model, student_layers=args.student_layers
            )
            run_config = with_overrides(config, output_dir=folder, seed=seed, **options)
            live = teachers if name.endswith("-dense") else None
            result = student_or_reuse(task_args, student, run_config, live)
            rows.append(
                {"run": os.path.basename(folder), "type": "student", "method": method, "k": k, "seed": seed}
                | {"dense": live is not None, "score": result.score, "eval_loss": result.metrics.get("eval_loss")}
                | {"dev_score": result.dev_score, "dev_loss": (result.dev_metrics or {}).get("eval_loss")}
                | {"train_wall_s": result.train_runtime}
                | {"storage_bytes": None if k is None else records[k]["bytes"]}
            )
    table = pd.DataFrame(rows).assign(task=args.task)
    table.to_csv(os.path.join(args.task_root, RESULTS_FILE), index=False)
    return table
