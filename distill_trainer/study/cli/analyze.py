"""The study's analyses over the runs of recipes/compare.py (and recipes/sweep.py grids in sweep-* folders).

    distill-trainer analyze --study_dir runs/real --output_dir results

Writes <output_dir>/master_results.csv, success_metrics.json, REPORT.md and the PNG plots.
"""

from dataclasses import dataclass, field

from distill_trainer.study.analysis.report import analyze_study
from distill_trainer.study.args import parse_recipe_args


@dataclass
class AnalyzeArguments:
    study_dir: str = field(
        default="runs/study", metadata={"help": "The --study_dir of compare.py (one folder per task)."}
    )
    output_dir: str = field(default="results", metadata={"help": "Where the tables, plots and REPORT.md go."})
    resamples: int = field(default=10_000, metadata={"help": "Paired-bootstrap resamples per test."})


def main(argv=None, prog=None):
    (args,) = parse_recipe_args((AnalyzeArguments,), argv, prog, __doc__)
    metrics = analyze_study(args.study_dir, args.output_dir, args.resamples)
    print(
        f"wrote {args.output_dir}/REPORT.md, master_results.csv, success_metrics.json and plots for "
        f"{', '.join(task for task in metrics if task != 'grids')}"
    )
    return metrics


if __name__ == "__main__":
    main()
