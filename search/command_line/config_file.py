"""A search's options in a TOML file (``--config search.toml``): any option of the command line, and the space's
ranges in a ``[space]`` table. The command line overrides the file; OUT/TASK/config.toml records what a search ran
with."""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import math
import tomllib
from collections.abc import Mapping
from pathlib import Path

from datasets import UsageError
from search.command_line.options import Option, declared
from trainables.trial_config import KNOBS, RECIPE, Range, TrialConfig, knob_range

__all__ = ["CONFIG_FILE", "config_defaults", "config_text", "file_keys", "parse_space"]

CONFIG_FILE = "config.toml"
# a valid configuration to try one knob's value in: TrialConfig's checks say what each knob may be
_PROBE = {"backbone": "resnet18", "freeze_depth": 0, "aug_strength": 0.0, "lr": 1e-3, **RECIPE}


def config_defaults(path: str) -> dict:
    """The options a config file sets, by field name (``space``: the ranges); ``UsageError`` naming the file and the
    key for anything the command line would not take."""
    try:
        table = tomllib.loads(Path(path).expanduser().read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"--config {path}: no such file") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise UsageError(f"--config {path}: not a TOML file ({e}); fix it or leave --config out") from None
    keys = file_keys()
    values: dict = {}
    for key, value in table.items():
        if key == "space":
            values["space"] = parse_space(value, f"--config {path}: [space]")
            continue
        if key.replace("-", "_") not in keys:
            close = difflib.get_close_matches(key.replace("-", "_"), [*keys, "space"], n=3)
            hint = f"did you mean {', '.join(close)}?" if close else f"the keys are {', '.join(sorted(keys))}, space"
            raise UsageError(f"--config {path}: unknown key {key!r}; {hint}")
        name, inverted = keys[key.replace("-", "_")]
        values[name] = _option_value(name, declared()[name], value, f"--config {path}: {key}", inverted)
    return values


def file_keys() -> dict[str, tuple[str, bool]]:
    """A config file's keys: each option's field name and its flag's spelling (``no_retrain``, ``time_budget``), to
    the field and whether the key says the opposite of it."""
    keys = {}
    for name, how in declared().items():
        if how.in_file:
            keys[name] = (name, False)
            keys.setdefault(how.spelling(name).lstrip("-").replace("-", "_"), (name, how.negated))
    return keys


def _option_value(name: str, how: Option, value: object, where: str, inverted: bool) -> object:
    if how.parse is None:  # a flag
        if not isinstance(value, bool):
            raise UsageError(f"{where} must be true or false, got {value!r}")
        return not value if inverted else value
    if isinstance(value, list) and name == "backbones":
        return tuple(str(v) for v in value)
    numeric = isinstance(value, int | float) and not isinstance(value, bool)
    if isinstance(value, str) or (numeric and how.parse not in (int, float, str)):  # as the command line gives it
        try:
            return how.parse(str(value))
        except (argparse.ArgumentTypeError, ValueError) as e:
            raise UsageError(f"{where}: {e}") from None
    if not numeric or how.parse is str or (how.parse is int and value % 1):
        raise UsageError(f"{where}: got {value!r}; give what {how.spelling(name)} takes")
    return how.parse(value)


def parse_space(table: object, where: str) -> dict[str, Range]:
    """``{knob: {low = .., high = ..} or [allowed values]}`` as ranges the search samples from; each bound and value
    must be one ``TrialConfig`` accepts."""
    if not isinstance(table, Mapping):
        raise UsageError(f"{where} must be a table of knob = {{low = .., high = ..}} or [values]")
    knobs = [k for k in KNOBS if knob_range(k) is not None]
    space = {}
    for name, value in table.items():
        if name not in knobs:
            close = difflib.get_close_matches(name, knobs, n=3)
            hint = f"did you mean {', '.join(close)}?" if close else f"the knobs are {', '.join(knobs)}"
            raise UsageError(f"{where}: unknown knob {name!r}; {hint} (backbones is an option of its own)")
        space[name] = _knob_range(name, value, f"{where} {name}")
    return space


def _knob_range(name: str, value: object, where: str) -> Range:
    declared = knob_range(name)
    kind = type(declared.choices[0]) if declared.choices else type(declared.low)
    if isinstance(value, list):
        if not value or len(set(value)) != len(value):
            raise UsageError(f"{where}: give one or more different values, got {value!r}")
        r = Range(choices=tuple(_typed(v, kind, where) for v in value))
        points = list(r.choices)
    elif isinstance(value, Mapping) and set(value) <= {"low", "high", "log"} and {"low", "high"} <= set(value):
        low, high = _typed(value["low"], kind, where), _typed(value["high"], kind, where)
        r = Range(low, high, log=bool(value.get("log", declared.log)))
        if not low < high or (r.log and low <= 0):
            raise UsageError(f"{where}: low must be below high (and above 0 on a log scale), got {low} and {high}")
        points = [low, high]
    else:
        raise UsageError(f"{where}: give {{low = .., high = ..}} or a list of values, got {value!r}")
    for point in points:
        try:
            TrialConfig(**{**_PROBE, name: point})
        except UsageError as e:
            raise UsageError(f"{where}: {e}") from None
    return r


def _typed(value: object, kind: type, where: str) -> object:
    if isinstance(value, bool) or not isinstance(value, int | float) or (kind is int and value % 1):
        raise UsageError(f"{where}: {value!r} is not {'a whole number' if kind is int else 'a number'}")
    if not math.isfinite(value):
        raise UsageError(f"{where}: {value!r} is not finite")
    return kind(value)


def config_text(options: object) -> str:
    """A search's resolved options as a config file that repeats it (``--config OUT/TASK/config.toml``)."""
    lines, space = [], {}
    for f in dataclasses.fields(options):
        value = getattr(options, f.name)
        if f.name == "space":
            space = value or {}
        elif f.name in file_keys() and value is not None:
            lines.append(f"{f.name} = {_toml(value)}")
    lines.append("\n[space]")
    for name in (k for k in KNOBS if knob_range(k) is not None):
        r = space.get(name) or knob_range(name)
        bounds = f"{{ low = {_toml(r.low)}, high = {_toml(r.high)}, log = {_toml(r.log)} }}"
        lines.append(f"{name} = {_toml(list(r.choices)) if r.choices else bounds}")
    return "\n".join(lines) + "\n"


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'
