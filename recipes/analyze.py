"""The study's analyses over the runs of compare.py (and sweep.py grids).

The command `distill-trainer analyze` as a script, so that `accelerate launch recipes/analyze.py ...` runs it on
several processes. Same options (`--help` lists them); the code is distill_trainer.study.cli.analyze.
"""

from distill_trainer.study.cli.analyze import main

__all__ = ["main"]

if __name__ == "__main__":
    main()
