"""A real tiny search: Ray Tune schedules trials, Optuna proposes, ASHA stops, the best is retrained."""

import json
import time
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
import timm
import torch

import datasets.synthetic
from datasets import build_cache, scan_folder
from results import BACKBONE_COLUMNS, EPOCH_COLUMNS, TOP_COLUMNS, TRIAL_COLUMNS
from search import main
from search.final.predict import SavedModel
from tests.conftest import TINY_SPLITS, console_errors
from tests.search_tests.tiny import tiny_search
from trainables import Images, evaluate


@pytest.fixture(scope="module")
def finished_search(ray_cluster, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    patch = pytest.MonkeyPatch()
    patch.setitem(datasets.synthetic.DEMO_SIZES, "egg", TINY_SPLITS)  # the demo's pipeline on fewer images
    try:
        mlflow = f"sqlite:///{out / 'mlflow.db'}"
        extra = ["--demo", "--seed", "3", "--retrain-seeds", "2", "--soup", "--mlflow", mlflow]
        both = "resnet10t,mobilenetv3_small_050"
        code = main(tiny_search("egg", out, *extra, trials=3, backbones=both, pretrained=None))
    finally:
        patch.undo()
    assert code == 0
    return out


def test_every_contract_file_is_written(finished_search):
    task = finished_search / "egg"
    for name in (
        "trials.parquet",
        "epochs.parquet",
        "best.json",
        "best.md",
        "data_report.json",
        "model/weights.safetensors",
        "model/config.json",
        "model/labels.json",
    ):
        assert (task / name).is_file(), name
    assert (finished_search / "summary.md").is_file() and (finished_search / "summary.csv").is_file()
    assert list((task / "tune").rglob("events.out.tfevents.*")), "Ray Tune's TensorBoard logs are kept"
    assert "3/3 trials done" in (finished_search / "search.log").read_text()  # the progress lines


def test_tables_hold_every_trial_and_epoch(finished_search):
    trials = pd.read_parquet(finished_search / "egg" / "trials.parquet")
    epochs = pd.read_parquet(finished_search / "egg" / "epochs.parquet")
    assert list(trials.columns) == TRIAL_COLUMNS and list(epochs.columns) == EPOCH_COLUMNS
    assert len(trials) == 3
    assert set(trials["status"]) <= {"TERMINATED", "STOPPED"}
    assert (trials["node"].str.len() > 0).all()
    assert not trials["pretrained"].any()
    assert set(trials["backbone"]) <= {"resnet10t", "mobilenetv3_small_050"}
    assert len(epochs) == trials["epochs_run"].sum()
    assert epochs["img_per_s"].gt(0).all()
    # each epoch's peak resident set of its worker: torch, timm and a model are 200 MB at least, a CPU worker far
    # less than the machine
    assert epochs["peak_memory_mb"].between(200, 16_000).all(), epochs["peak_memory_mb"].tolist()
    assert (epochs["device"] == "cpu").all()


def test_mlflows_own_client_reads_back_every_trials_params_and_metrics_and_the_retrained_model(finished_search):
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{finished_search / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("egg")
    runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    trials = pd.read_parquet(finished_search / "egg" / "trials.parquet")
    epochs = pd.read_parquet(finished_search / "egg" / "epochs.parquet")
    best = json.loads((finished_search / "egg" / "best.json").read_text())
    assert len(runs) == len(trials) + 1
    for trial in trials.itertuples():
        [run] = [r for name, r in runs.items() if trial.trial_id in name]
        assert run.info.status == "FINISHED"
        assert float(run.data.params["lr"]) == pytest.approx(trial.lr) and run.data.params["backbone"] == trial.backbone
        logged = [m.value for m in client.get_metric_history(run.info.run_id, "val_acc")]
        assert logged == epochs.loc[epochs["trial_id"] == trial.trial_id, "val_acc"].tolist()
    final = runs["retrained"]
    assert final.data.tags["search.trial_id"] == best["trial_id"]
    assert final.data.metrics["test_acc"] == pytest.approx(best["test_acc"])
    assert final.data.params["backbone"] == best["config"]["backbone"]


def test_best_json_is_synthetic_with_test_metrics_and_provenance(finished_search):
    best = json.loads((finished_search / "egg" / "best.json").read_text())
    # tested once on the whole test split: the saved model (the first seed's) scored on its own confusion matrix
    confusion = np.array(best["test_confusion"])
    assert best["test_n"] == 2 * TINY_SPLITS["test"] == confusion.sum()
    assert best["model_test_acc"] == pytest.approx(np.trace(confusion) / confusion.sum())
    assert best["provenance"]["synthetic"] is True and best["provenance"]["seed"] == 3
    assert best["provenance"]["versions"]["ray"] and best["provenance"]["data_fingerprint"]
    assert best["pretrained"] is False
    summary = (finished_search / "summary.md").read_text()
    assert "| egg |" in summary
    assert "synthetic" in (finished_search / "egg" / "best.md").read_text()


def test_stock_timm_loads_the_model_folder_with_its_labels_and_gives_predicts_logits(finished_search, tmp_path):
    model_dir = finished_search / "egg" / "model"
    model = timm.create_model(f"local-dir:{model_dir}", pretrained=True).eval()
    saved = SavedModel.load(model_dir, "python -m search egg --demo")
    labels = json.loads((model_dir / "labels.json").read_text())
    assert model.pretrained_cfg["label_names"] == labels == saved.classes
    data = timm.data.resolve_data_config(model=model)
    assert (tuple(data["mean"]), tuple(data["std"]), data["crop_pct"]) == (
        saved.prep.mean,
        saved.prep.std,
        saved.prep.crop_pct,
    )
    best = json.loads((finished_search / "egg" / "best.json").read_text())
    root = datasets.synthetic.make_demo_dataset("egg", tmp_path / "demo", per_class=TINY_SPLITS)
    cache = build_cache(scan_folder(root), saved.image_size)
    torch.set_num_threads(1)
    test = Images([cache.load("test")])
    x, _ = test.batch(np.arange(len(test)))
    with torch.no_grad():
        inputs = saved.prep(x.float() / 255)
        torch.testing.assert_close(model(inputs), saved.model(inputs), rtol=0, atol=0)
    result = evaluate(model, test, len(labels), saved.prep)
    (held,) = [v for v in best["variants"] if v["variant"] == best["model_variant"] and not v["tta"]]
    assert result["acc"] == pytest.approx(held["test_acc"])  # the folder's model is the variant tested as saved
    assert best["model_test_acc"] == best["test_acc_per_seed"][0] == best["variants"][0]["test_acc"]


def test_the_soup_is_chosen_on_validation_retrained_and_saved_beside_the_single_model(finished_search):
    best = json.loads((finished_search / "egg" / "best.json").read_text())
    rows = {(v["variant"], v["tta"]): v for v in best["variants"]}
    assert set(rows) == {("single", False), ("single", True), ("soup", False), ("soup", True)}
    single, soup = rows["single", False], rows["soup", False]
    assert soup["val_acc"] >= single["val_acc"], "a member joins only when the soup's validation accuracy holds"
    assert soup["members"][0]["trial_id"] == best["trial_id"]
    assert {m["backbone"] for m in soup["members"]} == {best["config"]["backbone"]}
    trials = pd.read_parquet(finished_search / "egg" / "trials.parquet").set_index("trial_id")
    assert all(trials.loc[m["trial_id"], "backbone"] == best["config"]["backbone"] for m in soup["members"])
    config = json.loads((finished_search / "egg" / "model" / "config.json").read_text())
    assert best["model_variant"] == "soup" and config["soup"] == [m["trial_id"] for m in soup["members"]]
    assert "## Model variants" in (finished_search / "egg" / "best.md").read_text()


def test_export_writes_an_onnx_model_that_onnx_runtime_runs_as_torch_does(finished_search, tmp_path, capsys):
    import onnxruntime

    assert main(["export", "egg", "--onnx", "--out", str(finished_search)]) == 0
    path = finished_search / "egg" / "model" / "model.onnx"
    assert f"{path}: max logit difference" in capsys.readouterr().out
    saved = SavedModel.load(path.parent, "python -m search egg --demo")
    root = datasets.synthetic.make_demo_dataset("egg", tmp_path / "demo", per_class=TINY_SPLITS)
    test = Images([build_cache(scan_folder(root), saved.image_size).load("test")])
    x, _ = test.batch(np.arange(8))  # a batch size the export never saw: the batch dimension is dynamic
    inputs = saved.prep(x.float() / 255)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        expected = saved.model(inputs).numpy()
    assert np.abs(session.run(["logits"], {"images": inputs.numpy()})[0] - expected).max() < 1e-4


def test_the_retrain_over_two_seeds_reports_their_mean_and_spread(finished_search):
    best = json.loads((finished_search / "egg" / "best.json").read_text())
    accuracy = best["test_acc_per_seed"]
    assert best["retrain_seeds"] == 2 and len(accuracy) == 2
    assert best["test_acc"] == pytest.approx(sum(accuracy) / 2)
    assert best["test_acc_std"] == pytest.approx(abs(accuracy[0] - accuracy[1]) / 2**0.5)
    summary = pd.read_csv(finished_search / "summary.csv")
    assert summary.loc[0, "retrain_seeds"] == 2 and summary.loc[0, "test_acc_std"] == pytest.approx(
        best["test_acc_std"]
    )
    assert "(2 seeds)" in (finished_search / "egg" / "best.md").read_text()


def test_top_k_and_backbone_tables_have_their_schema_and_rank_the_trials(finished_search):
    task = finished_search / "egg"
    trials = pd.read_parquet(task / "trials.parquet")
    top = pd.read_parquet(task / "top_k.parquet")
    assert list(top.columns) == TOP_COLUMNS and top["rank"].tolist() == list(range(1, len(top) + 1))
    assert top["val_acc"].is_monotonic_decreasing and top["val_acc"].iloc[0] == trials["val_acc"].max()
    backbones = pd.read_parquet(task / "backbones.parquet")
    assert list(backbones.columns) == BACKBONE_COLUMNS
    assert set(backbones["backbone"]) == {"resnet10t", "mobilenetv3_small_050"}
    assert (backbones["params_m"] > 0).all() and (backbones["latency_ms"] > 0).all() and backbones["pareto"].any()
    assert backbones["trials"].sum() == len(trials)
    assert "| rank |" in (task / "top_k.md").read_text() and "| pareto |" in (task / "backbones.md").read_text()


def test_every_plot_is_a_png_image_and_the_report_inlines_them(finished_search):
    from PIL import Image

    task = finished_search / "egg"
    study = optuna.load_study(study_name="search", storage=f"sqlite:///{task / 'study.db'}")
    completed = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))  # stopped trials are PRUNED
    names = ["learning_curves", "search_progress", "accuracy_latency", "confusion"]
    names += ["importance"] if len(completed) >= 3 else []
    assert (task / "importance.png").is_file() == (len(completed) >= 3)
    for name in names:
        with Image.open(task / f"{name}.png") as image:
            assert image.format == "PNG" and image.width > 200 and image.height > 100, name
            assert len(set(image.convert("L").getdata())) > 2, f"{name}.png is blank"
    page = (task / "report.html").read_text()
    assert page.count("data:image/png;base64,") == len(names)
    assert "http://" not in page and "https://" not in page and "<script" not in page


