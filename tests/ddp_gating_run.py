"""Helper for test_reliability: train a tiny gating student and save each process's parameters.

python tests/ddp_gating_run.py OUTPUT_DIR PER_DEVICE_BATCH        (or under accelerate launch)
"""

import os
import sys

import datasets
import torch

sys.path.insert(0, os.path.dirname(__file__))
from helpers import make_sentences, teacher_logits_for, tiny_student, tiny_tokenizer  # noqa: E402

from distill_trainer import DistillationConfig, DistillationTrainer, attach_teacher_logits  # noqa: E402


def main(output_dir: str, per_device_batch: int):
    sentences, labels = make_sentences(192)
    tokenizer = tiny_tokenizer()
    data = datasets.Dataset.from_dict({"sentence": sentences, "label": labels})
    data = attach_teacher_logits(
        data, teacher_logits_for(labels), ["a", "b", "c"], ["negative", "positive"], ["sentence"]
    )
    data = data.map(lambda batch: tokenizer(batch["sentence"]), batched=True)
    args = DistillationConfig(
        output_dir=output_dir,
        fusion="gating",
        per_device_train_batch_size=per_device_batch,
        max_steps=6,
        learning_rate=5e-3,
        use_cpu=True,
        report_to="none",
        save_strategy="no",
        logging_strategy="no",
        disable_tqdm=True,
        seed=0,
        temperature=2.0,
        alpha=0.7,
    )
    trainer = DistillationTrainer(model=tiny_student(), args=args, train_dataset=data, processing_class=tokenizer)
    trainer.train()
    state = {f"student.{k}": v for k, v in trainer.model.state_dict().items()}
    state.update({f"gate.{k}": v for k, v in trainer.gate.state_dict().items()})
    torch.save(state, os.path.join(output_dir, f"rank{trainer.args.process_index}.pt"))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
