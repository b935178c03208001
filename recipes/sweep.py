"""T x alpha grid for one fusion strategy on an existing logit dataset -> a CSV of scores.

    python recipes/sweep.py --config recipes/configs/sst2.yaml --logit_dataset runs/sst2/logits \
        --student_model all-MiniLM-L6-v2 --student_layers 0,2,4 --fusion single --teacher_index 0 \
        --temperatures 3,6,9 --alphas 0.3,0.5,0.7 --output_dir runs/sst2/sweep-single0
"""

from dataclasses import dataclass, field

from distill_trainer import DistillationConfig
from distill_trainer.study.args import StudentArguments, TaskArguments, parse_recipe_args
from distill_trainer.study.runner import sweep_grid


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


def main(argv=None):
    task_args, student_args, grid_args, config = parse_recipe_args(
        (TaskArguments, StudentArguments, GridArguments, DistillationConfig), argv
    )
    grid = sweep_grid(
        task_args,
        student_args,
        config,
        grid_args.temperatures,
        grid_args.alphas,
        grid_args.grid_csv,
    )
    print(grid.pivot(index="temperature", columns="alpha", values="score").round(4).to_string())
    return grid


if __name__ == "__main__":
    main()
