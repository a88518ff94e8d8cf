"""Checking backbone names against timm's registry before anything starts."""

from __future__ import annotations

import difflib
from collections.abc import Sequence

import timm
import torch

from datasets import UsageError
from trainables import stage_names

__all__ = ["validate_backbones"]


def validate_backbones(names: Sequence[str]) -> list[str]:
    """The names, unchanged, if timm knows them all; otherwise an error that suggests the closest names."""
    if not names:
        raise UsageError("no backbones given; pass --backbones with timm model names, e.g. resnet18,efficientnet_b0")
    known = set(timm.list_models())
    for name in names:
        if name not in known:
            close = difflib.get_close_matches(name, sorted(known), n=3, cutoff=0.6)
            hint = f"; did you mean {', '.join(close)}?" if close else "; see timm.list_models() for valid names"
            raise UsageError(f"unknown backbone {name!r}{hint}")
    for name in names:
        with torch.device("meta"):  # the architecture only, no memory for weights
            model = timm.create_model(name, pretrained=False)
        try:
            stage_names(model)
        except ValueError as e:
            raise UsageError(f"backbone {name!r}: {e}") from None
    if len(set(names)) != len(names):
        raise UsageError(f"--backbones lists a name twice: {','.join(names)}")
    return list(names)
