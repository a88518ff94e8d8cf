"""One trial with all the threads against one trial per thread, side by side: training steps of one backbone on random
images, first one process at N threads, then N processes at one thread each at once; prints both throughputs and
their ratio. Usage:

    .venv/bin/python benchmarks/threads.py [--backbone tf_efficientnet_lite0] [--size 224] [--threads 2]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time


def steps(backbone: str, size: int, threads: int, batch: int = 32, count: int = 4) -> float:
    """Images per second of ``count`` training steps after one warm-up step."""
    import timm
    import torch

    torch.set_num_threads(threads)
    model = timm.create_model(backbone, num_classes=2)
    optimizer = torch.optim.AdamW(model.parameters(), 1e-4)
    x, y = torch.randn(batch, 3, size, size), torch.randint(0, 2, (batch,))

    def step() -> None:
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()

    step()
    started = time.perf_counter()
    for _ in range(count):
        step()
    return count * batch / (time.perf_counter() - started)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backbone", default="tf_efficientnet_lite0")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(steps(args.backbone, args.size, args.child))
        return
    child = [sys.executable, __file__, "--backbone", args.backbone, "--size", str(args.size), "--child"]
    one = float(subprocess.run([*child, str(args.threads)], capture_output=True, text=True, check=True).stdout)
    running = [subprocess.Popen([*child, "1"], stdout=subprocess.PIPE, text=True) for _ in range(args.threads)]
    many = sum(float(proc.communicate()[0]) for proc in running)
    print(
        f"{args.backbone} at {args.size} px: one trial of {args.threads} threads {one:.1f} img/s; "
        f"{args.threads} trials of 1 thread {many:.1f} img/s together; ratio {many / one:.2f}"
    )


if __name__ == "__main__":
    main()
