"""The causal study of one task (issue 31): its data folder, two task teachers fine-tuned from the base model, one
top-k extraction at the largest k (the smaller k cut from it), and every student run: methods x seeds, the k grid,
dense online references with the teachers live. Finished steps are reused only for the same question.

    distill-trainer causal-study --config recipes/configs/causal_mnli.yaml
    distill-trainer causal-study --config recipes/configs/causal_qqp.yaml --seeds 42
"""

from distill_trainer import DistillationConfig
from distill_trainer.study.args import parse_recipe_args
from distill_trainer.study.causal_study import run_causal_study
from distill_trainer.study.causal_study_args import CausalStudyArguments


def main(argv=None, prog=None):
    """Run `distill-trainer causal-study` and print each student run's mean validation per-token NLL; returns the
    study's table.

    Args:
        argv: The command-line options, without the program name (None: `sys.argv[1:]`).
        prog: The program name `--help` shows (None: the script's name; the `distill-trainer` command passes its own).
    """
    args, config = parse_recipe_args((CausalStudyArguments, DistillationConfig), argv, prog, __doc__)
    table = run_causal_study(args, config)
    students = table[table.type == "student"].groupby("run", sort=False)["eval_loss"].agg(["mean", "count"])
    print(f"\n{args.task}: validation per-token NLL ({args.task_root}/results.csv):\n{students.round(4).to_string()}")
    return table


if __name__ == "__main__":
    main()
