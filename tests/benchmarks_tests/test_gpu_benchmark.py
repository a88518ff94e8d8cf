"""benchmarks/gpu.py runs on a CPU with tiny sizes, so that its first run on a GPU is not its first run."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow  # a benchmark process
def test_the_gpu_benchmark_runs_every_path_on_a_cpu_and_prints_its_ratios_last():
    argv = [sys.executable, str(ROOT / "benchmarks" / "gpu.py"), "--device", "cpu", "--backbones", "resnet10t"]
    argv += ["--image-size", "32", "--batch-size", "4", "--steps", "2", "--shares", "1,2", "--timeout", "240"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert lines[0].startswith("CPU, 32 px, batch 4, 2 steps")
    row = next(line for line in lines if line.startswith("resnet10t") and "trial code" in line)
    assert "bare timm" in row and "peak - (not a GPU)" in row
    shared = next(
        line
        for line in lines[lines.index("aggregate img/s with 1, 2 trials sharing the device") :]
        if line.startswith("resnet10t")
    )
    assert "(x1.00)" in shared and shared.count("(x") == 2
    assert lines[-2].startswith("trial code / bare timm, geometric mean over backbones: ")
    assert float(lines[-2].rsplit(" ", 1)[1]) > 0
    assert lines[-1].startswith("sharing: ") and "the throughput of 1" in lines[-1]
