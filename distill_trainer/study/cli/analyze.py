"""The study's analyses over the runs of recipes/compare.py (and recipes/sweep.py grids in sweep-* folders).

    distill-trainer analyze --study_dir runs/real --output_dir results

Writes <output_dir>/master_results.csv, success_metrics.json, REPORT.md and the PNG plots. With `--plan v3`, study
v3's pre-registered comparisons instead (results/v3/PREREGISTRATION.md: every choice on dev scores):

    distill-trainer analyze --plan v3 --study_dir runs/v3 --low_resource_dir runs/v3-low-resource \\
        --six_layer_dir runs/v3-6layer --output_dir results/v3

writes <output_dir>/REPORT.md, v3_results.json and the figures it links (the low-resource regime and the 6-layer
student in sections of their own, "not run yet" when their folder is not given; a folder given that is not there is
refused). With `--plan causal`, the causal study's (issue 31, results/causal/PREREGISTRATION.md) from the records
`distill-trainer causal-study` leaves:

    distill-trainer analyze --plan causal --study_dir runs/causal --output_dir results/causal

writes <output_dir>/REPORT.md, causal_results.json and its figures. With `--plan precision`, the bf16 settlement
(issue 28): student runs that differ only in bf16 autocast vs float32, paired by method and seed (`make study-bf16`):

    distill-trainer analyze --plan precision --study_dir runs/v3-bf16 --output_dir results/v3-bf16

writes <output_dir>/REPORT.md and precision_results.json.
"""

import os
from dataclasses import dataclass, field

from distill_trainer.study.analysis.causal_render import RESULTS_FILE as CAUSAL_RESULTS_FILE
from distill_trainer.study.analysis.causal_render import write_causal_report
from distill_trainer.study.analysis.precision import RESULTS_FILE as PRECISION_RESULTS_FILE
from distill_trainer.study.analysis.precision import write_precision_report
from distill_trainer.study.analysis.report import analyze_study
from distill_trainer.study.analysis.v3_render import RESULTS_FILE, write_v3_report
from distill_trainer.study.args import parse_recipe_args


@dataclass
class AnalyzeArguments:
    study_dir: str = field(
        default="runs/study", metadata={"help": "The --study_dir of compare.py (one folder per task)."}
    )
    output_dir: str = field(default="results", metadata={"help": "Where the tables, plots and REPORT.md go."})
    low_resource_dir: str | None = field(
        default=None,
        metadata={
            "help": "--plan v3: the low-resource regime's study folder (runs/v3-low-resource, SST-2), reported beside "
            'the full-label SST-2 numbers; not given: its section says "not run yet" (a path not there is refused).'
        },
    )
    six_layer_dir: str | None = field(
        default=None,
        metadata={
            "help": "--plan v3: the 6-layer student's study folder (runs/v3-6layer, MNLI, teachers linked from "
            '--study_dir), its own family of tests; not given: its section says "not run yet" (refused if not there).'
        },
    )
    resamples: int = field(default=10_000, metadata={"help": "Paired-bootstrap resamples per test."})
    plan: str = field(
        default="v2",
        metadata={
            "help": "v2: the study-v2 report (tables, plots, tests). v3: study v3's pre-registered comparisons, "
            "chosen on dev scores (results/v3/PREREGISTRATION.md). causal: the causal study's (issue 31, "
            "results/causal/PREREGISTRATION.md), from `distill-trainer causal-study`'s records. precision: the "
            "bf16 settlement, students paired by method and seed in bf16 autocast and float32.",
            "choices": ["v2", "v3", "causal", "precision"],
        },
    )


def main(argv=None, prog=None):
    """Run `distill-trainer analyze`: the report of `--plan` (v2, v3, causal, precision) over the run records; returns
    its results (v2: the success metrics per task).

    Args:
        argv: The command-line options, without the program name (None: `sys.argv[1:]`).
        prog: The program name `--help` shows (None: the script's name; the `distill-trainer` command passes its own).
    """
    (args,) = parse_recipe_args((AnalyzeArguments,), argv, prog, __doc__)
    if not os.path.isdir(args.study_dir):
        raise ValueError(f"--study_dir {args.study_dir!r} is not a folder (it is where the study's runs are).")
    if args.resamples < 1:
        raise ValueError(f"--resamples {args.resamples}: the paired bootstrap needs at least 1 resample.")
    own = {"precision": PRECISION_RESULTS_FILE, "causal": CAUSAL_RESULTS_FILE, "v3": RESULTS_FILE}.get(
        args.plan, "success_metrics.json"
    )
    report = os.path.join(args.output_dir, "REPORT.md")
    if os.path.isfile(report) and not os.path.isfile(os.path.join(args.output_dir, own)):
        raise ValueError(
            f"--output_dir {args.output_dir} holds a REPORT.md that this plan did not write (no {own} beside it): "
            "it would be replaced. Give another --output_dir."
        )
    for option in ("low_resource_dir", "six_layer_dir"):
        if getattr(args, option) is not None and args.plan != "v3":
            raise ValueError(f"--{option} is a part of study v3's report: it needs --plan v3, not {args.plan}.")
    if args.plan == "precision":
        result = write_precision_report(args.study_dir, args.output_dir)
        print(f"wrote {args.output_dir}/REPORT.md (plan precision): {len(result['pairs'])} pair(s), {result['task']}")
        return result
    if args.plan == "causal":
        result = write_causal_report(args.study_dir, args.output_dir, args.resamples)
        done = ", ".join(result["task_order"]) or "no task"
        print(f"wrote {args.output_dir}/REPORT.md, {CAUSAL_RESULTS_FILE} and its figures (plan causal) for {done}")
        return result
    if args.plan == "v3":
        result = write_v3_report(
            args.study_dir,
            args.output_dir,
            args.resamples,
            low_resource_dir=args.low_resource_dir,
            six_layer_dir=args.six_layer_dir,
        )
        done = ", ".join(result["tasks"])
        print(f"wrote {args.output_dir}/REPORT.md, {RESULTS_FILE} and its figures (plan v3) for {done}")
        return result
    metrics = analyze_study(args.study_dir, args.output_dir, args.resamples)
    print(
        f"wrote {args.output_dir}/REPORT.md, master_results.csv, success_metrics.json and plots for "
        f"{', '.join(task for task in metrics if task != 'grids')}"
    )
    return metrics


if __name__ == "__main__":
    main()
