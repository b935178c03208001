"""Helper for test_reliability: one SGD step of a tiny causal student on stored top-k, rows scoring very different
numbers of tokens; saves the weights and rank 0's logged loss terms.

python tests/ddp_causal_run.py OUTPUT_DIR PER_DEVICE_BATCH        (or under accelerate launch)
"""

import json
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, os.path.dirname(__file__))
from causal_helpers import causal_config, causal_dataset, causal_tokenizer, tiny_llama, with_topk  # noqa: E402

from distill_trainer import DistillationTrainer  # noqa: E402


def main(output_dir: str, per_device_batch: int):
    data = causal_dataset(32)
    data = data.map(
        lambda row, i: {"labels": [-100] * (1 if i % 3 else 5) + row["input_ids"][1 if i % 3 else 5 :]},
        with_indices=True,
    )
    options = dict(optim="sgd", learning_rate=0.5, max_steps=1, lr_scheduler_type="constant", max_grad_norm=0.0)
    options.update(logging_strategy="steps", logging_steps=1, per_device_train_batch_size=per_device_batch)
    args = causal_config(Path(output_dir), **options)
    trainer = DistillationTrainer(
        tiny_llama(), args, train_dataset=with_topk(data, k=8), processing_class=causal_tokenizer()
    )
    trainer.train()
    rank = trainer.accelerator.process_index
    torch.save({k: v.detach().cpu() for k, v in trainer.model.state_dict().items()}, f"{output_dir}/rank{rank}.pt")
    if rank == 0:
        logged = next(log for log in trainer.state.log_history if "loss_kd" in log)
        with open(f"{output_dir}/logged.json", "w") as file:
            json.dump({key: logged[key] for key in ("loss", "loss_kd", "loss_ce")}, file)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
