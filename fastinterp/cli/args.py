"""Argument helpers of the command line: each subcommand's parser, and argument types that make a
bad path fail at parsing, naming the flag and the command to run instead."""

from __future__ import annotations

import argparse
from pathlib import Path

from fastinterp.cli.commands import COMMANDS

__all__ = ["checkpoint_file", "command_parser", "dataset_folder", "key_values", "named_paths", "positive_int"]


def command_parser(name: str) -> argparse.ArgumentParser:
    """The parser of subcommand ``name``: prog ``fastinterp <name>``, its one-line description."""
    return argparse.ArgumentParser(prog=f"fastinterp {name}", description=COMMANDS[name][1])


def checkpoint_file(text: str) -> Path:
    """A readable safetensors file (only its header is read)."""
    from safetensors import SafetensorError, safe_open

    path = Path(text)
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"{path} does not exist or is not a file")
    try:
        with safe_open(str(path), framework="pt") as handle:
            handle.metadata()
    except (SafetensorError, OSError, ValueError) as error:
        raise argparse.ArgumentTypeError(f"{path} is not a safetensors file ({error})") from None
    return path


def dataset_folder(text: str) -> Path:
    """A folder written by ``fastinterp build-dataset`` (it holds manifest.json)."""
    path = Path(text)
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"{path} is not a folder; build one with `fastinterp build-dataset`")
    if not (path / "manifest.json").is_file():
        raise argparse.ArgumentTypeError(f"{path} holds no manifest.json; build it with `fastinterp build-dataset`")
    return path


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value}")
    return value


def named_paths(items: list[str] | None, default: dict[str, Path] | None, flag: str) -> dict[str, Path] | None:
    """``[NAME=]PATH`` items -> {name: path} (the name defaults to the file's stem); ``default``
    when none are given."""
    if not items:
        return default
    out = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep:
            name, path = Path(item).stem, item
        if not Path(path).is_file():
            raise SystemExit(f"{flag}: {path} is not a file")
        out[name] = Path(path)
    return out


def key_values(parser: argparse.ArgumentParser, items: list[str], flag: str) -> dict:
    """``KEY=VALUE`` items -> {key: value}, a value read as JSON when it is (numbers, true/false),
    else kept as a string; a malformed item is a parser error naming ``flag``."""
    import json

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            parser.error(f"{flag}: expected KEY=VALUE, got {item!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out
