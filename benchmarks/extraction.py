"""Benchmark 3: logit extraction. Our path (`TransformersTeacher`, as recipes/extract_logits.py runs it) vs
`Trainer.predict` with its default dynamic-padding collator, same teacher, same rows, same batch size.
Prints examples/second, the ratio, the largest logit difference, and where the time goes. Then bf16 autocast
inference against float32 on the same rows: speed, largest logit difference and argmax agreement (the
recipes extract in float32 unless these stay within 1e-2; pass a fine-tuned teacher folder as --model, as
a fresh classification head's logits are too small to say anything).

    python benchmarks/extraction.py [--model all-MiniLM-L6-v2] [--rows 2000] [--repetitions 3]
"""

import argparse

import numpy as np
import torch
from common import SST2, alternate, header, sst2_rows, timed
from transformers import AutoTokenizer, Trainer, TrainingArguments

from distill_trainer.study.packaged_models import resolve_model
from distill_trainer.study.tasks import task_texts
from distill_trainer.study.teachers import TransformersTeacher
from distill_trainer.study.training import tokenize_task


def padded_tokens(lengths: np.ndarray, batch_size: int) -> int:
    """Tokens the model really runs when each batch is padded to its longest row."""
    return int(
        sum(len(chunk) * chunk.max() for chunk in np.array_split(lengths, range(batch_size, len(lengths), batch_size)))
    )


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="all-MiniLM-L6-v2")
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--max_length", type=int, default=128)
    parser.add_argument("--repetitions", type=int, default=3)
    options = parser.parse_args()
    header(
        f"Logit extraction: TransformersTeacher vs Trainer.predict, {options.model}, {options.rows} SST-2 train rows"
    )
    path = resolve_model(options.model)
    rows = sst2_rows("train", options.rows)
    texts = task_texts(SST2, rows)
    ours = TransformersTeacher(path, SST2.label_names, batch_size=options.batch_size, max_length=options.max_length)
    tokenizer = AutoTokenizer.from_pretrained(path)
    trainer = Trainer(
        model=ours.model,
        processing_class=tokenizer,
        args=TrainingArguments(
            output_dir="/tmp/bench-extract",
            per_device_eval_batch_size=options.batch_size,
            report_to="none",
            disable_tqdm=True,
            dataloader_pin_memory=False,
        ),
    )
    outputs = {}

    def run_ours():
        outputs["ours"] = ours(texts, progress=False)

    def run_ours_bf16():
        with torch.autocast(torch.device(ours.device).type, dtype=torch.bfloat16):
            outputs["bf16"] = ours(texts, progress=False)

    def run_predict():  # what a user would write: tokenize, then predict with the default collator
        tokenized = tokenize_task(rows, tokenizer, SST2, options.max_length).remove_columns(["sentence", "idx"])
        outputs["predict"] = trainer.predict(tokenized).predictions

    medians = alternate(
        {
            "Trainer.predict": lambda: timed(run_predict),
            "TransformersTeacher": lambda: timed(run_ours),
            "bf16": lambda: timed(run_ours_bf16),
        },
        options.repetitions,
    )
    lengths = np.array(
        [
            len(ids)
            for ids in tokenizer(rows["sentence"][:], truncation=True, max_length=options.max_length)["input_ids"]
        ]
    )
    tokenize_seconds = timed(lambda: tokenizer(rows["sentence"][:], truncation=True, max_length=options.max_length))
    in_order, by_length = (
        padded_tokens(lengths, options.batch_size),
        padded_tokens(np.sort(lengths)[::-1], options.batch_size),
    )
    print(f"{options.rows} rows, batch {options.batch_size}, median of {options.repetitions} alternating runs\n")
    print("| path | seconds | examples/s | tokens run (incl. padding) |\n|---|---|---|---|")
    print(
        f"| Trainer.predict (dataset order, DataCollatorWithPadding) | {medians['Trainer.predict']:.2f} | "
        f"{options.rows / medians['Trainer.predict']:.0f} | {in_order:,} |"
    )
    print(
        f"| TransformersTeacher (length-grouped, inference_mode) | {medians['TransformersTeacher']:.2f} | "
        f"{options.rows / medians['TransformersTeacher']:.0f} | {by_length:,} |"
    )
    print(
        f"\nspeed-up: {medians['Trainer.predict'] / medians['TransformersTeacher']:.2f}x; "
        f"real tokens {lengths.sum():,}; "
        f"padding is {100 * (1 - lengths.sum() / in_order):.0f}% of the tokens run in dataset order, "
        f"{100 * (1 - lengths.sum() / by_length):.1f}% length-grouped; "
        f"tokenizing all rows takes {tokenize_seconds:.2f} s"
    )
    difference = np.abs(outputs["ours"] - outputs["predict"]).max()
    print(f"largest logit difference between the two paths: {difference:.2e}")
    bf16_difference = np.abs(outputs["bf16"] - outputs["ours"])
    agreement = (outputs["bf16"].argmax(-1) == outputs["ours"].argmax(-1)).mean()
    print(
        f"\nbf16 autocast inference: {medians['bf16']:.2f} s ({medians['TransformersTeacher'] / medians['bf16']:.2f}x "
        f"float32); logit difference to float32: largest {bf16_difference.max():.3e}, median "
        f"{np.median(bf16_difference):.3e}; argmax agreement {agreement:.2%}; logits span "
        f"[{outputs['ours'].min():.2f}, {outputs['ours'].max():.2f}]"
    )
    assert difference < 1e-4, "the fast path changed the logits"


if __name__ == "__main__":
    main()
