"""Bad input exits 2 with one clear line, before Ray starts."""

import subprocess
import sys
from pathlib import Path

import pytest

from search import main


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["eggs", "--demo"], "unknown task 'eggs'; did you mean egg"),
        (["egg", "--demo", "--trials", "0"], "--trials must be a positive whole number, got 0"),
        (["egg", "--demo", "--max-epochs", "-1"], "--max-epochs must be a positive whole number, got -1"),
        (["egg", "--data", "/nonexistent/eggs"], "--data /nonexistent/eggs does not exist"),
        (["egg", "--demo", "--gpus-per-trial", "1.5"], "a fraction up to 1 (0.25 lets four trials share a GPU)"),
        (["egg", "--demo", "--gpus-per-trial", "-0.5"], "--gpus-per-trial must be 0 (CPUs only), a fraction"),
        (["egg", "--demo", "--ensemble", "1"], "--ensemble K needs K of 2 or more members, got 1"),
        (["egg", "--demo", "--soup", "--no-retrain"], "--soup and --ensemble choose models to retrain"),
    ],
)
def test_bad_arguments_exit_2_with_the_reason(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err
    assert len(err.splitlines()) == 1


def test_missing_dataset_says_where_it_looked_and_how_to_get_it(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SEARCH_DATA", str(tmp_path / "datasets"))
    assert main(["sports"]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "datasets" / "sports") in err and "data/sports" in err
    assert "kaggle datasets download -d gpiosenka/sports-classification" in err


@pytest.mark.slow  # a real process
def test_unknown_backbone_suggests_timm_names_and_starts_nothing(tiny_eggs, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "search", str(tiny_eggs), "--backbones", "resnet81", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "unknown backbone 'resnet81'; did you mean resnet18" in proc.stderr
    assert "Ray dashboard" not in proc.stdout and "ray" not in proc.stderr.lower()
    assert not (tmp_path / tiny_eggs.name).exists()


def test_tasks_command_lists_every_task_and_whether_its_data_was_found(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SEARCH_DATA", str(tmp_path / "datasets"))
    (tmp_path / "datasets" / "anime").mkdir(parents=True)
    assert main(["tasks"]) == 0
    out = capsys.readouterr().out
    for name in ("egg", "sports", "anime"):
        assert f"{name}: " in out
    assert out.count("data: not found") == 2
    assert f"data: {tmp_path / 'datasets' / 'anime'}" in out
    assert "layout: split-folders" in out and "layout: class-folders" in out


def test_download_without_kaggles_client_says_how_to_get_it(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SEARCH_DATA", str(tmp_path / "datasets"))
    monkeypatch.setitem(sys.modules, "kagglehub", None)  # as on a machine without it
    assert main(["sports", "--download"]) == 2
    assert "pip install kagglehub" in capsys.readouterr().err


@pytest.mark.slow  # decodes a dataset
def test_warm_start_from_a_folder_without_a_search_is_refused(capsys):
    assert main(["egg", "--demo", "--warm-start", "/nonexistent/egg"]) == 2
    assert "--warm-start /nonexistent/egg: no trials.parquet there" in capsys.readouterr().err


@pytest.mark.slow  # builds a ViT to read its stages: 11 s
def test_a_backbone_without_five_feature_stages_is_refused_before_ray(capsys):
    assert main(["egg", "--demo", "--backbones", "vit_tiny_patch16_224"]) == 2
    assert "backbone 'vit_tiny_patch16_224'" in capsys.readouterr().err


@pytest.mark.slow  # real processes
def test_the_search_command_answers_help_in_groups_with_defaults_without_loading_ray_torch_or_timm():
    command = Path(sys.executable).with_name("search")  # the console script pip installed beside this Python
    proc = subprocess.run([str(command), "-h"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    for group in (
        "data:",
        "search:",
        "resources:",
        "final model:",
        "faults:",
        "output:",
        "examples:",
        "other commands",
    ):
        assert group in proc.stdout
    assert "number of trials (default 30; 12 with --demo)" in " ".join(proc.stdout.split())
    for sub in ("predict", "report", "tasks"):
        sub_help = subprocess.run([str(command), sub, "-h"], capture_output=True, text=True, timeout=60)
        assert sub_help.returncode == 0 and sub_help.stdout.startswith(f"usage: search {sub}")
    heavy = subprocess.run(
        [
            sys.executable,
            "-c",
            "import contextlib, io, sys, search\n"
            "with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit): search.main(['-h'])\n"
            "print(sorted({'ray', 'torch', 'timm', 'optuna', 'pandas'} & set(sys.modules)))",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert heavy.returncode == 0 and heavy.stdout.strip() == "[]", heavy.stdout + heavy.stderr


def test_version_is_the_installed_distributions(capsys):
    from importlib.metadata import version

    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.strip() == f"search {version('search')}"


@pytest.mark.slow  # real processes
def test_hugging_faces_datasets_in_the_same_environment_is_warned_about(tmp_path):
    metadata = tmp_path / "datasets-3.0.0.dist-info" / "METADATA"  # what pip leaves for Hugging Face's datasets
    metadata.parent.mkdir()
    metadata.write_text("Metadata-Version: 2.1\nName: datasets\nVersion: 3.0.0\n")
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-m", "search", "tasks"], capture_output=True, text=True, env=env)
    assert proc.returncode == 0
    assert proc.stderr.startswith("warning: the distribution datasets 3.0.0 (Hugging Face's) is installed")
    assert "venv of its own" in proc.stderr
    clean = subprocess.run([sys.executable, "-m", "search", "-h"], capture_output=True, text=True)
    assert "warning" not in clean.stderr
