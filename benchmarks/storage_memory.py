"""Benchmark 4: storage of the logit dataset (bytes per example) and peak memory of a distillation run vs
plain fine-tuning of the same student (each run in its own process, peak resident set size).

    python benchmarks/storage_memory.py [--rows 2000] [--teachers 3]
"""

import argparse
import os
import subprocess
import sys
import tempfile

from common import header, logit_dataset


def folder_bytes(folder: str) -> int:
    return sum(os.path.getsize(os.path.join(root, name)) for root, _, names in os.walk(folder) for name in names)


def peak_memory_of(kind: str, steps: int) -> float:
    """Peak RSS in MiB of a child process that trains the 3-layer student `steps` steps (plain or distill)."""
    code = f"""
import copy, resource, sys
sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r})
from common import logit_dataset, student
from transformers import PrinterCallback, Trainer, TrainingArguments
from distill_trainer import DistillationConfig, DistillationTrainer
tokenizer, model = student()
data = logit_dataset({steps} * 32, tokenizer=tokenizer)
common = dict(output_dir="/tmp/bench-memory", per_device_train_batch_size=32, max_steps={steps}, report_to="none",
              save_strategy="no", logging_strategy="no", disable_tqdm=True, dataloader_pin_memory=False)
if {kind!r} == "plain":
    trainer = Trainer(model=model, args=TrainingArguments(**common), train_dataset=data, processing_class=tokenizer)
else:
    trainer = DistillationTrainer(model=model, args=DistillationConfig(**common, fusion={kind!r}), train_dataset=data,
                                  processing_class=tokenizer)
trainer.remove_callback(PrinterCallback)
trainer.train()
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""
    finished = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(finished.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--teachers", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    options = parser.parse_args()
    header(f"Storage and memory: logit dataset of {options.rows} SST-2 rows x {options.teachers} teachers")
    with tempfile.TemporaryDirectory() as folder:
        data = logit_dataset(options.rows, options.teachers)
        data.save_to_disk(os.path.join(folder, "with"))
        data.remove_columns("teacher_logits").save_to_disk(os.path.join(folder, "without"))
        with_logits, without = (
            folder_bytes(os.path.join(folder, "with")),
            folder_bytes(os.path.join(folder, "without")),
        )
    extra = (with_logits - without) / options.rows
    print("| | bytes per example |\n|---|---|")
    print(f"| task rows alone (idx, sentence, label) | {without / options.rows:.1f} |")
    print(
        f"| teacher_logits column, float32 ({options.teachers} x 2 values) | {extra:.1f} "
        f"(raw values: {options.teachers * 2 * 4}) |"
    )
    print("\nfloat16 storage is not offered: at this size the column costs less than the text it describes.\n")
    print(f"| run ({options.steps} steps, batch 32) | peak RSS (MiB) |\n|---|---|")
    peaks = {kind: peak_memory_of(kind, options.steps) for kind in ("plain", "average", "gating")}
    for kind, mib in peaks.items():
        print(f"| {'plain Trainer' if kind == 'plain' else 'DistillationTrainer, ' + kind} | {mib:.0f} |")
    print(
        f"\npeak memory ratio distill/plain: average {peaks['average'] / peaks['plain']:.3f}, "
        f"gating {peaks['gating'] / peaks['plain']:.3f}"
    )


if __name__ == "__main__":
    main()
