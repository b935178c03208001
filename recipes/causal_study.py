"""The causal study of one task (issue 31): teachers, top-k at every k of the grid, every student run.

The command `distill-trainer causal-study` as a script. Same options (`--help` lists them); the code is
distill_trainer.study.cli.causal_study.
"""

from distill_trainer.study.cli.causal_study import main

__all__ = ["main"]

if __name__ == "__main__":
    main()
