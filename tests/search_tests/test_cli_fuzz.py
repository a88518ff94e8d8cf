"""Every option of the command line and every key of a config file given a bad value: never a traceback, always exit
2 with one line that names the option (or the file's key) before anything starts. The table covers every option the
parser declares, so a new option without bad values fails here."""

from __future__ import annotations

from pathlib import Path

import pytest

from search import main
from search.command_line.options import Option, declared
from trainables.trial_config import KNOBS, knob_range

NUMBERS = {int: ["abc", "1.5", ""], float: ["abc", ""]}
MISSING = "/nonexistent/search-fuzz"
UNDER_A_FILE = "{tmp}/a-file/below"  # a folder path through a file: nothing can be created there
# values of the right type that are still wrong, per option; the base command each runs in (default: egg --demo)
BAD = {
    "--data": [MISSING],
    "--demo": [],
    "--download": [],
    "--image-size": ["8", "0", "-32"],
    "--trials": ["0", "-3"],
    "--max-epochs": ["0"],
    "--backbones": ["resnet81"],
    "--pretrained": ["maybe"],
    "--weights": [MISSING],
    "--prescreen": ["0"],
    "--time-budget": ["0", "soon", "-5m", "1h-3m"],
    "--warm-start": [MISSING],
    "--seed": ["-1", str(2**32)],
    "--gpus-per-trial": ["-0.5", "1.5", "nan", "inf"],
    "--cpus-per-trial": ["0", "-1"],
    "--concurrency": ["0"],
    "--compile": [],
    "--address": ["127.0.0.1:1", "nohost", "localhost:notaport"],
    "--autoscaling": [],
    "--storage": [UNDER_A_FILE],
    "--dashboard-port": ["-1", "70000"],
    "--max-failures": ["-1"],
    "--out": [UNDER_A_FILE],
    "--resume": [],
    "--overwrite": [],
    "--no-retrain": [],
    "--retrain-again": [],
    "--retrain-seeds": ["0"],
    "--soup": [],
    "--ensemble": ["1", "-2"],
    "--tta": [],
    "--mlflow": ["nonsense://nowhere"],
    "--verbose": [],
    "--config": [MISSING, "{tmp}/a-file"],
}
BASE = {"--data": ["egg"], "--weights": ["egg", "--demo", "--pretrained", "required"]}
NAMED = {"--backbones": "backbone"}  # what the line names instead of the option


def _options() -> dict[str, Option | None]:
    """Every flag of a search, from the one declaration (``--config``: the parser's own)."""
    flags = {how.spelling(name): how for name, how in declared().items() if how.on_command_line}
    return flags | {"--config": None}


def _cases() -> list[tuple[str, str]]:
    cases = []
    for option, how in _options().items():
        if how is not None and how.parse is None:
            cases.append((option, "=yes"))  # a flag given a value
        else:
            kind = how.parse if how is not None else str
            cases += [(option, v) for v in NUMBERS.get(kind, [])] + [(option, v) for v in BAD.get(option, [])]
    # importing MLflow to check the URI takes 11 s
    return [pytest.param(*c, marks=pytest.mark.slow) if c[0] == "--mlflow" else c for c in cases]


def test_the_table_covers_every_option():
    assert set(_options()) == set(BAD), "give each new option its bad values in BAD"


def _one_line_exit_2(argv: list[str], capsys, names: str) -> None:
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, (argv, err)
    assert len(err) == 1 and err[0].startswith("error: "), (argv, err)
    assert names in err[0], (argv, err)


@pytest.fixture()
def tmp(tmp_path) -> Path:
    (tmp_path / "a-file").write_text("not TOML = = =")
    return tmp_path


@pytest.mark.parametrize("option, value", _cases(), ids=lambda v: repr(v))
def test_a_bad_option_value_is_one_line_naming_the_option_and_exit_2(option, value, tmp, capsys):
    given = [option + value] if value.startswith("=") else [option, value.format(tmp=tmp)]
    base = BASE.get(option, ["egg", "--demo"])
    _one_line_exit_2([*base, "--out", str(tmp / "out"), *given], capsys, NAMED.get(option, option))


def _config_keys() -> list[str]:
    return [how.spelling(name).lstrip("-").replace("-", "_") for name, how in declared().items() if how.in_file]


@pytest.mark.parametrize("key", _config_keys())
def test_a_config_key_of_the_wrong_kind_is_one_line_naming_the_file_and_key(key, tmp, capsys):
    path = tmp / "search.toml"
    path.write_text(f"{key} = {{ bad = 1 }}\n")
    _one_line_exit_2(["egg", "--demo", "--out", str(tmp / "out"), "--config", str(path)], capsys, f"{path}: {key}")


SPACE = ['"wide"', "[]", "{ low = 1, high = 0 }", '{ low = "a", high = 1 }', "{ high = 1 }", "[1, 1]"]


@pytest.mark.parametrize("value", SPACE)
@pytest.mark.parametrize("knob", [k for k in KNOBS if knob_range(k) is not None] + ["learning_rate"])
def test_a_bad_space_range_is_one_line_naming_the_knob(knob, value, tmp, capsys):
    path = tmp / "search.toml"
    path.write_text(f"[space]\n{knob} = {value}\n")
    _one_line_exit_2(["egg", "--demo", "--out", str(tmp / "out"), "--config", str(path)], capsys, knob)
