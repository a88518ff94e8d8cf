"""The device speed-ups: float32 channels-last on a CPU; the GPU's mixed-precision and channels-last code run on
the CPU too (CPU autocast), so the paths a GPU takes are exercised here."""

import pytest
import torch

from datasets import build_cache, scan_folder
from trainables import Images, Preprocess, build_model, evaluate
from trainables.accel import Accel
from trainables.steps import Schedule, train_epoch


def test_a_cpu_trains_in_float32_channels_last():
    accel = Accel.for_device(torch.device("cpu"))
    assert accel.dtype is None and accel.scaler is None and accel.channels_last
    with accel.autocast():
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32
    x = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)
    on_device = accel.batch(x)
    assert on_device.dtype == torch.float32 and on_device.device.type == "cpu"
    assert torch.equal(on_device * 255, x.float())
    assert on_device.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize(
    "accel",
    [
        Accel(torch.device("cpu"), torch.bfloat16, None, True),  # what an A100/H100/H200 gets
        Accel(torch.device("cpu"), torch.float16, torch.amp.GradScaler("cpu"), True),  # what older GPUs get
    ],
    ids=["bf16", "fp16-scaled"],
)
def test_the_mixed_precision_channels_last_path_trains_and_evaluates(accel, tiny_eggs, tmp_path):
    torch.manual_seed(0)
    data = build_cache(scan_folder(tiny_eggs), 32, tmp_path / "cache")
    model = accel.model(build_model("test_efficientnet", 2))  # timm's tiny test model: float16 is emulated here
    assert next(p for p in model.parameters() if p.dim() == 4).is_contiguous(memory_format=torch.channels_last)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    train = Images([data.load("train")])
    schedule = Schedule.of(len(train), 8, 1e-3, epochs=2, seed=0, label_smoothing=0.1)
    loss, seen, _ = train_epoch(model, optimizer, train, 0, schedule, aug_strength=0.5, prep=Preprocess(), accel=accel)
    assert seen == 48 and 0 < loss < 5
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())
    result = evaluate(model, Images([data.load("val")]), 2, Preprocess(), accel=accel)
    confusion = result["confusion"]
    assert confusion.sum() == 16 and result["acc"] == confusion.trace() / 16
