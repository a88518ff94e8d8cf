"""Resolving each backbone's pretrained weights once, in the driver, before any trial starts.

Looked for in order: ``--weights DIR`` (safetensors named after the model or its pretrained tag), the local
Hugging Face cache, then a download through timm when the hub answers. Only safe formats are loaded.
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import timm
import torch

from datasets import UsageError, reading
from search.command_line.options import MODES

__all__ = ["Pretrained", "fill_command", "resolve_one", "resolve_weights", "weights_folder"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Pretrained:
    """A backbone's resolved weights: the state dict and where it came from, or None for random init."""

    backbone: str
    source: str | None
    state_dict: dict[str, torch.Tensor] | None


def _candidates(backbone: str, weights_dir: Path) -> list[Path]:
    tag = timm.models.get_pretrained_cfg(backbone)
    names = [backbone]
    if tag is not None and getattr(tag, "tag", None):
        names.append(f"{backbone}.{tag.tag}")
    return [weights_dir / f"{name}.safetensors" for name in names]


def _hub_reachable(timeout: float = 3.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False
    from huggingface_hub import constants

    host = urlparse(constants.ENDPOINT).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _hf_cached(backbone: str) -> Path | None:
    cfg = timm.models.get_pretrained_cfg(backbone)
    repo = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
    if not repo:
        return None
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo, "model.safetensors")
    return Path(found) if isinstance(found, str) else None


def _load(backbone: str, file: Path | None) -> dict[str, torch.Tensor]:
    overlay = {"file": str(file)} if file is not None else None
    model = timm.create_model(backbone, pretrained=True, pretrained_cfg_overlay=overlay)
    return {k: v.detach().contiguous() for k, v in model.state_dict().items()}


def fill_command(backbone: str, weights_dir: str = "weights") -> str:
    return (
        f'python -c "import timm, safetensors.torch as st; '
        f"st.save_file(timm.create_model('{backbone}', pretrained=True).state_dict(), "
        f"'{weights_dir}/{backbone}.safetensors')\""
    )


def resolve_one(backbone: str, mode: str, weights_dir: Path | None, hub: bool) -> Pretrained:
    if mode == "off":
        return Pretrained(backbone, None, None)
    looked: list[str] = []
    if weights_dir is not None:
        for path in _candidates(backbone, weights_dir):
            if path.is_file():
                with reading(path, f"replace it with a whole copy ({fill_command(backbone, str(weights_dir))})"):
                    return Pretrained(backbone, str(path), _load(backbone, path))
            looked.append(str(path))
    cached = _hf_cached(backbone)
    if cached is not None:
        with reading(cached, "delete it, and timm downloads it again"):
            return Pretrained(backbone, str(cached), _load(backbone, cached))
    looked.append("the Hugging Face cache")
    if hub:
        try:
            return Pretrained(backbone, "hub", _load(backbone, None))
        except Exception as e:  # noqa: BLE001 - any download failure means: not available
            looked.append(f"the hub ({type(e).__name__}: {e})")
    else:
        looked.append("the hub (not reachable)")
    if mode == "required":
        raise UsageError(
            f"no pretrained weights for {backbone}; looked in {'; '.join(looked)}. Put a safetensors file at "
            f"DIR/{backbone}.safetensors and pass --weights DIR (on a machine with internet: "
            f"{fill_command(backbone)}), or pass --pretrained auto to train from random initialisation"
        )
    log.warning(
        "no pretrained weights for %s (looked in %s); training from random initialisation", backbone, "; ".join(looked)
    )
    return Pretrained(backbone, None, None)


def weights_folder(mode: str | None, weights_dir: str | Path | None) -> Path | None:
    """``--weights`` as a folder, with ``--pretrained`` one of ``MODES`` (None: the task's default, not known yet);
    what can be refused before the data is decoded."""
    if mode is not None and mode not in MODES:
        raise UsageError(f"--pretrained must be one of {', '.join(MODES)}, got {mode!r}")
    directory = Path(weights_dir).expanduser() if weights_dir else None
    if directory is not None and not directory.is_dir():
        raise UsageError(f"--weights {directory} is not a folder; it should hold MODEL.safetensors files")
    return directory


def resolve_weights(backbones: list[str], mode: str, weights_dir: str | Path | None) -> dict[str, Pretrained]:
    """Each backbone's weights under ``mode`` (required | auto | off)."""
    directory = weights_folder(mode, weights_dir)
    hub = mode != "off" and _hub_reachable()
    return {b: resolve_one(b, mode, directory, hub) for b in backbones}
