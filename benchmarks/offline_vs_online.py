"""Benchmark 2: offline distillation (stored logits, DistillationTrainer) vs online distillation (the
teachers run forward on every batch, as TextBrewer-style trainers do), same student, same steps.

Teachers: all-MiniLM-L6-v2 and all-mpnet-base-v2 (each with its own tokenizer); student: 3 layers of
MiniLM. Prints the measured wall-time ratio and the ratio predicted from the teachers' forward cost.

    python benchmarks/offline_vs_online.py [--steps 12] [--repetitions 3]
"""

import argparse
import copy
import statistics
from functools import partial

import torch
from common import QUIET, SST2, alternate, header, logit_dataset, student, timed
from transformers import AutoModelForSequenceClassification, AutoTokenizer, PrinterCallback

from distill_trainer import DistillationConfig, DistillationTrainer
from distill_trainer.study.packaged_models import resolve_model

TEACHERS = ["all-MiniLM-L6-v2", "all-mpnet-base-v2"]


class OnlineTeachers:
    """Teachers kept in memory: each batch's sentences are tokenized per teacher and run in inference mode."""

    def __init__(self, names, max_length):
        self.tokenizers = [AutoTokenizer.from_pretrained(resolve_model(n)) for n in names]
        self.models = [
            AutoModelForSequenceClassification.from_pretrained(resolve_model(n), **SST2.label_config).eval()
            for n in names
        ]
        self.max_length = max_length

    @torch.inference_mode()
    def __call__(self, sentences):
        return torch.stack(
            [
                model(
                    **tokenizer(
                        sentences, truncation=True, max_length=self.max_length, padding=True, return_tensors="pt"
                    )
                ).logits
                for tokenizer, model in zip(self.tokenizers, self.models, strict=False)
            ],
            dim=1,
        )


class OnlineDistillationTrainer(DistillationTrainer):
    """The same loss, but the teacher logits come from running the teachers on the batch's raw sentences."""

    def __init__(self, teachers, sentences, **kwargs):
        super().__init__(**kwargs)
        self.teachers, self.sentences = teachers, sentences

    def _set_signature_columns_if_needed(self):
        """Keep `idx` in the batches: it names each row's sentence for the teachers."""
        super()._set_signature_columns_if_needed()
        self._signature_columns.append("idx")

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        rows = inputs.pop("idx").tolist()
        inputs[self.args.teacher_logits_column] = self.teachers([self.sentences[i] for i in rows]).clone()
        return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument("--batch_size", type=int, default=32)
    options = parser.parse_args()
    header("Offline (stored logits) vs online (teachers run every batch) distillation, SST-2 rows")
    tokenizer, base = student()
    data = logit_dataset(options.steps * options.batch_size, teachers=len(TEACHERS), tokenizer=tokenizer)
    sentences = dict(zip(data["idx"][:], data["sentence"][:], strict=False))
    teachers = OnlineTeachers(TEACHERS, 64)
    config = DistillationConfig(
        output_dir="/tmp/bench-online",
        per_device_train_batch_size=options.batch_size,
        max_steps=options.steps,
        learning_rate=5e-5,
        **QUIET,
        seed=0,
        fusion="average",
        dataloader_pin_memory=False,
    )

    def train(online: bool) -> float:  # the text columns stay in the dataset (they bind the stored logits to rows)
        kwargs = dict(model=copy.deepcopy(base), args=config, processing_class=tokenizer, train_dataset=data)
        trainer = OnlineDistillationTrainer(teachers, sentences, **kwargs) if online else DistillationTrainer(**kwargs)
        trainer.remove_callback(PrinterCallback)
        return timed(trainer.train)

    batch = [sentences[i] for i in list(sentences)[: options.batch_size]]

    def forward_seconds(name: str) -> float:  # one teacher built and warmed once: a step's forward, not a first call
        teacher = OnlineTeachers([name], 64)
        teacher(batch)
        return statistics.median(timed(partial(teacher, batch)) for _ in range(5))

    forward = {name: forward_seconds(name) for name in TEACHERS}
    medians = alternate({"offline": lambda: train(False), "online": lambda: train(True)}, options.repetitions)
    per_step = medians["offline"] / options.steps
    predicted = (per_step + sum(forward.values())) / per_step
    print(f"{options.steps} steps of batch {options.batch_size}, median of {options.repetitions} alternating runs\n")
    print("| run | wall time (s) | per step (s) |\n|---|---|---|")
    for name, seconds in medians.items():
        print(f"| {name} | {seconds:.2f} | {seconds / options.steps:.3f} |")
    for name, seconds in forward.items():
        print(f"| teacher forward only: {name} | | {seconds:.3f} |")
    print(
        f"\nonline / offline wall time: {medians['online'] / medians['offline']:.2f}x measured, "
        f"{predicted:.2f}x predicted from the teachers' forward cost "
        "((student step + teacher forwards) / student step)"
    )


if __name__ == "__main__":
    main()
