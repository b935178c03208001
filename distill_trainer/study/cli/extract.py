"""Run N teachers over a task's train and validation splits and write ONE logit dataset (save_to_disk).

Resumable: each finished teacher's logits are kept in <output_dir>.teacher-cache until the dataset is in
place, so running the same command again after an interruption skips them. Under `accelerate launch`
the rows are shared between the processes.

    distill-trainer extract --task sst2 --data ../shared/data/glue \
        --teachers runs/sst2/teacher-minilm,runs/sst2/teacher-tfidf --output_dir runs/sst2/logits
    add --push_to_hub --hub_dataset_id you/sst2-teacher-logits [--hub_private] to publish it with a card.

Causal LMs: each teacher's top-k next tokens per position (teacher_topk_ids / teacher_topk_logprobs), from
<data>/train and <data>/validation (.jsonl, .json, .csv or .parquet) or a Hub dataset id:

    distill-trainer extract --task causal_lm --data DIR --prompt_column prompt --completion_column completion \
        --teachers SmolLM2-135M-Instruct,runs/lm/teacher-b --topk 32 --output_dir runs/lm/logits
"""

from dataclasses import dataclass, field

from distill_trainer.study.args import TaskArguments, parse_recipe_args
from distill_trainer.study.causal_data import CAUSAL_LM_TASK, CausalLMArguments
from distill_trainer.study.causal_lm import extract_topk_to_disk
from distill_trainer.study.extraction import extract_to_disk
from distill_trainer.study.hub import HubArguments, publish_logit_dataset
from distill_trainer.study.hub_checks import check_publishing
from distill_trainer.study.teachers import process_state


@dataclass
class ExtractArguments:
    teachers: list[str] = field(
        default=None, metadata={"help": "Teacher folders or Hub ids, in column order (spaces or commas)."}
    )
    output_dir: str = field(default=None, metadata={"help": "Where the logit dataset is written (save_to_disk)."})
    batch_size: int = field(default=64, metadata={"help": "Inference batch size (rows)."})
    topk: int | None = field(default=None, metadata={"help": "--task causal_lm: tokens kept per position (k)."})
    logprobs_dtype: str = field(
        default="float16", metadata={"help": "--task causal_lm: float16 (default) or float32 log-probabilities."}
    )
    push_to_hub: bool = field(default=False, metadata={"help": "Publish the logit dataset to --hub_dataset_id."})
    hub_dataset_id: str | None = field(default=None, metadata={"help": "Dataset repo to publish to (owner/name)."})
    hub_revision: str | None = field(default=None, metadata={"help": "Branch to publish to (created if missing)."})

    def __post_init__(self):
        if self.batch_size < 1:
            raise ValueError(f"--batch_size must be at least 1, got {self.batch_size}.")
        check_publishing(self.push_to_hub, self.hub_dataset_id, "--hub_dataset_id")


def main(argv=None, prog=None):
    """Run `distill-trainer extract`: write the teachers' logit dataset (top-k for `--task causal_lm`) and publish it
    where `--push_to_hub` asks; returns the dataset.

    Args:
        argv: The command-line options, without the program name (None: `sys.argv[1:]`).
        prog: The program name `--help` shows (None: the script's name; the `distill-trainer` command passes its own).
    """
    task_args, text_args, extract_args, hub_args = parse_recipe_args(
        (TaskArguments, CausalLMArguments, ExtractArguments, HubArguments), argv, prog, __doc__
    )
    causal = text_args.check(task_args.task)
    if causal != (extract_args.topk is not None):
        raise ValueError(f"--topk is {'required' if causal else 'only'} for --task {CAUSAL_LM_TASK}.")
    if extract_args.push_to_hub:
        hub_args.check_before_work(extract_args.hub_dataset_id, "logit dataset", revision=extract_args.hub_revision)
    if causal:
        logit_dataset = extract_topk_to_disk(
            task_args,
            text_args,
            extract_args.teachers,
            extract_args.output_dir,
            k=extract_args.topk,
            batch_size=extract_args.batch_size,
            logprobs_dtype=extract_args.logprobs_dtype,
        )
    else:
        logit_dataset = extract_to_disk(
            task_args.task_data(), extract_args.teachers, extract_args.output_dir, extract_args.batch_size
        )
    state = process_state()
    if state.is_main_process:
        written = f"{extract_args.output_dir} by {state.num_processes} process(es)"
        print(f"logit dataset written to {written}: {logit_dataset}")
        if extract_args.push_to_hub:
            url = publish_logit_dataset(
                logit_dataset,
                extract_args.hub_dataset_id,
                **hub_args.publish_kwargs(revision=extract_args.hub_revision),
            )
            print(f"published: {url}")
    return logit_dataset


if __name__ == "__main__":
    main()
