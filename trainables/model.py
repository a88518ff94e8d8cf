"""Building a timm backbone with a new head, and freezing its first stages."""

from __future__ import annotations

import timm
import torch
from timm.data import resolve_model_data_config
from torch import nn

from trainables.preprocess import Preprocess
from trainables.trial_config import MAX_FREEZE_DEPTH

__all__ = ["build_model", "freeze", "parameter_groups", "preprocessing", "stage_names", "train_mode"]


def build_model(
    backbone: str, num_classes: int, state_dict: dict[str, torch.Tensor] | None = None, dropout: float = 0.0
) -> nn.Module:
    """A timm model with a fresh ``num_classes`` head (dropout before it); backbone weights from ``state_dict``."""
    model = timm.create_model(backbone, pretrained=False, num_classes=num_classes, drop_rate=dropout)
    # A zero head starts every class equal. timm's EfficientNet/MobileNet heads start at +-1/sqrt(classes), which for
    # two classes gives logits in the tens on pretrained features and a loss far above log(2) for many steps.
    head = model.get_classifier()
    for p in head.parameters():
        nn.init.zeros_(p)
    if state_dict is not None:
        head = {k for k in model.state_dict() if k.startswith(_classifier_prefix(model))}
        kept = {k: v for k, v in state_dict.items() if not k.startswith(_classifier_prefix(model))}
        missing, unexpected = model.load_state_dict(kept, strict=False)
        if set(missing) - head or unexpected:
            raise ValueError(
                f"weights do not fit {backbone}: missing {sorted(set(missing) - head)[:5]}, "
                f"unexpected {sorted(unexpected)[:5]}"
            )
    return model


def _classifier_prefix(model: nn.Module) -> str:
    classifier = model.get_classifier()
    return next(name for name, module in model.named_modules() if module is classifier) + "."


def stage_names(model: nn.Module) -> list[str]:
    """The modules that end each of the backbone's feature stages (timm ``feature_info``)."""
    info = getattr(model, "feature_info", None)
    names = [f["module"] for f in info] if info else []
    if len(names) != MAX_FREEZE_DEPTH:
        raise ValueError(
            f"{type(model).__name__} has {len(names)} feature stages; freeze_depth needs "
            f"{MAX_FREEZE_DEPTH} (timm feature_info); choose a CNN backbone such as resnet18"
        )
    return names


def freeze(model: nn.Module, depth: int) -> None:
    """Freeze the stem and the first ``depth`` stages; at the last depth everything but the classifier.

    timm's CNNs register modules in forward order, so a stage's last module marks the end of a frozen prefix.
    """
    for p in model.parameters():
        p.requires_grad_(True)
    if depth == 0:
        return
    if depth >= MAX_FREEZE_DEPTH:
        head = _classifier_prefix(model)
        for name, p in model.named_parameters():
            p.requires_grad_(name.startswith(head))
        return
    stage = stage_names(model)[depth - 1]
    modules = list(model.named_modules())
    end = max(i for i, (name, _) in enumerate(modules) if name == stage or name.startswith(stage + "."))
    for _, module in modules[: end + 1]:
        for p in module.parameters(recurse=False):
            p.requires_grad_(False)


def train_mode(model: nn.Module, keep_statistics: bool = False) -> None:
    """``model.train()``, except that fully frozen BatchNorm layers keep their running statistics, and with
    ``keep_statistics`` every BatchNorm layer does (its scale and shift still train)."""
    model.train()
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            own = list(module.parameters(recurse=False))
            if keep_statistics or (own and not any(p.requires_grad for p in own)):
                module.eval()


def preprocessing(model: nn.Module, size: int) -> Preprocess:
    """Mean, std, crop percentage and interpolation from the backbone's pretrained config, for inputs of ``size``."""
    cfg = resolve_model_data_config(model)
    return Preprocess(
        tuple(cfg["mean"]),
        tuple(cfg["std"]),
        float(cfg.get("crop_pct", 1.0)),
        str(cfg.get("interpolation", "bilinear")),
        size,
    )


def parameter_groups(model: nn.Module, backbone_lr_scale: float = 1.0) -> list[dict]:
    """The optimizer's parameter groups: the trainable backbone parameters at ``backbone_lr_scale`` times the
    learning rate (``lr_scale``, which the schedule applies), the new head at the learning rate itself."""
    head = {id(p) for p in model.get_classifier().parameters()}
    trainable = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in trainable if id(p) not in head], "lr_scale": backbone_lr_scale},
        {"params": [p for p in trainable if id(p) in head], "lr_scale": 1.0},
    ]
    return [g for g in groups if g["params"]]
