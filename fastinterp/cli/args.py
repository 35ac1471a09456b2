"""Argument helpers of the command line: each subcommand's parser, and argument types that make a
bad path fail at parsing, naming the flag and the command to run instead."""

from __future__ import annotations

import argparse
from pathlib import Path

from fastinterp.cli.commands import COMMANDS

__all__ = ["checkpoint_file", "command_parser", "dataset_folder", "image_size", "key_values", "named_paths",
           "normalize", "positive_int", "shipped_checkpoint", "shipped_names"]


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


def normalize(text: str) -> dict | None:
    """--normalize: "imagenet", "none" or "M1,M2,M3/S1,S2,S3" (``maps.preprocess.parse_normalize``)."""
    from fastinterp.maps.preprocess import parse_normalize

    try:
        return parse_normalize(text, "")
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error).lstrip(": ")) from None


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value}")
    return value


def image_size(text: str) -> tuple[int, int]:
    """--size / --input-size: "H" (square) or "HxW", pixels >= 1 -> (H, W)."""
    height, sep, width = text.lower().partition("x")
    try:
        size = (int(height), int(width)) if sep else (int(height), int(height))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected H or HxW (pixels), got {text!r}") from None
    if min(size) < 1:
        raise argparse.ArgumentTypeError(f"expected sizes >= 1, got {text!r}")
    return size


def shipped_names(kind: str) -> str:
    """The names a shipped checkpoint of ``kind`` ("cnn" or "generator") is taken by, for errors."""
    from fastinterp import pretrained

    return ", ".join(["demo", *pretrained.names(kind)])


def shipped_checkpoint(spec: str, kind: str) -> tuple[str, Path] | None:
    """(registry name, file) of the shipped ``kind`` checkpoint ``spec`` names ("demo": the demo's),
    else None."""
    from fastinterp import pretrained

    if spec != "demo" and spec not in pretrained.names(kind):
        return None
    name = pretrained.DEMO[0 if kind == "cnn" else 1] if spec == "demo" else spec
    return name, pretrained.path(name)


def named_paths(items: list[str] | None, default: dict[str, Path] | None, flag: str,
                kind: str | None = None) -> dict[str, Path] | None:
    """``[NAME=]CHECKPOINT`` items -> {name: path}; ``default`` when none are given. With ``kind``
    ("cnn" or "generator"), a CHECKPOINT that is a shipped name (or "demo") is that shipped file,
    named by its registry name; otherwise it is a file, named by its stem. Raises ValueError
    naming ``flag`` (and the shipped names) for anything else."""
    if not items:
        return default
    out = {}
    for item in items:
        name, sep, spec = item.partition("=")
        if not sep:
            name, spec = "", item
        shipped = shipped_checkpoint(spec, kind) if kind is not None else None
        if shipped is not None:
            out[name or shipped[0]] = shipped[1]
            continue
        path = Path(spec)
        if not path.is_file():
            also = f", nor a shipped {kind} ({shipped_names(kind)})" if kind is not None else ""
            raise ValueError(f"{flag}: {spec} is not a file{also}")
        out[name or path.stem] = path
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
