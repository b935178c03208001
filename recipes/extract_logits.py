"""Run N teachers over a task's train and validation splits and write ONE logit dataset (save_to_disk).

    python recipes/extract_logits.py --task sst2 --data ../shared/data/glue \
        --teachers runs/sst2/teacher-minilm,runs/sst2/teacher-tfidf --output_dir runs/sst2/logits
"""

from dataclasses import dataclass, field

from distill_trainer.pipeline import TaskArguments, build_logit_dataset, parse_recipe_args, save_dataset_atomically


@dataclass
class ExtractArguments:
    teachers: str = field(default=None, metadata={"help": "Comma-separated teacher folders or Hub ids, in column order."})
    output_dir: str = field(default=None, metadata={"help": "Where the logit dataset is written (save_to_disk)."})
    batch_size: int = field(default=64, metadata={"help": "Inference batch size."})


def main(argv=None):
    task_args, extract_args = parse_recipe_args((TaskArguments, ExtractArguments), argv)
    logit_dataset = build_logit_dataset(task_args, extract_args.teachers.split(","), extract_args.batch_size)
    save_dataset_atomically(logit_dataset, extract_args.output_dir)
    print(f"logit dataset written to {extract_args.output_dir}: {logit_dataset}")
    return logit_dataset


if __name__ == "__main__":
    main()
