"""The whole study for one task: teachers -> logit dataset -> every method x seed -> results table.

The command `distill-trainer study` as a script, so that `accelerate launch recipes/compare.py ...` runs it on
several processes. Same options (`--help` lists them); the code is distill_trainer.study.cli.study.
"""

from distill_trainer.study.cli.study import main

__all__ = ["main"]

if __name__ == "__main__":
    main()
