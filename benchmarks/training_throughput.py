"""Benchmark 5: training throughput. One epoch of the demo's student (3-layer MiniLM, batch 32, SST-2 rows with
three real TF-IDF teachers' logits) under a plain `Trainer` with its defaults and under `DistillationTrainer` with
(a) the old settings (random sampler, float32), (b) length-grouped batches (the recipes' defaults), (c) bf16
autocast, (d) both (the recipes' defaults until bf16 became opt-in on 2026-12-06); then the same for fine-tuning
the MiniLM teacher. For each: median epoch time over alternating repetitions, the ratio to the old settings, and
the tokens the model processed (padding included) against the real tokens, i.e. the distance to the padding-free
limit.

    python benchmarks/training_throughput.py [--rows 1600] [--teacher_rows 1600] [--repetitions 3] [--sections ...]
"""

import argparse
import copy

from common import QUIET, SST2, alternate, header, logit_dataset, sst2_rows, student, timed
from transformers import DataCollatorWithPadding, PrinterCallback, Trainer, TrainingArguments

from distill_trainer import DistillationConfig, DistillationDataCollator, DistillationTrainer
from distill_trainer.config import bf16_available
from distill_trainer.study.training import TaskTrainer, load_for_task, tokenize_task

SETTINGS = {  # name -> (train_sampling_strategy, bf16)
    "old: random, fp32": ("random", False),
    "length-grouped (recipes)": ("group_by_length", False),
    "bf16": ("random", True),
    "length-grouped + bf16": ("group_by_length", True),
}


class TokenCountingCollator:
    """Counts the tokens the model is fed (padding included) and the real ones, batch by batch."""

    def __init__(self, collator):
        self.collator, self.processed, self.real = collator, 0, 0

    def __call__(self, features):
        batch = self.collator(features)
        self.processed += batch["attention_mask"].numel()
        self.real += int(batch["attention_mask"].sum())
        return batch


def run_epoch(make_trainer, collator, tokens: dict) -> float:
    counting = TokenCountingCollator(collator)
    trainer = make_trainer(counting)
    trainer.remove_callback(PrinterCallback)
    seconds = timed(trainer.train)
    tokens.update(processed=counting.processed, real=counting.real)
    return seconds


def args_for(cls, sampling: str, bf16: bool, batch_size: int, **extra):
    on_cpu = not __import__("torch").cuda.is_available()
    return cls(
        output_dir="/tmp/bench-throughput",
        per_device_train_batch_size=batch_size,
        num_train_epochs=1,
        learning_rate=1e-4,
        **QUIET,
        seed=0,
        train_sampling_strategy=sampling,
        bf16=bf16,
        use_cpu=on_cpu and bf16,
        dataloader_pin_memory=not on_cpu,
        **extra,
    )


def report(title: str, medians: dict, tokens: dict, old: str, pairs: list[tuple[str, str]]) -> None:
    print(f"\n### {title}\n")
    print("| run | epoch s | speed-up vs old | tokens processed / real | padding share |\n|---|---|---|---|---|")
    for name, seconds in medians.items():
        counts = tokens[name]
        print(
            f"| {name} | {seconds:.1f} | {medians[old] / seconds:.2f}x | {counts['processed'] / counts['real']:.2f} "
            f"| {1 - counts['real'] / counts['processed']:.1%} |"
        )
    for ours, plain in pairs:
        print(f"\n{ours} / {plain}: {medians[ours] / medians[plain]:.3f}x")


def evaluation_batch_sizes(base, tokenizer, data, options) -> None:
    """Evaluating the full SST-2 validation split (in row order) at several eval batch sizes, recipes' settings
    (float32)."""
    validation = tokenize_task(sst2_rows("validation"), tokenizer, SST2, options.max_length)
    sizes = [int(size) for size in options.eval_batch_sizes.split(",")]

    def evaluate(size):
        trainer = DistillationTrainer(
            model=copy.deepcopy(base),
            train_dataset=data,
            processing_class=tokenizer,
            args=args_for(
                DistillationConfig,
                "group_by_length",
                False,
                options.batch_size,
                per_device_eval_batch_size=size,
            ),
        )
        return timed(lambda: trainer.evaluate(validation))

    medians = alternate({size: (lambda s=size: evaluate(s)) for size in sizes}, options.repetitions)
    print(f"\n### Evaluation of {len(validation)} validation rows by eval batch size (float32)\n")
    print("| per_device_eval_batch_size | seconds | vs 8 |\n|---|---|---|")
    for size, seconds in medians.items():
        print(f"| {size} | {seconds:.2f} | {medians[sizes[0]] / seconds:.2f}x |")


