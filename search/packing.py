"""How much GPU memory a trial needs, and how many trials one GPU takes: what ``--gpus-per-trial`` fractions allow."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["GPU_MEMORY_MIB", "PROCESS_MIB", "estimate_mib", "packing_warnings"]

# backbone: (fixed MiB, MiB per image at 224 px) for full fine-tuning with bf16 autocast and AdamW; measured by
# benchmarks/memory_table.py (2026-11-28). A frozen backbone needs less: no gradients or optimiser state for it.
GPU_MEMORY_MIB = {
    "resnet18": (168, 11.7),
    "resnet50": (326, 42.3),
    "efficientnet_b0": (54, 42.9),
    "efficientnet_b2": (103, 62.3),
    "mobilenetv3_large_100": (59, 21.8),
    "mobilenetv3_small_100": (21, 8.4),
}
# not tensors, so not in the table: the CUDA context, cuDNN's workspaces and the caching allocator's slack
PROCESS_MIB = 1024


def estimate_mib(backbone: str, image_size: int, batch_size: int) -> float | None:
    """A trial's peak GPU memory in MiB, or None for a backbone the table does not have."""
    if backbone not in GPU_MEMORY_MIB:
        return None
    fixed, per_image = GPU_MEMORY_MIB[backbone]
    return PROCESS_MIB + fixed + per_image * batch_size * (image_size / 224) ** 2


def packing_warnings(
    backbones: Sequence[str], image_size: int, batch_size: int, gpus_per_trial: float, gpu_mib: float
) -> list[str]:
    """One line per backbone whose trial would not fit in its share of a ``gpu_mib`` GPU."""
    share = gpus_per_trial * gpu_mib
    lines = []
    for name in backbones:
        need = estimate_mib(name, image_size, batch_size)
        if need is not None and need > share:
            lines.append(
                f"{name} at {image_size} px and batch {batch_size} needs about {need / 1024:.1f} GiB but "
                f"--gpus-per-trial {gpus_per_trial:g} gives each trial {share / 1024:.1f} GiB of the GPU; such trials "
                f"retry at half the batch when they run out, or pass --gpus-per-trial {_fitting(need, gpu_mib):g}"
            )
    return lines


def _fitting(need_mib: float, gpu_mib: float) -> float:
    """The largest number of trials per GPU that fits, as a fraction."""
    per_gpu = max(1, int(gpu_mib // need_mib))
    return 1 / per_gpu
