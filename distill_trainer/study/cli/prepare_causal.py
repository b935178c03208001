"""Write a causal-LM data folder (prompt -> completion pairs) from a GLUE pair task, for `--task causal_lm`.

MNLI: entailment pairs, "Premise: <premise>\\nEntailed hypothesis:" -> " <hypothesis>";
QQP: duplicate pairs, "Question: <question1>\\nDuplicate question:" -> " <question2>".
train.jsonl and dev.jsonl come from GLUE's train split (dev: 10% of the pairs or 1,000, whichever is smaller,
drawn with --seed), validation.jsonl from its validation split (MNLI: validation_matched).

    distill-trainer prepare-causal --task mnli --data ../shared/data/glue --output_dir data/mnli-lm \
        --max_train_rows 2000 --max_dev_rows 200 --max_validation_rows 200
"""

from dataclasses import dataclass, field

from distill_trainer.study.args import parse_recipe_args
from distill_trainer.study.causal_tasks import DEV_SEED, PAIR_TASKS, prepare_causal_task
from distill_trainer.study.tasks import DEFAULT_GLUE


@dataclass
class PrepareArguments:
    task: str = field(default=None, metadata={"help": f"GLUE pair task: {', '.join(PAIR_TASKS)}."})
    output_dir: str = field(default=None, metadata={"help": "A new (or empty) folder for the split files."})
    data: str = field(
        default=DEFAULT_GLUE, metadata={"help": "Hub dataset id or a folder of <task>/<split>.tsv|csv|parquet|jsonl."}
    )
    max_train_rows: int | None = field(default=None, metadata={"help": "Keep the first N train pairs (after dev)."})
    max_dev_rows: int | None = field(default=None, metadata={"help": "Keep the first N dev pairs."})
    max_validation_rows: int | None = field(default=None, metadata={"help": "Keep the first N validation pairs."})
    seed: int = field(default=DEV_SEED, metadata={"help": "Seed that draws the dev pairs from the train pairs."})

    def __post_init__(self):
        missing = [f"--{name}" for name in ("task", "output_dir") if not getattr(self, name)]
        if missing:
            raise ValueError(f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} required.")


def main(argv=None, prog=None):
    """Run `distill-trainer prepare-causal`: write the causal-LM data folder; returns its record (`causal_task.json`).

    Args:
        argv: The command-line options, without the program name (None: `sys.argv[1:]`).
        prog: The program name `--help` shows (None: the script's name; the `distill-trainer` command passes its own).
    """
    (args,) = parse_recipe_args((PrepareArguments,), argv, prog, __doc__)
    limits = {"train": args.max_train_rows, "dev": args.max_dev_rows, "validation": args.max_validation_rows}
    record = prepare_causal_task(args.task, args.data, args.output_dir, limits, args.seed)
    print(f"{args.output_dir}: {record['rows']} pairs (of {record['pairs']}), prompt {record['prompt_template']!r}")
    return record


if __name__ == "__main__":
    main()
