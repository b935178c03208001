"""Benchmark 1: cost of a DistillationTrainer step (stored logits, each fusion) vs plain Trainer fine-tuning
of the same student on the same batches. Prints steps/second and the overhead of each fusion.

    python benchmarks/kd_step_overhead.py [--steps 20] [--repetitions 3]
"""

import argparse
import copy

from common import QUIET, alternate, header, logit_dataset, measured, print_sync_sites, student
from transformers import Trainer, TrainingArguments

from distill_trainer import DistillationConfig, DistillationTrainer

FUSIONS = {
    "average": {},
    "weighted": {"fusion_weights": [0.8, 0.7, 0.9]},
    "min_entropy": {},
    "single": {"teacher_index": 0},
    "gating": {},
}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--random_init", default=None, help="MiniLM's config + tokenizer folder: random weights.")
    options = parser.parse_args()
    header("KD step overhead: DistillationTrainer vs plain Trainer, 3-layer MiniLM student, SST-2 rows")
    tokenizer, base = student(random_init=options.random_init)
    data = logit_dataset(options.steps * options.batch_size, tokenizer=tokenizer)
    common = dict(
        output_dir="/tmp/bench-kd",
        per_device_train_batch_size=options.batch_size,
        max_steps=options.steps,
        learning_rate=5e-5,
        **QUIET,
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

    candidates = {"plain Trainer": lambda: measured(plain)}
    candidates.update({fusion: (lambda f=fusion: measured(distill(f))) for fusion in FUSIONS})
    medians = alternate(candidates, options.repetitions)  # (s/step, peak CUDA GiB, syncs/step) per candidate
    baseline = medians["plain Trainer"][0]
    print(
        f"batch {options.batch_size}, median of {options.repetitions} alternating runs "
        f"x {options.steps - 3} timed steps\n"
    )
    print("| trainer | s/step | steps/s | vs plain Trainer | peak CUDA GiB | syncs/step |\n|---|---|---|---|---|---|")
    for name, (seconds, peak, syncs, _) in medians.items():
        print(
            f"| {name} | {seconds:.4f} | {1 / seconds:.2f} | {100 * (seconds / baseline - 1):+.1f}% | {peak:.2f} "
            f"| {syncs:.1f} |"
        )
    print_sync_sites(medians)


if __name__ == "__main__":
    main()
