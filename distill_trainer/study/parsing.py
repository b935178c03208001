"""The recipes' command lines: `HfArgumentParser` over their dataclasses, with `--config FILE.yaml` giving defaults
that flags override, and comma-separated list values."""

from __future__ import annotations

import argparse
import logging
import sys
import types
import typing
from collections.abc import Container, Sequence
from dataclasses import fields

import yaml
from transformers import HfArgumentParser

from ..config import fast_training_defaults

logger = logging.getLogger(__name__)


def parse_recipe_args(
    dataclass_types: Sequence[type],
    argv: Sequence[str] | None = None,
    prog: str | None = None,
    description: str | None = None,
) -> tuple:
    """`HfArgumentParser` over `dataclass_types`, with `--config FILE.yaml` giving defaults that flags override.

    Training options start from `fast_training_defaults()` (length-grouped batches; float32 unless `--bf16 true`),
    below the config file and the command line: `--train_sampling_strategy random` turns the grouping off. The
    file's keys are the options' names (without --); one task config serves every recipe, so a key that this
    command has no option for is ignored with a warning naming it and the file.
    `prog` and `description` are what `--help` shows (default: the script's name, nothing).

    Args:
        dataclass_types: The recipe's argument dataclasses; one instance of each is returned, in this order.
        argv: The command-line arguments without the program name (None: `sys.argv[1:]`).
        prog: The program name `--help` and the config warnings show.
        description: The text `--help` shows above the options (the recipes pass their module docstring).
    """
    parser = HfArgumentParser(dataclass_types, prog=prog, description=description, formatter_class=HelpFormatter)
    parser.add_argument(  # read below, before parsing; here so that --help shows it
        "--config",
        default=argparse.SUPPRESS,
        metavar="FILE.yaml",
        help="YAML file of option values (keys as the flags, without --); flags on the command line win.",
    )
    options = option_names(dataclass_types)
    lists = list_item_types(dataclass_types)
    parser.set_defaults(**{key: value for key, value in fast_training_defaults().items() if key in options})
    config_reader = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    config_reader.add_argument("--config")
    known, argv = config_reader.parse_known_args(list(sys.argv[1:] if argv is None else argv))
    if known.config is not None:
        parser.set_defaults(**config_values(known.config, options, lists, parser.prog))
    return parser.parse_args_into_dataclasses(args=split_list_values(argv, lists))


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """`--help` with each option's default (as `HfArgumentParser` shows them) and the description as written."""


def option_names(dataclass_types: Sequence[type]) -> set[str]:
    """The options `HfArgumentParser` makes of `dataclass_types`: one per field that `__init__` takes.

    Args:
        dataclass_types: The recipe's argument dataclasses.
    """
    return {f.name for dtype in dataclass_types for f in fields(dtype) if f.init}


def list_item_types(dataclass_types: Sequence[type]) -> dict[str, type]:
    """The list-valued options and their item type: the fields typed `list[X]` (or `list[X] | None`), which
    `HfArgumentParser` gives `nargs="+"` and `type=X`.

    Args:
        dataclass_types: The recipe's argument dataclasses.
    """
    items = {}
    for dtype in dataclass_types:
        hints = typing.get_type_hints(dtype)
        for f in fields(dtype):
            hint = hints[f.name]
            if typing.get_origin(hint) in (typing.Union, types.UnionType):
                members = [arg for arg in typing.get_args(hint) if arg not in (type(None), str)]
                hint = members[0] if len(members) == 1 else hint
            if f.init and typing.get_origin(hint) is list:
                items[f.name] = typing.get_args(hint)[0]
    return items


def config_values(path: str, options: set[str], lists: dict[str, type], prog: str) -> dict:
    """The option values of a YAML config file, list options as lists of their item type (argparse converts a
    string default through the option's type, but not a list, nor a comma-separated string into one).

    Args:
        path: The YAML config file.
        options: The option names the recipe has (`option_names`); other keys are ignored with a warning.
        lists: The list-valued options and their item types (`list_item_types`).
        prog: The program name the warning names.
    """
    with open(path) as handle:
        values = yaml.safe_load(handle) or {}
    if not isinstance(values, dict):
        raise ValueError(f"{path} must be a mapping of option names to values, got {type(values).__name__}.")
    unused = sorted(set(values) - options)
    if unused:  # one task config serves every recipe: each takes the keys it knows
        logger.warning("%s ignores these keys of %s: %s", prog, path, unused)
    values = {key: value for key, value in values.items() if key in options}
    for key, item_type in lists.items():
        if values.get(key) is not None:
            value = values[key]
            items = value.split(",") if isinstance(value, str) else value if isinstance(value, list) else [value]
            values[key] = [item_type(item) for item in items]
    return values


def split_list_values(argv: list[str], lists: Container[str]) -> list[str]:
    """`--seeds 42,43,44` (the comma form users and configs know) as `--seeds 42 43 44`, which argparse
    gives list-valued options.

    Args:
        argv: The command-line arguments (without the program name).
        lists: The names of the list-valued options (without --).
    """
    out, in_list = [], False
    for token in argv:
        if token.startswith("--"):
            name, _, value = token[2:].partition("=")
            in_list = name.replace("-", "_") in lists  # `--student-layers` is argparse's alias
            out += [f"--{name}", *value.split(",")] if in_list and value else [token]
        else:
            out += token.split(",") if in_list else [token]
    return out
