"""The model folder of an ensemble, a soup and test-time augmentation: what predict and export load from it."""

import json
from pathlib import Path

import numpy as np
import pytest
import timm
import torch

from datasets import decode, decoded_size, scan_folder
from search.final.export import TOLERANCE, check_onnx, export_onnx, sample_inputs
from search.final.model_dir import MANIFEST, save_ensemble, save_model
from search.final.predict import SavedModel, predict_lines
from trainables import preprocessing
from trainables.combine import FlipAverage

SIZE = 32
CLASSES = ["broken", "intact"]


def _run(backbone: str, seed: int) -> tuple[dict, torch.nn.Module]:
    """A retrain's outcome as ``retrain`` returns it (weights and preprocessing), from a model with a random head."""
    torch.manual_seed(seed)
    model = timm.create_model(backbone, num_classes=2).eval()
    torch.nn.init.normal_(model.get_classifier().weight, std=1.0)
    prep = preprocessing(model, SIZE)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    return {"state_dict": state, "preprocess": prep.__dict__.copy()}, model


def _images(tiny_eggs: Path) -> list[str]:
    return [path for path, _ in scan_folder(tiny_eggs).files["test"][:6]]


def _in_process(model: torch.nn.Module, path: str, tta: bool = False) -> torch.Tensor:
    """What the model gives one image in this process: decoded as training decodes, its own crop and normalisation."""
    pixels, _, _ = decode(path, decoded_size(SIZE))
    x = torch.from_numpy(pixels.copy()).permute(2, 0, 1).unsqueeze(0).float().div_(255)
    x = preprocessing(model, SIZE)(x)
    with torch.no_grad():
        p = model(x).softmax(1)[0]
        return (p + model(x.flip(-1)).softmax(1)[0]) / 2 if tta else p


@pytest.fixture(scope="module")
def ensemble_dir(tmp_path_factory):
    """An ensemble of two backbones (one picked twice), as ``--ensemble`` saves it, with --tta."""
    (a, model_a), (b, model_b) = _run("resnet10t", 0), _run("mobilenetv3_small_050", 1)
    configs = {"t1": {"backbone": "resnet10t"}, "t2": {"backbone": "mobilenetv3_small_050"}}
    folder = tmp_path_factory.mktemp("ensemble") / "model"
    save_ensemble(folder, {"t1": 2, "t2": 1}, {"t1": a, "t2": b}, configs, CLASSES, SIZE, tta=True)
    return folder, model_a, model_b


def test_predict_on_a_saved_ensemble_gives_the_weighted_mean_of_its_members_probabilities(ensemble_dir, tiny_eggs):
    folder, model_a, model_b = ensemble_dir
    manifest = json.loads((folder / MANIFEST).read_text())
    assert [(m["trial_id"], m["weight"]) for m in manifest["members"]] == [("t1", 2), ("t2", 1)] and manifest["tta"]
    saved = SavedModel.load(folder, "python -m search egg")
    assert saved.classes == CLASSES and saved.input_size == decoded_size(SIZE)
    for path in _images(tiny_eggs):
        expected = (2 * _in_process(model_a, path, tta=True) + _in_process(model_b, path, tta=True)) / 3
        torch.testing.assert_close(saved.probabilities(path), expected, atol=1e-5, rtol=1e-4)
    lines, failed = predict_lines(saved, _images(tiny_eggs)[:2], top=1)
    assert failed == 0 and all(line.split(": ")[1].split()[0] in CLASSES for line in lines)


@pytest.mark.slow  # an ONNX export and its runtime: 6 s
def test_an_exported_ensemble_matches_the_torch_ensemble(tiny_eggs, tmp_path):
    # two members, without the flip: each traced view costs seconds of export on 2 cores
    runs = {"t1": _run("resnet10t", 0)[0], "t2": _run("resnet10t", 1)[0]}
    configs = dict.fromkeys(runs, {"backbone": "resnet10t"})
    folder = tmp_path / "model"
    save_ensemble(folder, {"t1": 1, "t2": 1}, runs, configs, CLASSES, SIZE, tta=False)
    saved = SavedModel.load(folder, "python -m search egg")
    export_onnx(saved, tmp_path / "model.onnx", opset=18)
    inputs = sample_inputs(saved, folder.parent, _images(tiny_eggs))
    assert inputs.shape[-1] == decoded_size(SIZE) and inputs.min() >= 0 and inputs.max() <= 1  # the stored image
    assert check_onnx(saved, tmp_path / "model.onnx", inputs) < TOLERANCE


def test_a_soup_or_single_model_saved_with_tta_predicts_with_the_flip_and_stays_a_timm_folder(tmp_path, tiny_eggs):
    run, model = _run("resnet10t", 2)
    save_model(tmp_path / "model", run, {"backbone": "resnet10t"}, CLASSES, SIZE, tta=True, soup=["t1", "t2"])
    saved = SavedModel.load(tmp_path / "model", "python -m search egg")
    assert isinstance(saved.model, FlipAverage) and saved.input_size == SIZE
    path = _images(tiny_eggs)[0]
    torch.testing.assert_close(saved.probabilities(path), _in_process(model, path, tta=True), atol=1e-5, rtol=1e-4)
    assert not np.allclose(saved.probabilities(path), _in_process(model, path, tta=False), atol=1e-6)
    stock = timm.create_model(f"local-dir:{tmp_path / 'model'}", pretrained=True)
    assert stock.num_classes == 2