def student_epochs(base, tokenizer, data, options) -> None:
    plain_data = data.remove_columns("teacher_logits")
    tokens = {}

    def distill(sampling, bf16):
        return lambda collator: DistillationTrainer(
            model=copy.deepcopy(base),
            train_dataset=data,
            processing_class=tokenizer,
            data_collator=collator,
            args=args_for(DistillationConfig, sampling, bf16, options.batch_size, fusion="average"),
        )

    def plain(cls, sampling, bf16):
        return lambda collator: cls(
            model=copy.deepcopy(base),
            train_dataset=plain_data,
            processing_class=tokenizer,
            data_collator=collator,
            args=args_for(TrainingArguments, sampling, bf16, options.batch_size),
        )

    distill_collator = DistillationDataCollator(tokenizer)
    text_collator = DataCollatorWithPadding(tokenizer)
    candidates = {"plain Trainer, its defaults": (plain(Trainer, "random", False), text_collator)}
    candidates |= {f"distill, {name}": (distill(*setting), distill_collator) for name, setting in SETTINGS.items()}
    candidates["plain Trainer, length-grouped"] = (plain(TaskTrainer, "group_by_length", False), text_collator)
    candidates["plain Trainer, length-grouped + bf16"] = (plain(TaskTrainer, "group_by_length", True), text_collator)
    medians = alternate(
        {
            name: (lambda n=name, c=candidate: run_epoch(c[0], c[1], tokens.setdefault(n, {})))
            for name, candidate in candidates.items()
        },
        options.repetitions,
    )
    report(
        "Student epoch (3-layer MiniLM, fusion average)",
        medians,
        tokens,
        "distill, old: random, fp32",
        [
            ("distill, old: random, fp32", "plain Trainer, its defaults"),
            ("distill, length-grouped (recipes)", "plain Trainer, length-grouped"),
            ("distill, length-grouped + bf16", "plain Trainer, length-grouped + bf16"),
        ],
    )


def teacher_epochs(options) -> None:
    teacher_tokenizer, teacher = load_for_task("all-MiniLM-L6-v2", SST2)
    rows = tokenize_task(sst2_rows("train", options.teacher_rows), teacher_tokenizer, SST2, options.max_length)
    teacher_collator = DataCollatorWithPadding(teacher_tokenizer)

    def fine_tune(sampling, bf16):
        return lambda collator: TaskTrainer(
            model=copy.deepcopy(teacher),
            train_dataset=rows,
            data_collator=collator,
            processing_class=teacher_tokenizer,
            args=args_for(TrainingArguments, sampling, bf16, options.batch_size),
        )

    tokens = {}
    candidates = {f"teacher, {name}": fine_tune(*setting) for name, setting in SETTINGS.items()}
    medians = alternate(
        {
            name: (lambda n=name, make=make: run_epoch(make, teacher_collator, tokens.setdefault(n, {})))
            for name, make in candidates.items()
        },
        options.repetitions,
    )
    report("Teacher fine-tuning epoch (6-layer all-MiniLM-L6-v2)", medians, tokens, "teacher, old: random, fp32", [])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1600)
    parser.add_argument("--teacher_rows", type=int, default=1600)
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--max_length", type=int, default=64)
    parser.add_argument("--eval_batch_sizes", default="8,32,64,128")
    parser.add_argument("--sections", default="student,eval,teacher", help="which of student, eval, teacher to run")
    options = parser.parse_args()
    header("Training throughput: sampler and precision, DistillationTrainer vs plain Trainer")
    print(
        f"bf16_available(): {bf16_available()}; {options.rows} student rows, {options.teacher_rows} teacher rows, "
        f"batch {options.batch_size}, max_length {options.max_length}, median of {options.repetitions} alternating "
        "repetitions of one epoch"
    )

    sections = options.sections.split(",")
    tokenizer, base = student()
    data = logit_dataset(options.rows, tokenizer=tokenizer, max_length=options.max_length)
    if "student" in sections:
        student_epochs(base, tokenizer, data, options)
    if "eval" in sections:
        evaluation_batch_sizes(base, tokenizer, data, options)
    if "teacher" in sections:
        teacher_epochs(options)


if __name__ == "__main__":
    main()
