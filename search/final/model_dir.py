"""A task's model folder: one model (the best trial's retrain, or a soup) as stock timm loads it, or an ensemble of
such folders with a manifest."""

from __future__ import annotations

from pathlib import Path

from safetensors.torch import save_file

from datasets import atomic_folder
from results import write_json

__all__ = ["MANIFEST", "save_ensemble", "save_model", "write_model_files"]

MANIFEST = "manifest.json"


def save_model(directory: Path, outcome: dict, config: dict, classes: list[str], image_size: int, **extra) -> None:
    """``weights.safetensors``, ``config.json`` and ``labels.json``: stock timm loads the folder
    (``timm.create_model("local-dir:DIR", pretrained=True)``: its config.json is also timm's, with the labels and the
    preprocessing in ``pretrained_cfg``); ``extra`` joins config.json. The folder is written beside ``directory``
    and swapped in whole, so a crash never mixes two retrains' files."""
    with atomic_folder(directory) as staging:
        write_model_files(staging, outcome, config, classes, image_size, **extra)


def write_model_files(folder: Path, outcome: dict, config: dict, classes: list[str], image_size: int, **extra) -> None:
    """One model's files in ``folder`` (see ``save_model``)."""
    prep = outcome["preprocess"]
    save_file(outcome["state_dict"], str(folder / "weights.safetensors"))
    write_json(
        folder / "config.json",
        {
            "backbone": config["backbone"],
            "num_classes": len(classes),
            "input_size": [3, image_size, image_size],
            **prep,
            "resize": "shorter side to int(input size / crop_pct), then the centre input size (timm's evaluation)",
            "config": config,
            **extra,
            # timm's own keys (its save_for_hf layout); timm finds weights.safetensors as the folder's one file
            "architecture": config["backbone"],
            "label_names": classes,
            "pretrained_cfg": {
                "input_size": [3, image_size, image_size],
                "crop_mode": "center",
                **{k: prep[k] for k in ("mean", "std", "crop_pct", "interpolation")},
            },
        },
    )
    write_json(folder / "labels.json", classes)


def save_ensemble(
    directory: Path,
    members: dict[str, int],
    runs: dict[str, dict],
    configs: dict[str, dict],
    classes: list[str],
    image_size: int,
    tta: bool,
) -> None:
    """``members/K/`` (each a model folder as ``save_model`` writes it), ``manifest.json`` (each member's folder,
    weight and trial) and ``labels.json``; swapped in whole like a single model's folder."""
    with atomic_folder(directory) as staging:
        listed = []
        for k, (trial, weight) in enumerate(members.items()):
            folder = staging / "members" / str(k)
            folder.mkdir(parents=True)
            write_model_files(folder, runs[trial], configs[trial], classes, image_size, trial_id=trial)
            listed.append(
                {"path": f"members/{k}", "weight": weight, "trial_id": trial, "backbone": configs[trial]["backbone"]}
            )
        write_json(staging / MANIFEST, {"kind": "ensemble", "members": listed, "tta": tta, "image_size": image_size})
        write_json(staging / "labels.json", classes)
