"""Run N teachers over a task's splits and write ONE logit dataset.

The command `distill-trainer extract` as a script, so that `accelerate launch recipes/extract_logits.py ...` runs it on
several processes. Same options (`--help` lists them); the code is distill_trainer.study.cli.extract.
"""

from distill_trainer.study.cli.extract import main

__all__ = ["main"]

if __name__ == "__main__":
    main()
