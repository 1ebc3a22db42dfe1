"""Command line and `--config_file` handling, the way sd-scripts does it.

The parser is built from kr's pinned option manifest (vendor/sd-scripts-args.json), so every
sd-scripts option is accepted with sd-scripts' flags, types, defaults and choices; argparse errors
exit 2. `--config_file` follows library/train_util.py read_config_from_file: `.toml` is appended if
missing, a missing file logs `<path> not found.` and exits 1, top-level tables are flattened one
level, unknown keys are kept silently, values are not type-checked, and the command line wins.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import pathlib
import sys

logger = logging.getLogger(__name__)

SCRIPTS = {"sdxl": "sdxl_train_network", "sd15": "train_network"}
_TYPES = {"str": str, "int": int, "float": float, "Path": pathlib.Path}


def int_or_float(value: str):
    """sd-scripts' type for warmup/decay steps: `N` steps, a float below 1 as a ratio, or `N%`."""
    if value.endswith("%"):
        try:
            return float(value[:-1]) / 100.0
        except ValueError:
            raise argparse.ArgumentTypeError(f"Value '{value}' is not a valid percentage")
    try:
        if float(value) >= 1:
            return int(value)
        return float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{value}' is not an int or float")


def load_manifest(script: str) -> dict[str, dict]:
    from kohya_runner.resources import data_dir

    manifest = json.loads((data_dir("vendor") / "sd-scripts-args.json").read_text(encoding="utf-8"))
    return manifest["scripts"][script]


def build_parser(family: str) -> argparse.ArgumentParser:
    script = SCRIPTS[family]
    parser = argparse.ArgumentParser(prog=f"{script}.py")
    for dest, spec in load_manifest(script).items():
        _add_option(parser, dest, spec)
    return parser


def _add_option(parser: argparse.ArgumentParser, dest: str, spec: dict) -> None:
    if spec["action"] == "storetrue":
        parser.add_argument(*spec["flags"], dest=dest, action="store_true")
        return
    kwargs: dict = {"dest": dest, "default": spec["default"]}
    if spec["type"] == "int_or_float":
        kwargs["type"] = int_or_float
    elif spec["type"] is not None:
        kwargs["type"] = _TYPES[spec["type"]]
    if spec["nargs"] is not None:
        kwargs["nargs"] = spec["nargs"]
    if spec["choices"] is not None:
        kwargs["choices"] = spec["choices"]
    parser.add_argument(*spec["flags"], **kwargs)


def parse_args(family: str, argv: list[str] | None = None) -> argparse.Namespace:
    """CLI first (exit 2 on errors), then `--config_file` underneath it."""
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(family)
    args = parser.parse_args(argv)
    return read_config_from_file(args, parser, argv)


def read_config_from_file(args: argparse.Namespace, parser: argparse.ArgumentParser,
                          argv: list[str]) -> argparse.Namespace:
    if not args.config_file:
        return args

    config_path = args.config_file if args.config_file.endswith(".toml") else args.config_file + ".toml"

    if args.output_config:
        _write_output_config(args, parser, config_path)

    if not os.path.exists(config_path):
        logger.info(f"{config_path} not found.")
        sys.exit(1)

    import toml

    logger.info(f"Loading settings from {config_path}...")
    with open(config_path, "r", encoding="utf-8") as handle:
        config = toml.load(handle)

    # section names are cosmetic: every table's keys land in one flat namespace
    flat: dict = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update(value)
        else:
            flat[key] = value

    # the file's values replace argparse defaults; the command line is parsed again on top
    args = parser.parse_args(argv, namespace=argparse.Namespace(**flat))
    args.config_file = os.path.splitext(args.config_file)[0]
    logger.info(args.config_file)
    return args


def _write_output_config(args: argparse.Namespace, parser: argparse.ArgumentParser, config_path: str):
    """`--output_config`: write the non-default CLI values as flat TOML and stop."""
    import toml

    if os.path.exists(config_path):
        logger.error(f"Config file already exists. Aborting... / 出力先の設定ファイルが既に存在します: {config_path}")
        sys.exit(1)
    values = dict(vars(args))
    for key in ("config_file", "output_config", "wandb_api_key"):
        values.pop(key, None)
    defaults = vars(parser.parse_args([]))
    values = {k: (str(v) if isinstance(v, pathlib.Path) else v)
              for k, v in values.items() if not (k in defaults and v == defaults[k])}
    with open(config_path, "w", encoding="utf-8") as handle:
        toml.dump(values, handle)
    logger.info(f"Saved config file / 設定ファイルを保存しました: {config_path}")
    sys.exit(0)


def non_default_options(args: argparse.Namespace, family: str, names) -> list[str]:
    """Those of `names` whose value differs from sd-scripts' default (for the 'not honoured' line)."""
    manifest = load_manifest(SCRIPTS[family])
    found = []
    for name in names:
        value = getattr(args, name, None)
        default = manifest[name]["default"] if name in manifest else None
        if value not in (None, False) and value != default:
            found.append(name)
    return found
