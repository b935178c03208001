"""The whole study for one task: teachers -> logit dataset -> every method x seed -> results table.

distill-trainer study --config recipes/configs/sst2.yaml --max_train_rows 2000 --seeds 42,43,44
"""

import os

from distill_trainer import DistillationConfig
from distill_trainer.study.args import StudyArguments, TaskArguments, parse_recipe_args
from distill_trainer.study.runner import run_study


def main(argv=None, prog=None):
    """Run `distill-trainer study` for one task and print this study's mean score per method; returns the results
    table (every study's rows in `--results_csv`, marked by `study_dir`).

    Args:
        argv: The command-line options, without the program name (None: `sys.argv[1:]`).
        prog: The program name `--help` shows (None: the script's name; the `distill-trainer` command passes its own).
    """
    task_args, study_args, config = parse_recipe_args(
        (TaskArguments, StudyArguments, DistillationConfig), argv, prog, __doc__
    )
    table = run_study(task_args.task_data(), study_args, config)
    this_study = (table.task == task_args.task) & (table.study_dir == os.path.normpath(study_args.study_dir))
    summary = table[this_study].groupby(["type", "method"], sort=False)["score"].agg(["mean", "std", "count"])
    print(
        f"\n{task_args.task} validation {table.metric.iloc[-1]} ({study_args.results_csv}):\n"
        f"{summary.round(4).to_string()}"
    )
    return table


if __name__ == "__main__":
    main()
