"""Dump sd-scripts' argument parsers as JSON, in the format of kr's vendor/sd-scripts-args.json.

Run by the *trainer* environment's python with the sd-scripts checkout as the working directory:

    python drift_probe.py OUT.json

It must not import kohya_runner (the trainer environment does not have it) and writes its result to
OUT.json rather than stdout, because importing the trainer scripts prints log noise to stdout.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys

SCRIPTS = ("train_network", "sdxl_train_network")
SKIPPED_ACTIONS = ("help", "version")  # argparse's own, not training options


def action_kind(action: argparse.Action) -> str:
    # _StoreTrueAction -> "storetrue", BooleanOptionalAction -> "booleanoptional"
    name = type(action).__name__.lstrip("_")
    if name.endswith("Action"):
        name = name[: -len("Action")]
    return name.lower()


def type_name(kind) -> str | None:
    if kind is None:
        return None
    return getattr(kind, "__name__", type(kind).__name__)  # a custom function keeps its own name


def jsonable(value):
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple, range, set, frozenset)):
        return [jsonable(item) for item in value]
    if isinstance(value, dict):
        return {str(key): jsonable(item) for key, item in value.items()}
    return repr(value)


def describe(parser: argparse.ArgumentParser) -> dict:
    options = {}
    for action in parser._actions:
        kind = action_kind(action)
        if kind in SKIPPED_ACTIONS:
            continue
        options[action.dest] = {
            "action": kind,
            "choices": jsonable(action.choices),
            "default": jsonable(action.default),
            "flags": list(action.option_strings),
            "nargs": action.nargs,
            "required": bool(action.required),
            "type": type_name(action.type),
        }
    return dict(sorted(options.items()))


def main(out_path: str) -> None:
    sys.path.insert(0, os.getcwd())
    scripts = {name: describe(importlib.import_module(name).setup_parser()) for name in SCRIPTS}
    with open(out_path, "w", encoding="utf-8") as handle:
        json.dump({"scripts": scripts}, handle, indent=1, sort_keys=True)


if __name__ == "__main__":
    main(sys.argv[1])
