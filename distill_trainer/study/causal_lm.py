"""Token-level distillation of causal LMs in the study layer: each teacher's sparse top-k over a task's rows
(resumable per teacher, shared across `accelerate` processes, written atomically), and a student trained from
them and scored by its per-token NLL and perplexity on the validation completions. A data folder with a `dev` file
is extracted there too, and the teachers' scores (the `weighted` fusion's weights) come from it."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence

import datasets
import numpy as np
import torch
from accelerate.utils import gather_object
from tqdm.auto import tqdm

from ..config import DistillationConfig
from ..logits import TeacherInfo, input_fingerprint
from ..signals import check_token_options
from ..topk import LOGPROB_DTYPES, attach_teacher_topk, read_topk_metadata
from ..trainer import DistillationTrainer
from ..vocabulary import check_same_vocabulary, tokenizer_info
from .args import StudentArguments, TaskArguments, for_trainer
from .causal_data import (
    CAUSAL_LM_TASK,
    DEV_SPLIT,
    CausalLMArguments,
    causal_split_names,
    check_context,
    load_causal_lm,
    load_causal_tokenizer_and_config,
    load_text_split,
    tokenize_causal,
)
from .causal_metrics import completion_metrics
from .extraction import read_teacher_cache, write_teacher_cache, write_with_teacher_cache
from .logit_data import load_logit_dataset
from .output_dirs import check_output_dir, mark_output_dir
from .questions import causal_question
from .results import student_result
from .runs import VALIDATION_NLL_FILE, StudentResult, display_name
from .teachers import folder_revision, process_state
from .training import student_from_layers

logger = logging.getLogger(__name__)

SCORE_METRIC = "token_likelihood"  # exp(-mean NLL) = 1 / perplexity: higher is better, the `weighted` fusion's weight
SPLITS = ("train", "validation")  # and `dev` between them where the data folder has one (`causal_split_names`)


def causal_splits(task_args: TaskArguments, columns: CausalLMArguments, tokenizer) -> dict[str, datasets.Dataset]:
    """The task's train, dev (where there is one) and validation rows, tokenized as every teacher and the student
    see them.

    Args:
        task_args: `--data`, row limits and `--max_length`.
        columns: Which columns hold the text.
        tokenizer: The first teacher's tokenizer (every model shares its vocabulary).
    """
    return {
        split: tokenize_causal(
            load_text_split(task_args.data, split, task_args.row_limit(split)),
            tokenizer,
            columns,
            task_args.max_length,
            split,
        )
        for split in causal_split_names(task_args.data)
    }


def length_batches(lengths: Sequence[int], batch_size: int) -> list[np.ndarray]:
    """Row indices in batches of similar length (longest first), so padding costs little.

    Args:
        lengths: Each row's length in tokens.
        batch_size: Rows per batch (the last batch may hold fewer).
    """
    order = np.argsort(-np.asarray(lengths), kind="stable")
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


def teacher_topk(model, rows: datasets.Dataset, k: int, batch_size: int, dtype: str, progress: bool = True) -> dict:
    """One teacher over `rows`: `{"ids": [sum(len), k], "logprobs": [sum(len), k], "nll": [sum, tokens]}`, the
    top-k rows concatenated in row order, and the summed NLL of the tokens the rows' labels score (the teacher's
    own quality, measured on the full softmax). One log-softmax per batch serves both.

    Args:
        model: A causal LM in eval mode.
        rows: With `input_ids` and `labels`.
        k: Tokens kept per position.
        batch_size: Rows per forward pass (grouped by length).
        dtype: "float16" or "float32", of the stored log-probabilities.
        progress: Show a progress bar.
    """
    input_ids, labels = rows["input_ids"][:], rows["labels"][:]
    lengths = [len(row) for row in input_ids]
    ids_out, logprobs_out = [None] * len(rows), [None] * len(rows)
    device = next(model.parameters()).device
    nll, tokens = torch.zeros((), dtype=torch.float64, device=device), torch.zeros((), dtype=torch.long, device=device)
    batches = length_batches(lengths, batch_size)
    with torch.inference_mode():
        for batch in tqdm(batches, desc=f"teacher {display_name(model.name_or_path)}", disable=not progress):
            width = max(lengths[i] for i in batch)
            ids = torch.zeros(len(batch), width, dtype=torch.long)
            gold = torch.full((len(batch), width), -100, dtype=torch.long)
            for row, i in enumerate(batch):
                ids[row, : lengths[i]] = torch.tensor(input_ids[i])
                gold[row, : lengths[i] - 1] = torch.tensor(labels[i][1:])  # position t predicts token t + 1
            mask = (torch.arange(width)[None, :] < torch.tensor([lengths[i] for i in batch])[:, None]).long()
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
            full = torch.log_softmax(logits.float(), dim=-1)
            gold = gold.to(device)
            scored = gold != -100  # masked, not indexed: boolean indexing would wait for the device every batch
            nll -= torch.where(scored, full.gather(-1, gold.clamp(min=0)[..., None])[..., 0], 0.0).sum()
            tokens += scored.sum()
            top_logprobs, top_ids = full.topk(k, dim=-1)
            top_ids, top_logprobs = top_ids.int().cpu().numpy(), top_logprobs.to(getattr(torch, dtype)).cpu().numpy()
            for row, i in enumerate(batch):
                ids_out[i], logprobs_out[i] = top_ids[row, : lengths[i]], top_logprobs[row, : lengths[i]]
    totals = np.array([nll.item(), tokens.item()])
    if not len(rows):  # a process of `accelerate launch` whose share of a small split is empty
        return {"ids": np.zeros((0, k), np.int32), "logprobs": np.zeros((0, k), dtype), "nll": totals}
    return {"ids": np.concatenate(ids_out), "logprobs": np.concatenate(logprobs_out), "nll": totals}


def sharded_topk(model, rows: datasets.Dataset, **options) -> dict:
    """`teacher_topk` with the rows split between the processes of `accelerate launch` (contiguous shares);
    every process gets all of it back, rows in order.

    Args:
        model: A causal LM in eval mode, on this process's device.
        rows: With `input_ids` and `labels`.
        **options: `teacher_topk`'s `k`, `batch_size` and `dtype`.
    """
    state = process_state()
    if state.num_processes == 1:
        return teacher_topk(model, rows, **options)
    with state.split_between_processes(list(range(len(rows)))) as share:
        found = teacher_topk(model, rows.select(share), progress=state.is_main_process, **options)
    shares = gather_object([found])
    return {
        "ids": np.concatenate([s["ids"] for s in shares]),
        "logprobs": np.concatenate([s["logprobs"] for s in shares]),
        "nll": np.sum([s["nll"] for s in shares], axis=0),
    }


def build_topk_dataset(
    task_args: TaskArguments,
    columns: CausalLMArguments,
    teacher_paths: Sequence[str],
    k: int,
    batch_size: int = 8,
    logprobs_dtype: str = "float16",
    cache_dir: str | None = None,
) -> datasets.DatasetDict:
    """Every teacher's top-k over train, dev (where `--data` has a dev file) and validation: one `DatasetDict` with
    `teacher_topk_ids` and `teacher_topk_logprobs` per split, and each teacher's token likelihood (exp(-NLL)) in
    the metadata: `validation_score` on validation, `dev_score` on dev where `--data` has a dev file.

    Teachers run one at a time; all must share the first teacher's vocabulary (refused naming both otherwise).
    With `cache_dir`, each finished teacher is kept there (written atomically), so an interrupted extraction
    resumes at the first unfinished teacher.

    Args:
        task_args: `--data`, row limits and `--max_length`.
        columns: Which columns hold the text (`--text_column` or `--prompt_column`/`--completion_column`).
        teacher_paths: Teacher folders, Hub ids or GGUF folders, in column order.
        k: Tokens kept per position per teacher.
        batch_size: Rows per forward pass.
        logprobs_dtype: "float16" (the format's default) or "float32".
        cache_dir: Where finished teachers are kept until the dataset is written (None: not kept).
    """
    if logprobs_dtype not in LOGPROB_DTYPES:
        raise ValueError(f"--logprobs_dtype must be one of {tuple(LOGPROB_DTYPES)}, got {logprobs_dtype!r}.")
    loaded = [load_causal_tokenizer_and_config(path, columns.gguf_file, **task_args.loading) for path in teacher_paths]
    tokenizer, first = loaded[0]
    for path, (teacher_tokenizer, config) in zip(teacher_paths, loaded, strict=True):  # all before any teacher runs
        check_same_vocabulary(tokenizer_info(tokenizer), tokenizer_info(teacher_tokenizer), f"teacher {path}")
        check_context(config, task_args.max_length, f"teacher {path}")
        if not 1 <= k <= config.vocab_size:
            raise ValueError(f"--topk {k} must be between 1 and teacher {path}'s vocabulary ({config.vocab_size}).")
        if config.vocab_size != first.vocab_size:  # padded embeddings: ids up to the model's size, not the tokenizer's
            raise ValueError(
                f"Teacher {path} scores {config.vocab_size} tokens and {teacher_paths[0]} {first.vocab_size} (the "
                "same tokenizer, other embedding padding): their top-k ids would not share one range."
            )
    splits = causal_splits(task_args, columns, tokenizer)
    inputs = {split: input_fingerprint(data, ["input_ids"]) for split, data in splits.items()}
    found, infos, likelihoods = {split: {"ids": [], "logprobs": []} for split in splits}, [], []
    for index, path in enumerate(teacher_paths):
        revision = folder_revision(path)  # a teacher retrained in its folder since is not reused
        key = {"teacher": path, "revision": revision, "gguf_file": columns.gguf_file, "k": k, "dtype": logprobs_dtype}
        key["inputs"] = inputs
        cached = read_teacher_cache(cache_dir, index, key)
        if cached is None:  # the weights are loaded only for a teacher whose top-k are not cached
            _, model = load_causal_lm(path, columns.gguf_file, **task_args.loading)
            options = {"k": k, "batch_size": batch_size, "dtype": logprobs_dtype}
            arrays = {}
            for split, rows in splits.items():
                for name, array in sharded_topk(model, rows, **options).items():
                    arrays[f"{split}_{name}"] = array
            cached = {"name": display_name(path), "revision": revision, "logits": arrays}
            write_teacher_cache(cache_dir, index, key, cached)
            del model
        else:
            logger.warning("Teacher %d (%s): reusing its top-k from %s.", index, cached["name"], cache_dir)
        sums = {split: cached["logits"][f"{split}_nll"] for split in splits if split != "train"}  # [NLL, tokens]
        likelihoods.append({split: math.exp(-nll / tokens) for split, (nll, tokens) in sums.items()})
        infos.append(
            TeacherInfo(
                name=cached["name"],
                revision=cached["revision"],
                metric=SCORE_METRIC,
                validation_score=likelihoods[-1]["validation"],
                dev_score=likelihoods[-1].get(DEV_SPLIT),
            )
        )
        for split in splits:
            for name in ("ids", "logprobs"):
                found[split][name].append(cached["logits"][f"{split}_{name}"])
    logit_dataset = datasets.DatasetDict(
        {
            split: attach_teacher_topk(
                rows,
                *(per_row(np.stack(found[split][name], axis=0), rows) for name in ("ids", "logprobs")),
                infos,
                tokenizer,
                logprobs_dtype=logprobs_dtype,
                task=CAUSAL_LM_TASK,
                vocab_size=first.vocab_size,
            )
            for split, rows in splits.items()
        }
    )
    return logit_dataset


def per_row(stacked: np.ndarray, rows: datasets.Dataset) -> list[np.ndarray]:
    """`[n_teachers, sum(len), k]` -> one `[n_teachers, len(input_ids), k]` array per row.

    Args:
        stacked: Every teacher's top-k of one split, `[n_teachers, sum(len), k]`, rows concatenated in order.
        rows: The split's tokenized rows (`input_ids` give each row's length).
    """
    ends = np.cumsum([len(row) for row in rows["input_ids"][:]])
    return np.split(stacked, ends[:-1], axis=1)


def extract_topk_to_disk(task_args, columns, teacher_paths, output_dir: str, **options) -> datasets.DatasetDict:
    """`build_topk_dataset` with a resumable per-teacher cache beside `output_dir` (`write_with_teacher_cache`);
    `options` are its k, batch size and dtype.

    Args:
        task_args: `--data`, row limits, `--max_length` and loading options.
        columns: Which columns hold the text.
        teacher_paths: Teacher folders, Hub ids or GGUF folders, in column order.
        output_dir: Where the dataset is written (atomically).
        **options: `build_topk_dataset`'s `k`, `batch_size` and `logprobs_dtype`.
    """
    return write_with_teacher_cache(
        output_dir,
        len(teacher_paths),
        lambda cache_dir: build_topk_dataset(task_args, columns, teacher_paths, cache_dir=cache_dir, **options),
    )


def distill_causal_student(
    task_args: TaskArguments,
    columns: CausalLMArguments,
    student_args: StudentArguments,
    config: DistillationConfig,
    teacher_models: Sequence[str] | None = None,
) -> StudentResult:
    """Train one causal-LM student from a top-k logit dataset; save it and its tokenizer with `eval_results.json`
    (per-token NLL as `eval_loss`, `perplexity`, top-1 agreement with each teacher) and `validation_nll.npy`
    (`[rows, 2]`: each validation row's summed NLL and scored tokens, for bootstraps over rows and tokens);
    return the results. Where the logit dataset has a dev split, the student is scored there too (`dev_score`:
    its dev perplexity; `dev_metrics`), so that a study chooses among students without the reported rows.

    The rows are tokenized again from `--data` and must be the logit dataset's (same `input_ids`, checked by
    fingerprint) unless `--check_against_data false`; the student's vocabulary must be the teachers'.

    Args:
        task_args: `--data`, row limits, `--max_length`, loading options.
        columns: Which columns hold the text.
        student_args: The logit dataset, the student model and the layers kept.
        config: The run's configuration (`output_dir` is its folder).
        teacher_models: Live teachers (folders or names `load_causal_lm` takes) run on every batch instead of the
            stored top-k: dense online distillation over their full distributions, the reference for what sparse
            storage loses. The logit dataset still gives the rows, the `weighted` scores and the agreement.
    """
    check_output_dir(config.output_dir, StudentResult.FILE)
    if student_args.early_stopping_patience is not None:  # no eval split during training: nothing to stop on
        raise ValueError(
            f"--early_stopping_patience is not offered for --task {CAUSAL_LM_TASK}: the student trains for "
            "--num_train_epochs (or --max_steps) and is scored on dev and validation after training."
        )
    logit_data = load_logit_dataset(student_args.logit_dataset)
    metadata = read_topk_metadata(logit_data["train"])
    teachers = teacher_models or (metadata.teachers if metadata else None)
    check_token_options(config, len(teachers) if teachers else None, live=bool(teacher_models))
    tokenizer, model = load_causal_lm(student_args.student_model, columns.gguf_file, **task_args.loading)
    check_context(model.config, task_args.max_length, f"student {student_args.student_model}")
    if metadata is not None:
        check_same_vocabulary(metadata.tokenizer, tokenizer_info(tokenizer), f"student {student_args.student_model}")
    if student_args.check_against_data:
        for split, rows in causal_splits(task_args, columns, tokenizer).items():
            if split not in logit_data:
                raise ValueError(
                    f"--data {task_args.data} has a {split} split but the logit dataset has none (extracted before it "
                    "existed?): extract again, so that the teachers' scores come from it."
                )
            if input_fingerprint(rows, ["input_ids"]) != input_fingerprint(logit_data[split], ["input_ids"]):
                raise ValueError(
                    f"The logit dataset's {split} rows are not --data {task_args.data}'s rows as tokenized with "
                    f"--max_length {task_args.max_length} and these columns (other rows, order or settings)."
                )
    if student_args.student_layers:
        model = student_from_layers(model, student_args.student_layers)
    train, validation = logit_data["train"], logit_data["validation"]
    live = [load_causal_lm(path, columns.gguf_file, **task_args.loading)[1] for path in teacher_models or []]
    trainer = DistillationTrainer(
        model=model, args=for_trainer(config), processing_class=tokenizer, train_dataset=train, teacher_models=live
    )
    mark_output_dir(config.output_dir, StudentResult.FILE)
    train_output = trainer.train(resume_from_checkpoint=config.resume_from_checkpoint)
    per_row = []
    batch_size = config.per_device_eval_batch_size
    metrics = completion_metrics(trainer.model, validation, tokenizer, batch_size, per_row)
    dev_fields = {}
    if DEV_SPLIT in logit_data:  # what a study chooses students by (the best method), never the reported rows
        dev_metrics = completion_metrics(trainer.model, logit_data[DEV_SPLIT], tokenizer, batch_size)
        dev_fields = {"dev_score": dev_metrics["perplexity"], "dev_metrics": dev_metrics}
    results = student_result(
        trainer,
        config,
        max_length=task_args.max_length,
        logit_dataset=student_args.logit_dataset,
        student_model=student_args.student_model,
        student_layers=student_args.student_layers,
        task=CAUSAL_LM_TASK,
        metric="perplexity",
        metrics=metrics,
        teachers=[vars(t) for t in metadata.teachers] if metadata else None,
        train_rows=len(train),
        eval_rows=len(validation),
        train_runtime=train_output.metrics.get("train_runtime"),
        question=causal_question(task_args, columns, student_args, config, logit_data, teacher_models),
        **dev_fields,
    )
    trainer.save_model(config.output_dir)
    if trainer.is_world_process_zero():
        tokenizer.save_pretrained(config.output_dir)
        np.save(os.path.join(config.output_dir, VALIDATION_NLL_FILE), np.asarray(per_row, dtype=np.float64))
        results.save(config.output_dir)  # last: a folder with its results is a finished run
    return results
