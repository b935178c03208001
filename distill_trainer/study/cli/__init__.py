"""The `distill-trainer` command: one subcommand per recipe, with the recipe's options and `--config FILE.yaml`.

    distill-trainer --help
    distill-trainer distill --help
    distill-trainer study --config recipes/configs/sst2.yaml --seeds 42,43,44

`recipes/<name>.py` are the same commands as scripts (for `accelerate launch recipes/distill.py ...`); both call
the `main(argv, prog)` of this package's modules. The commands need the study's dependencies:
`pip install 'distill-trainer[study]'`.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# Subcommand -> (module of this package, what it does); recipes/<script>.py runs the same module.
COMMANDS = {
    "prepare-causal": ("prepare_causal", "write MNLI/QQP pairs as a causal-LM prompt -> completion folder"),
    "train-teacher": ("train_teacher", "fine-tune a teacher (GLUE or causal LM) and save it with its scores"),
    "extract": ("extract", "run teachers over a task and write one logit dataset (recipes/extract_logits.py)"),
    "distill": ("distill", "train one student from a logit dataset with a fusion strategy"),
    "sweep": ("sweep", "a temperature x alpha grid of students on a logit dataset"),
    "study": ("study", "the whole study of a task: teachers, logits, every method x seed (recipes/compare.py)"),
    "causal-study": ("causal_study", "the causal-LM study of MNLI or QQP pairs: teachers, top-k, every student run"),
    "analyze": ("analyze", "the study's tables, plots and REPORT.md from its run records"),
}
STUDY_EXTRA = "pip install 'distill-trainer[study]'"


def command_parser() -> argparse.ArgumentParser:
    """The top level: `--help` lists the subcommands; each subcommand's options are its own parser's."""
    from distill_trainer import __version__

    parser = argparse.ArgumentParser(
        prog="distill-trainer",
        description="Multi-teacher knowledge distillation: the recipes of the GLUE study as one command.",
        epilog="`distill-trainer COMMAND --help` lists a command's options. Every option also reads from "
        "--config FILE.yaml (keys as the flags, without --); flags on the command line win.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (_, summary) in COMMANDS.items():
        commands.add_parser(name, help=summary, add_help=False)
    return parser


def main(argv: Sequence[str] | None = None):
    """Run `distill-trainer COMMAND [options]`; returns what the command's `main` returns.

    Args:
        argv: The subcommand and its options, without the program name (None: `sys.argv[1:]`).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        command_parser().parse_args(argv[:1])  # --help, --version, or the error naming the commands; exits
    name, *options = argv
    try:
        module = importlib.import_module(f"{__name__}.{COMMANDS[name][0]}")
    except ModuleNotFoundError as missing:
        if missing.name and missing.name.partition(".")[0] in {"pandas", "sklearn", "yaml", "tqdm", "matplotlib"}:
            sys.exit(f"distill-trainer {name} needs {missing.name}, a dependency of the study layer: {STUDY_EXTRA}")
        raise
    return module.main(options, prog=f"distill-trainer {name}")


def console_main() -> None:
    """The installed `distill-trainer` command (setup.cfg's console script): `main` on `sys.argv`, returning
    nothing, since the console script passes the return value to `sys.exit`, where a command's result (a record,
    a dataset) would be printed and read as failure (exit status 1)."""
    main()