def test_predict_prints_the_top_classes_and_a_plain_error_for_a_bad_file(finished_search, tmp_path, capsys):
    root = datasets.synthetic.make_demo_dataset("egg", tmp_path / "demo", per_class=TINY_SPLITS)
    good = sorted((root / "test" / "broken").glob("*.jpg"))[:2]
    bad = tmp_path / "notes.jpg"
    bad.write_text("not an image")
    code = main(["predict", "egg", *map(str, good), str(bad), "--out", str(finished_search), "--top", "2"])
    lines = capsys.readouterr().out.splitlines()
    assert code == 2 and len(lines) == 3
    for line in lines[:2]:
        names = [part.split()[0] for part in line.split(": ", 1)[1].split(", ")]
        probs = [float(part.split()[1]) for part in line.split(": ", 1)[1].split(", ")]
        assert sorted(names) == ["broken", "intact"] and sum(probs) == pytest.approx(1, abs=2e-3)
    assert lines[2] == f"{bad}: error: not a readable image: not a format Pillow recognises"


def test_predict_without_a_retrained_model_says_how_to_make_one(tmp_path, capsys):
    assert main(["predict", "egg", "x.jpg", "--out", str(tmp_path)]) == 2
    assert "no retrained model" in capsys.readouterr().err


def test_the_report_page_renders_in_a_browser_without_console_errors(finished_search, browser, tmp_path):
    browser.get((finished_search / "egg" / "report.html").resolve().as_uri())
    assert browser.title == "search: egg"
    assert console_errors(browser) == []
    headings = [h.text for h in browser.find_elements("tag name", "h2")]
    assert {"Best configuration", "Top configurations", "Test confusion matrix"} <= set(headings)
    images = browser.find_elements("tag name", "img")
    plots = list((finished_search / "egg").glob("*.png"))  # importance.png only with three completed trials
    assert len(images) == len(plots) >= 4
    assert all(browser.execute_script("return arguments[0].naturalWidth", i) > 200 for i in images)
    assert len(browser.find_elements("tag name", "table")) >= 4
    shot = tmp_path / "report.png"
    assert browser.save_screenshot(str(shot))
    from PIL import Image

    with Image.open(shot) as image:
        assert image.width >= 1000 and len(set(image.convert("L").getdata())) > 50


def test_report_prints_the_summary_of_the_tasks_in_out(finished_search, capsys):
    (finished_search / "summary.md").unlink()
    assert main(["report", "--out", str(finished_search)]) == 0
    printed = capsys.readouterr().out
    assert "| egg |" in printed and "retrain_seeds" in printed
    assert (finished_search / "summary.md").read_text().strip() == printed.strip()


def test_no_trial_process_outlives_its_trial_so_its_model_memory_is_freed(finished_search):
    pids = {
        json.loads(line)["pid"]
        for path in (finished_search / "egg" / "tune").rglob("result.json")
        for line in path.read_text().splitlines()
        if line.strip()
    }
    assert pids

    def alive() -> set[int]:
        return {pid for pid in pids if Path(f"/proc/{pid}").exists() and "ray::" in _cmdline(pid)}

    deadline = time.monotonic() + 20
    while alive() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not alive(), "a trial's worker still runs after the search ended"


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_text()
    except OSError:
        return ""
