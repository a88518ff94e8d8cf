"""Every option declared once: the command line, a config file's keys and ``run()``'s keywords all take exactly the
declared options, with the declared defaults, and a search's config.toml gives back the options it was written
from."""

from __future__ import annotations

import dataclasses
import shlex

import pytest

from datasets import UsageError, get_task
from search.api import _options as api_options
from search.command_line.config_file import config_defaults, config_text, file_keys
from search.command_line.main import _command
from search.command_line.options import GROUPS, SearchOptions, declared
from search.command_line.parser import search_parser

DEFAULTS = {f.name: f.default for f in dataclasses.fields(SearchOptions) if f.name in declared()}
# a value other than the default for each option the command line takes, as typed and as parsed
GIVEN = {
    "data": ("d", "d"),
    "image_size": ("48", 48),
    "trials": ("3", 3),
    "max_epochs": ("2", 2),
    "backbones": ("resnet10t,resnet18", ("resnet10t", "resnet18")),
    "pretrained": ("off", "off"),
    "weights": ("w", "w"),
    "prescreen": ("1", 1),
    "time_budget_s": ("1h30m", 5400.0),
    "warm_start": ("ws", "ws"),
    "seed": ("7", 7),
    "gpus_per_trial": ("0.5", 0.5),
    "cpus_per_trial": ("2", 2),
    "concurrency": ("3", 3),
    "address": ("auto", "auto"),
    "retrain_seeds": ("2", 2),
    "ensemble": ("3", 3),
    "max_failures": ("0", 0),
    "out": ("o", "o"),
    "storage": ("s3://b/p", "s3://b/p"),
    "dashboard_port": ("0", 0),
    "mlflow": ("sqlite:///m.db", "sqlite:///m.db"),
}


def test_the_command_line_takes_every_declared_option_with_its_declared_default():
    parsed = vars(search_parser().parse_args(["egg"]))
    on_line = {name for name, how in declared().items() if how.on_command_line}
    assert set(parsed) == on_line | {"tasks", "config"}
    assert {name: parsed[name] for name in on_line} == {name: DEFAULTS[name] for name in on_line}
    assert {how.group for how in declared().values()} <= set(GROUPS)


@pytest.mark.parametrize("name", [n for n, how in declared().items() if how.on_command_line])
def test_each_flag_sets_its_own_field(name):
    how = declared()[name]
    words = [how.spelling(name), GIVEN[name][0]] if how.parse else [how.spelling(name)]
    parsed = vars(search_parser().parse_args(["egg", *words]))
    expected = GIVEN[name][1] if how.parse else not DEFAULTS[name]
    assert parsed[name] == expected
    assert {k: v for k, v in parsed.items() if k in DEFAULTS and k != name} == {
        k: v for k, v in DEFAULTS.items() if k != name and k in parsed
    }


def test_run_takes_the_declared_keywords_and_nothing_else():
    every = {name: DEFAULTS[name] for name in declared()}
    assert api_options("egg", dict(every)) == SearchOptions(task="egg")
    with pytest.raises(UsageError, match="unknown option 'max_epoch'; did you mean max_epochs"):
        api_options("egg", {"max_epoch": 3})


def test_a_config_file_repeats_the_options_it_was_written_from(tmp_path):
    given = {name: value for name, (_, value) in GIVEN.items() if name not in ("weights", "warm_start")}
    options = SearchOptions(task="egg", demo=True, soup=True, retrain_again=True, **given).for_task(get_task("egg"))
    path = tmp_path / "config.toml"
    path.write_text(config_text(options))
    read = config_defaults(str(path))
    in_file = {name for name, how in declared().items() if how.in_file}
    assert {k: v for k, v in read.items() if k != "space"} == {
        name: getattr(options, name) for name in in_file if getattr(options, name) is not None
    }
    assert read["space"] is not None


def test_a_flags_spelling_is_a_key_too(tmp_path):
    path = tmp_path / "search.toml"
    path.write_text('no_retrain = true\ntime_budget = "20m"\n')
    assert config_defaults(str(path)) == {"retrain": False, "time_budget_s": 1200.0}
    assert {"resume", "overwrite", "space", "config"}.isdisjoint(file_keys())


def test_the_command_that_continues_a_search_repeats_every_option_given(tmp_path):
    path = tmp_path / "search.toml"
    path.write_text("trials = 9\n[space]\nlr = { low = 1e-4, high = 1e-3 }\n")
    words = [f"{how.spelling(n)}={GIVEN[n][0]}" if how.parse else how.spelling(n) for n, how in declared().items()]
    words = [w for w in words if w.split("=")[0] not in ("--resume", "--overwrite", "--space")]
    parser = search_parser()
    parser.set_defaults(**config_defaults(str(path)))
    given = parser.parse_args(["egg", "--config", str(path), *words])
    again = search_parser()
    again.set_defaults(**config_defaults(str(path)))
    repeated = again.parse_args(shlex.split(_command(parser, given, ["egg"], resume=True))[3:])
    assert vars(repeated) == {**vars(given), "resume": True}
    # what the config file gave, the command leaves to the file: it names the file, not the values
    only_file = parser.parse_args(["egg", "--config", str(path)])
    assert _command(parser, only_file, ["egg"], resume=False) == f"python -m search egg --config {path}"
    plain = search_parser()
    assert _command(plain, plain.parse_args(["egg", "--trials", "3"]), ["egg"], True) == (
        "python -m search egg --trials 3 --resume"
    )
