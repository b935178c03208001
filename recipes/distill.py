"""Train one student from a logit dataset.

The command `distill-trainer distill` as a script, so that `accelerate launch recipes/distill.py ...` runs it on
several processes. Same options (`--help` lists them); the code is distill_trainer.study.cli.distill.
"""

from distill_trainer.study.cli.distill import main

__all__ = ["main"]

if __name__ == "__main__":
    main()
