"""T x alpha grid for one fusion strategy (or several: --methods) on an existing logit dataset -> a CSV of scores.

    distill-trainer sweep --config recipes/configs/sst2.yaml --logit_dataset runs/sst2/logits \
        --student_model all-MiniLM-L6-v2 --student_layers 0,2,4 --fusion single --teacher_index 0 \
        --temperatures 3,6,9 --alphas 0.3,0.5,0.7 --output_dir runs/sst2/sweep-single0

With `--methods average,gating` each method gets the grid and the best T per method is printed (what
compare.py's --method_temperatures takes); `--method_temperatures gating=3` sweeps alpha only, at T=3.
"""

import math
from dataclasses import dataclass, field

from distill_trainer import DistillationConfig
from distill_trainer.study.args import StudentArguments, TaskArguments, parse_recipe_args
from distill_trainer.study.runner import sweep_grid
from distill_trainer.study.runs import method_temperatures


@dataclass
class GridArguments:
    temperatures: list[float] = field(
        default_factory=lambda: [3.0, 6.0, 9.0], metadata={"help": "Temperatures: 3 6 9 or 3,6,9."}
    )
    alphas: list[float] = field(
        default_factory=lambda: [0.3, 0.5, 0.7], metadata={"help": "Alphas: 0.3 0.5 or 0.3,0.5."}
    )
    grid_csv: str | None = field(
        default=None, metadata={"help": "Where the grid goes (default: <output_dir>/grid.csv)."}
    )
    methods: list[str] | None = field(
        default=None,
        metadata={
            "help": "Study methods to sweep, each in <output_dir>/<method>/ (as compare.py names them, e.g. average "
            "gating average+calibrated); default: --fusion alone."
        },
    )
    method_temperatures: list[str] = field(
        default_factory=list,
        metadata={"help": "METHOD=T: sweep that method's alpha at this T only (e.g. gating=3)."},
    )

    def __post_init__(self):  # every method and value refused before any student trains, naming its option
        method_temperatures(self.method_temperatures, self.methods or [])
        for option, values, valid, rule in (
            ("--temperatures", self.temperatures, lambda t: math.isfinite(t) and t > 0, "finite and > 0"),
            ("--alphas", self.alphas, lambda a: 0.0 <= a <= 1.0, "in [0, 1]"),
        ):
            bad = [value for value in values if not valid(value)]
            if bad or not values:
                raise ValueError(f"{option} must be one or more values {rule}, got {values}.")


def main(argv=None, prog=None):
    """Run `distill-trainer sweep` and print the grid and the best T per method; returns the grid's table.

    Args:
        argv: The command-line options, without the program name (None: `sys.argv[1:]`).
        prog: The program name `--help` shows (None: the script's name; the `distill-trainer` command passes its own).
    """
    task_args, student_args, grid_args, config = parse_recipe_args(
        (TaskArguments, StudentArguments, GridArguments, DistillationConfig), argv, prog, __doc__
    )
    grid = sweep_grid(
        task_args.task_data(),
        student_args.options,
        config,
        grid_args.temperatures,
        grid_args.alphas,
        grid_args.grid_csv,
        grid_args.methods,
        method_temperatures(grid_args.method_temperatures, grid_args.methods or []),
    )
    print(grid.pivot_table(index=["method", "temperature"], columns="alpha", values="score").round(4).to_string())
    best = grid.loc[grid.groupby("method")["score"].idxmax()]
    print("best T per method:", " ".join(f"{m}={t:g}" for m, t in zip(best.method, best.temperature, strict=False)))
    return grid


if __name__ == "__main__":
    main()
