"""`python -m distill_trainer.study.cli COMMAND ...`, the same as the installed `distill-trainer` command."""

from distill_trainer.study.cli import console_main

if __name__ == "__main__":
    console_main()
