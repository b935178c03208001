"""Fine-tune a teacher on a GLUE task and save it with its validation score.

The command `distill-trainer train-teacher` as a script, so that `accelerate launch recipes/train_teacher.py ...` runs
it on several processes. Same options (`--help` lists them); the code is distill_trainer.study.cli.train_teacher.
"""

from distill_trainer.study.cli.train_teacher import main

__all__ = ["main"]

if __name__ == "__main__":
    main()
