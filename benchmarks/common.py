"""Shared set-up for the benchmarks: real SST-2 rows, the real MiniLM / MPNet models, a 3-layer student,
teacher logits from real (TF-IDF) teachers, and side-by-side timing with alternating repetitions."""

from __future__ import annotations

import os
import statistics
import sys
import time
import warnings
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from transformers import PrinterCallback, TrainerCallback

ROOT = Path(__file__).resolve().parents[1]
GLUE = os.environ.get("GLUE_DIR", str(ROOT.parent / "shared" / "data" / "glue"))
# TrainingArguments for a timed run: no logging, saving, reporting or progress bar inside the measured time.
QUIET = dict(report_to="none", save_strategy="no", logging_strategy="no", disable_tqdm=True)
sys.path.insert(0, str(ROOT))

from distill_trainer import attach_teacher_logits  # noqa: E402
from distill_trainer.study.runs import processor_name  # noqa: E402
from distill_trainer.study.tasks import get_task, load_task_split, task_texts  # noqa: E402
from distill_trainer.study.teachers import SklearnTeacher  # noqa: E402
from distill_trainer.study.training import load_for_task, student_from_layers, tokenize_task  # noqa: E402

SST2 = get_task("sst2")


def sst2_rows(split: str, rows: int | None = None):
    return load_task_split(SST2, split, GLUE, rows)


def student(model: str = "all-MiniLM-L6-v2", layers=(0, 2, 4), random_init: str | None = None):
    """The study's student: 3 layers of pretrained all-MiniLM-L6-v2 (with its tokenizer); with `random_init` (a
    folder with its config and tokenizer) the same architecture with random weights, where weights cannot travel."""
    if random_init:
        from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

        torch.manual_seed(0)
        config = AutoConfig.from_pretrained(random_init, **SST2.label_config)
        tokenizer, model = (
            AutoTokenizer.from_pretrained(random_init),
            AutoModelForSequenceClassification.from_config(config),
        )
    else:
        tokenizer, model = load_for_task(model, SST2)
    return tokenizer, student_from_layers(model, list(layers))


def logit_dataset(rows: int, teachers: int = 3, max_length: int = 64, tokenizer=None):
    """`rows` real SST-2 training rows with the logits of `teachers` real TF-IDF teachers (fitted on other rows)."""
    data = sst2_rows("train", 12_000)
    fit_rows = data.select(range(rows, len(data)))
    logits = []
    for i in range(teachers):  # different regularisation: different, real teachers
        teacher = SklearnTeacher.fit(task_texts(SST2, fit_rows), fit_rows["label"][:], C=[4.0, 0.5, 16.0][i % 3])
        logits.append(teacher(task_texts(SST2, data.select(range(rows)))))
    dataset = attach_teacher_logits(
        data.select(range(rows)),
        np.stack(logits, 1),
        [f"tfidf-{i}" for i in range(teachers)],
        SST2.label_names,
        ["idx", "sentence"],
        task="sst2",
    )
    return tokenize_task(dataset, tokenizer, SST2, max_length) if tokenizer is not None else dataset


def alternate(candidates: dict[str, Callable[[], float]], repetitions: int) -> dict[str, float]:
    """Run each candidate once per repetition, in alternating order, and return the median of what each
    returns (a duration, or a tuple led by one: the run of median duration), so drift in machine load hits every
    candidate alike. An odd number of repetitions keeps the median one run's."""
    results = {name: [] for name in candidates}
    for repetition in range(repetitions):
        order = list(candidates) if repetition % 2 == 0 else list(reversed(candidates))
        for name in order:
            results[name].append(candidates[name]())
    return {name: median_run(values) for name, values in results.items()}


def median_run(values: list):
    """The median of durations, or of tuples led by one the run of median duration (the lower one of an even count).

    Args:
        values: One candidate's results, one per repetition.
    """
    if not isinstance(values[0], tuple):
        return statistics.median(values)
    return sorted(values, key=lambda value: value[0])[(len(values) - 1) // 2]


def timed(function: Callable[[], object]) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def header(title: str) -> None:
    print(f"\n## {title}\n")
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU: {processor_name()}"
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    flags = ", ".join(f"{flag} {'yes' if f' {flag}' in cpuinfo else 'no'}" for flag in ("avx512_bf16", "amx_bf16"))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {device}; CPU {flags}\n")


class StepClock(TrainerCallback):
    """Wall time at each step's end: data loading, forward, backward and optimizer step."""

    def __init__(self):
        self.marks = []

    def on_step_end(self, args, state, control, **kwargs):
        if torch.cuda.is_available():  # the step's own work, not the next one's; not counted as the step's sync
            mode = torch.cuda.get_sync_debug_mode()
            torch.cuda.set_sync_debug_mode(0)
            torch.cuda.synchronize()
            torch.cuda.set_sync_debug_mode(mode)
        self.marks.append(time.perf_counter())


def measured(make_trainer, warmup: int = 2) -> tuple[float, float, float, dict]:
    """(median s/step after `warmup` steps, peak CUDA memory in GiB, synchronisations per step, and per step at
    each source line that synchronised) of one run; the last three only on CUDA."""
    trainer, clock = make_trainer(), StepClock()
    trainer.remove_callback(PrinterCallback)
    trainer.add_callback(clock)
    syncs, peak, sites = float("nan"), float("nan"), {}
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        torch.cuda.set_sync_debug_mode("warn")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.train()
    if torch.cuda.is_available():
        torch.cuda.set_sync_debug_mode("default")
        peak = torch.cuda.max_memory_allocated() / 2**30
        found = [w for w in caught if "synchroniz" in str(w.message)]
        syncs = len(found) / trainer.state.global_step
        lines = Counter(f"{os.path.basename(w.filename)}:{w.lineno}" for w in found)
        sites = {line: count / trainer.state.global_step for line, count in lines.most_common()}
    gaps = [b - a for a, b in zip(clock.marks, clock.marks[1:], strict=False)][warmup:]
    if not gaps:
        raise ValueError(f"Too few steps to time: {len(clock.marks)} run, the first {warmup + 1} are not timed.")
    del trainer
    return statistics.median(gaps), peak, syncs, sites


def print_sync_sites(results: dict) -> None:
    """Where each candidate synchronised host and device (per step), beside the lines all of them share."""
    for name, (*_, sites) in results.items():
        if sites:
            print(f"- {name}: " + ", ".join(f"{line} x{count:.1f}" for line, count in sites.items()))
