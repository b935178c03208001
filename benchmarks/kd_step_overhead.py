"""Benchmark 1: cost of a DistillationTrainer step (stored logits, each fusion) vs plain Trainer fine-tuning
of the same student on the same batches. Prints steps/second and the overhead of each fusion.

    python benchmarks/kd_step_overhead.py [--steps 20] [--repetitions 3]
"""

import argparse
import copy
import statistics
import time

from common import alternate, header, logit_dataset, student
from transformers import PrinterCallback, Trainer, TrainerCallback, TrainingArguments

from distill_trainer import DistillationConfig, DistillationTrainer

FUSIONS = {
    "average": {},
    "weighted": {"fusion_weights": [0.8, 0.7, 0.9]},
    "min_entropy": {},
    "single": {"teacher_index": 0},
    "gating": {},
}


class StepClock(TrainerCallback):
    """Wall time between consecutive step ends: data loading, forward, backward and optimizer step."""

    def __init__(self):
        self.marks = []

    def on_step_end(self, args, state, control, **kwargs):
        self.marks.append(time.perf_counter())


def step_time(make_trainer, warmup: int = 3) -> float:
    clock = StepClock()
    trainer = make_trainer()
    trainer.add_callback(clock)
    trainer.remove_callback(PrinterCallback)
    trainer.train()
    gaps = [b - a for a, b in zip(clock.marks, clock.marks[1:])][warmup:]
    return statistics.median(gaps)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument("--batch_size", type=int, default=32)
    options = parser.parse_args()
    header("KD step overhead: DistillationTrainer vs plain Trainer, 3-layer MiniLM student, SST-2 rows")
    tokenizer, base = student()
    data = logit_dataset(options.steps * options.batch_size, tokenizer=tokenizer)
    common = dict(
        output_dir="/tmp/bench-kd",
        per_device_train_batch_size=options.batch_size,
        max_steps=options.steps,
        learning_rate=5e-5,
        report_to="none",
        save_strategy="no",
        logging_strategy="no",
        disable_tqdm=True,
        seed=0,
        dataloader_pin_memory=False,
    )

    def plain():
        return Trainer(
            model=copy.deepcopy(base), args=TrainingArguments(**common), train_dataset=data, processing_class=tokenizer
        )

    def distill(fusion):
        return lambda: DistillationTrainer(
            model=copy.deepcopy(base),
            train_dataset=data,
            processing_class=tokenizer,
            args=DistillationConfig(**common, fusion=fusion, **FUSIONS[fusion]),
        )

    candidates = {"plain Trainer": lambda: step_time(plain)}
    candidates.update({fusion: (lambda f=fusion: step_time(distill(f))) for fusion in FUSIONS})
    medians = alternate(candidates, options.repetitions)
    baseline = medians["plain Trainer"]
    print(
        f"batch {options.batch_size}, median of {options.repetitions} alternating runs "
        f"x {options.steps - 4} timed steps\n"
    )
    print("| trainer | s/step | steps/s | vs plain Trainer |\n|---|---|---|---|")
    for name, seconds in medians.items():
        print(f"| {name} | {seconds:.4f} | {1 / seconds:.2f} | {100 * (seconds / baseline - 1):+.1f}% |")


if __name__ == "__main__":
    main()
