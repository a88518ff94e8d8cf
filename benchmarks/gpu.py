"""Training speed on one GPU: the project's trial code against a bare timm loop, memory per trial, and trials
sharing the GPU.

    .venv/bin/python benchmarks/gpu.py [--backbones resnet18,...] [--image-size 224] [--batch-size 64]
        [--steps 30] [--shares 1,2,4] [--device cuda]

For each backbone, on the same random images: training images per second of the project's epoch
(``trainables.train_epoch``: uint8 batches copied to the GPU, augmentation there, mixed precision, channels-last)
and of a bare timm loop (float batches already on the GPU, AMP, AdamW); the peak GPU memory a trial allocated
beside ``search.cluster.packing``'s estimate; then the aggregate throughput of 1, 2 and 4 trials, each in its own
process, training at the same time on the one GPU (as ``--gpus-per-trial 1``, ``0.5``, ``0.25`` run them). About 3
minutes on one H200. ``--device cpu`` with tiny sizes runs every path on a CPU (the test suite does).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import time

import numpy as np
import timm
import torch
import torch.nn.functional as F

from datasets import DEFAULT_BACKBONES, decoded_size
from search.cluster.packing import estimate_mib
from trainables import Images, build_model, freeze, preprocessing
from trainables.accel import Accel
from trainables.steps import Schedule, train_epoch

MIB = 2**20


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def project_epoch(backbone: str, args: argparse.Namespace, device: torch.device) -> tuple[float, float | None]:
    """Images per second of the trial code's training epoch (after one warm-up epoch), and its peak GPU MiB."""
    rng = np.random.default_rng(0)
    n = args.batch_size * args.steps
    stored = decoded_size(args.image_size)  # as the cache keeps them
    images = rng.integers(0, 256, (n, stored, stored, 3), dtype=np.uint8)
    data = Images([(images, rng.integers(0, 2, n))])
    accel = Accel.for_device(device)
    model = accel.model(build_model(backbone, 2))
    freeze(model, 0)
    prep = preprocessing(model, args.image_size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    schedule = Schedule.of(len(data), args.batch_size, 1e-3, epochs=2, seed=0, label_smoothing=0.1)
    seconds = 0.0
    for epoch in range(2):  # the first lets cuDNN choose its kernels and the allocator fill its cache
        _sync(device)
        start = time.perf_counter()
        train_epoch(model, optimizer, data, epoch, schedule, aug_strength=0.5, prep=prep, accel=accel)
        _sync(device)
        seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated(device) / MIB if device.type == "cuda" else None
    return n / seconds, peak


def bare_loop(backbone: str, args: argparse.Namespace, device: torch.device) -> float:
    """Images per second of the loop a person writes from timm's docs: data already on the device, AMP."""
    torch.backends.cudnn.benchmark = True
    model = timm.create_model(backbone, num_classes=2).to(device).train()
    cuda = device.type == "cuda"
    if cuda:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.rand(args.batch_size, 3, args.image_size, args.image_size, device=device)
    if cuda:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 2, (args.batch_size,), device=device)
    dtype = torch.bfloat16 if not cuda or torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    seconds = 0.0
    for _ in range(2):
        _sync(device)
        start = time.perf_counter()
        for _ in range(args.steps):
            with torch.autocast(device.type, dtype=dtype, enabled=cuda):
                loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        _sync(device)
        seconds = time.perf_counter() - start
    return args.batch_size * args.steps / seconds


def _sharer(args: argparse.Namespace, device_name: str, barrier, results) -> None:
    """One of K trials on the GPU: for each backbone, wait for the others, then train one timed epoch."""
    torch.set_num_threads(1)
    device = torch.device(device_name)
    for backbone in args.backbones:
        barrier.wait()
        rate, _ = project_epoch(backbone, args, device)
        results.put((backbone, rate))


def shared_throughput(k: int, args: argparse.Namespace, device: torch.device) -> dict[str, float]:
    """Aggregate images per second of ``k`` trial processes training at once, per backbone."""
    ctx = mp.get_context("spawn")  # CUDA cannot be used in a forked child
    barrier, results = ctx.Barrier(k), ctx.Queue()
    workers = [ctx.Process(target=_sharer, args=(args, str(device), barrier, results)) for _ in range(k)]
    for w in workers:
        w.start()
    rows = [results.get(timeout=args.timeout) for _ in range(k * len(args.backbones))]
    for w in workers:
        w.join(timeout=args.timeout)
        if w.exitcode != 0:
            raise RuntimeError(f"a sharing trial process exited with {w.exitcode}")
    # the sum of each process's timed epoch: they start together at the barrier and run the same work
    return {b: sum(rate for name, rate in rows if name == b) for b in args.backbones}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backbones", default=",".join(DEFAULT_BACKBONES))
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--steps", type=int, default=30, help="timed training steps per measurement")
    p.add_argument("--shares", default="1,2,4", help="numbers of trials sharing the GPU")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--timeout", type=float, default=600)
    args = p.parse_args()
    args.backbones = args.backbones.split(",")
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"{name}, {args.image_size} px, batch {args.batch_size}, {args.steps} steps, torch {torch.__version__}")
    ratios = {}
    for backbone in args.backbones:
        ours, peak = project_epoch(backbone, args, device)
        bare = bare_loop(backbone, args, device)
        ratios[backbone] = ours / bare
        estimate = estimate_mib(backbone, args.image_size, args.batch_size)
        measured = f"{peak:.0f} MiB" if peak is not None else "- (not a GPU)"
        shown = f"{estimate:.0f} MiB" if estimate is not None else "-"
        print(
            f"{backbone:24s} trial code {ours:8.0f} img/s, bare timm {bare:8.0f} img/s, ratio {ours / bare:.2f}; "
            f"peak {measured}, estimate {shown}",
            flush=True,
        )
    shares = [int(k) for k in args.shares.split(",")]
    aggregate = {k: shared_throughput(k, args, device) for k in shares}
    print(f"\naggregate img/s with {', '.join(map(str, shares))} trials sharing the device")
    for backbone in args.backbones:
        one = aggregate[shares[0]][backbone]
        cells = ", ".join(f"{aggregate[k][backbone]:.0f} (x{aggregate[k][backbone] / one:.2f})" for k in shares)
        print(f"{backbone:24s} {cells}")
    mean_ratio = float(np.exp(np.mean(np.log(list(ratios.values())))))
    print(f"trial code / bare timm, geometric mean over backbones: {mean_ratio:.2f}")
    best = max(shares, key=lambda k: np.mean([aggregate[k][b] / aggregate[shares[0]][b] for b in args.backbones]))
    gain = np.mean([aggregate[best][b] / aggregate[shares[0]][b] for b in args.backbones])
    print(f"sharing: {best} trials per device give {gain:.2f}x the throughput of {shares[0]} (mean over backbones)")


if __name__ == "__main__":
    main()
