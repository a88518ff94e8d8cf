"""The task registry: one frozen dataclass per classification problem of the mission."""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from datasets.shared import UsageError

__all__ = ["DEFAULT_BACKBONES", "Task", "folder_task", "get_task", "list_tasks"]


@dataclass(frozen=True)
class Task:
    """A classification task: what it is, where its data comes from, and what to search over."""

    name: str
    description: str
    classes: tuple[str, ...] | None  # None: discovered from the folders (sports has 100)
    num_classes: int
    layout: str  # "split-folders" (train/valid/test given) or "class-folders" (split by the project)
    image_size: int
    backbones: tuple[str, ...]
    demo_backbones: tuple[str, ...] = ("mobilenetv3_small_100", "resnet18", "efficientnet_b0")
    kaggle: str | None = None  # Kaggle dataset handle, for `kagglehub` and the hint on a miss

    def __post_init__(self) -> None:
        if self.layout not in ("split-folders", "class-folders"):
            raise UsageError(f"task {self.name!r}: layout must be split-folders or class-folders, got {self.layout!r}")
        if self.classes is not None and len(self.classes) != self.num_classes:
            raise UsageError(
                f"task {self.name!r}: {len(self.classes)} classes listed but num_classes={self.num_classes}"
            )


DEFAULT_BACKBONES = (
    "resnet18",
    "resnet50",
    "efficientnet_b0",
    "efficientnet_b2",
    "mobilenetv3_large_100",
    "mobilenetv3_small_100",
)

_TASKS: dict[str, Task] = {
    t.name: t
    for t in (
        Task(
            name="egg",
            description="broken vs intact eggs",
            classes=("broken", "intact"),
            num_classes=2,
            layout="class-folders",
            image_size=224,
            backbones=DEFAULT_BACKBONES,
        ),
        Task(
            name="sports",
            description="100 sports (Kaggle '100 Sports Image Classification')",
            classes=None,
            num_classes=100,
            layout="split-folders",
            image_size=224,
            backbones=DEFAULT_BACKBONES,
            kaggle="gpiosenka/sports-classification",
        ),
        Task(
            name="anime",
            description="anime vs cartoon vs human faces",
            classes=("anime", "cartoon", "human"),
            num_classes=3,
            layout="class-folders",
            image_size=150,
            backbones=DEFAULT_BACKBONES,
        ),
    )
}


def list_tasks() -> list[str]:
    """Names of the registered tasks, sorted."""
    return sorted(_TASKS)


def get_task(name: str) -> Task:
    """The registered task called ``name``; a miss names the valid ones."""
    try:
        return _TASKS[name]
    except KeyError:
        close = difflib.get_close_matches(name, list(_TASKS), n=2)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise UsageError(
            f"unknown task {name!r}; {hint}registered tasks: {', '.join(list_tasks())}, "
            "or give the path of an image folder"
        ) from None


def folder_task(name: str, classes: tuple[str, ...], layout: str) -> Task:
    """An ad-hoc task for a user's image folder, with the common defaults."""
    return Task(
        name=name,
        description=f"image folder {name}",
        classes=classes,
        num_classes=len(classes),
        layout=layout,
        image_size=224,
        backbones=DEFAULT_BACKBONES,
    )
