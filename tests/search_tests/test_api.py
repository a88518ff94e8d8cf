"""The Python API and a config file run the search the command line runs."""

import json

import pandas as pd
import pytest

import search
from datasets import UsageError
from results import CONFIG_COLUMNS

CONFIG = """
backbones = ["resnet10t"]
trials = 5                  # the command line's --trials 2 overrides it
max-epochs = 1
image_size = 32
pretrained = "off"
concurrency = 1
seed = 5
no-retrain = true

[space]
freeze_depth = [0, 2]        # the depths allowed
lr = { low = 2e-4, high = 2e-3 }
batch_size = [16]            # not the recipe's 32: the recipe is left out
"""


def test_run_and_the_command_line_with_one_config_file_search_the_same_configurations(ray_cluster, tiny_eggs, tmp_path):
    config = tmp_path / "search.toml"
    config.write_text(CONFIG)
    argv = [str(tiny_eggs), "--config", str(config), "--trials", "2", "--out", str(tmp_path / "cli")]
    assert search.main(argv) == 0

    result = search.run(str(tiny_eggs), config=str(config), trials=2, out=str(tmp_path / "api"))

    cli = tmp_path / "cli" / result.folder.name
    assert result.folder == tmp_path / "api" / cli.name
    assert result.config == json.loads((cli / "best.json").read_text())["config"]
    assert result.best == json.loads((result.folder / "best.json").read_text())

    def configs(trials: pd.DataFrame) -> pd.DataFrame:
        return trials[CONFIG_COLUMNS].sort_values(CONFIG_COLUMNS).reset_index(drop=True)

    pd.testing.assert_frame_equal(configs(result.trials), configs(pd.read_parquet(cli / "trials.parquet")))
    trials = result.trials
    assert len(trials) == 2, "the command line's --trials overrides the file's"
    assert set(trials["freeze_depth"]) <= {0, 2} and set(trials["batch_size"]) == {16}
    assert set(trials["source"]) == {"sampler"}, "a recipe outside the file's space does not run"
    assert trials["lr"].between(2e-4, 2e-3).all()
    assert len(result.epochs) == trials["epochs_run"].sum() and not result.model_dir.exists()
    assert ray_cluster.is_initialized(), "the caller's Ray is left running"

    # config.toml repeats the search: given back with --resume, the search is the same one, and finished
    written = cli / "config.toml"
    assert "trials = 2" in written.read_text() and "freeze_depth = [0, 2]" in written.read_text()
    assert search.main([str(tiny_eggs), "--config", str(written), "--resume"]) == 0


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("max_epoch = 4", "unknown key 'max_epoch'; did you mean max_epochs"),
        ("trials = 2.5", "trials: got 2.5; give what --trials takes"),
        ("[space]\nlr = { low = 1e-2, high = 1e-3 }", "[space] lr: low must be below high"),
        ("[space]\nfreeze_depth = [3, 7]", "[space] freeze_depth: freeze_depth must be 0..5, got 7"),
        ("[space]\nmomentum = [0.9]", "unknown knob 'momentum'"),
        ("trials = ", "not a TOML file"),
    ],
)
def test_a_bad_config_file_exits_2_naming_the_key(text, message, tmp_path, capsys):
    config = tmp_path / "search.toml"
    config.write_text(text)
    assert search.main(["egg", "--demo", "--config", str(config), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: --config {config}") and message in err and len(err.splitlines()) == 1


def test_run_refuses_an_unknown_option_naming_it_and_the_closest():
    with pytest.raises(UsageError, match=r"run\(\): unknown option 'max_epoch'; did you mean max_epochs"):
        search.run("egg", demo=True, max_epoch=4)
