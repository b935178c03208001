"""T x alpha grid for one fusion strategy (or several: --methods) -> a CSV of scores.

The command `distill-trainer sweep` as a script, so that `accelerate launch recipes/sweep.py ...` runs it on
several processes. Same options (`--help` lists them); the code is distill_trainer.study.cli.sweep.
"""

from distill_trainer.study.cli.sweep import GridArguments, main

__all__ = ["GridArguments", "main"]

if __name__ == "__main__":
    main()
