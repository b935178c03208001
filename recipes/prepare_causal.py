"""Write a causal-LM data folder (prompt -> completion pairs) from MNLI or QQP, with a dev split carved from train.

The command `distill-trainer prepare-causal` as a script. Same options (`--help` lists them); the code is
distill_trainer.study.cli.prepare_causal.
"""

from distill_trainer.study.cli.prepare_causal import main

__all__ = ["main"]

if __name__ == "__main__":
    main()
