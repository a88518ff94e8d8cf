"""``search export TASK --onnx``: the retrained model as ONNX, checked against the torch model with ONNX Runtime."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from datasets import UsageError, atomic_write, default_cache_root
from results import read_json
from search.final.predict import SavedModel

__all__ = ["ONNX_FILE", "TOLERANCE", "check_onnx", "export_onnx", "sample_inputs"]

log = logging.getLogger(__name__)
ONNX_FILE = "model.onnx"
TOLERANCE = 1e-4  # largest logit difference between ONNX Runtime and torch that the export accepts


def export_onnx(saved: SavedModel, path: Path, opset: int) -> None:
    """``saved``'s network as ONNX at ``path``: input ``images`` [batch, 3, S, S], normalised as config.json says
    (an ensemble's: the stored image in 0..1, each member crops and normalises it inside); output ``logits``
    [batch, classes]; the batch dimension is dynamic."""
    example = torch.zeros(2, 3, saved.input_size, saved.input_size)
    batch = torch.export.Dim("batch", min=1)

    def write(tmp: Path) -> None:
        torch.onnx.export(
            saved.model,
            (example,),
            str(tmp),
            input_names=["images"],
            output_names=["logits"],
            dynamic_shapes=({0: batch},),
            opset_version=opset,
            dynamo=True,
            external_data=False,
            verbose=False,
        )

    atomic_write(path, write)


def sample_inputs(saved: SavedModel, task_dir: Path, images: list[str], count: int = 8) -> torch.Tensor:
    """Real inputs to check an export on, preprocessed as training did: ``images``, else the first ``count`` test
    images of the decoded cache the search trained on."""
    if images:
        pixels = [saved.pixels(p) for p in images]
    else:
        best = read_json(task_dir / "best.json", "write it again with --resume --retrain-again")
        fingerprint = best.get("provenance", {}).get("data_fingerprint")
        cache = default_cache_root() / "decoded" / str(fingerprint)
        if not fingerprint or not (cache / "test_x.npy").is_file():
            raise UsageError(f"the images {task_dir.name} was trained on are not decoded here; pass --images IMAGE...")
        pixels = list(np.load(cache / "test_x.npy", mmap_mode="r")[:count])
    x = torch.from_numpy(np.stack(pixels)).permute(0, 3, 1, 2).float().div_(255)
    return saved.prep(x)


def check_onnx(saved: SavedModel, path: Path, inputs: torch.Tensor) -> float:
    """The largest logit difference between ONNX Runtime's run of ``path`` and the torch model on ``inputs``."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    onnx_logits = session.run(["logits"], {"images": inputs.numpy()})[0]
    with torch.no_grad():
        torch_logits = saved.model(inputs).numpy()
    return float(np.abs(onnx_logits - torch_logits).max())
