"""The arguments of a search small enough for a test, in one place: the tests that run a search name only what
they change."""

from __future__ import annotations

from pathlib import Path


def tiny_search(
    task: str | Path,
    out: str | Path,
    *extra: str,
    trials: int | None = 2,
    max_epochs: int | None = 2,
    image_size: int | None = 32,
    backbones: str | None = "resnet10t",
    pretrained: str | None = "off",
    concurrency: int | None = 1,
) -> list[str]:
    """The arguments of a tiny search of TASK into OUT, TASK first and without ``python -m search``: ``main()``'s
    argv, or a subprocess's after ``[sys.executable, "-m", "search"]``. Each keyword is its option's value; None
    leaves the option out, so the search takes the task's default (``pretrained=None`` with ``--weights``, say).
    EXTRA follows them, so an option repeated there wins. One trial at a time unless asked: each trial running beside
    another is one more worker process importing torch and timm, about 5 CPU-seconds of a 2-core machine's suite."""
    argv = [str(task), "--out", str(out)]
    for option, value in (
        ("--trials", trials),
        ("--max-epochs", max_epochs),
        ("--image-size", image_size),
        ("--backbones", backbones),
        ("--pretrained", pretrained),
        ("--concurrency", concurrency),
    ):
        if value is not None:
            argv += [option, str(value)]
    return [*argv, *extra]
