"""Starting or joining Ray, and fitting trials to the resources it has."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import ray

from datasets import UsageError

LOOPBACK = "127.0.0.1"
DASHBOARD_PORT = 8265  # Ray's default


@contextmanager
def ray_session(address: str | None = None, dashboard_port: int = DASHBOARD_PORT) -> Iterator[str | None]:
    """Join ``address`` or start a local Ray whose dashboard listens on loopback only; yields the dashboard URL
    (the cluster's when joining one).

    An already initialised Ray (a notebook, the test suite) is used as it is and left running.
    """
    if ray.is_initialized():
        yield None
        return
    if address:
        context = ray.init(address=address, logging_level=logging.WARNING)
    else:
        context = ray.init(
            include_dashboard=True,
            dashboard_host=LOOPBACK,
            dashboard_port=dashboard_port,
            logging_level=logging.WARNING,
        )
    try:
        url = context.dashboard_url
        yield f"http://{url}" if url and not url.startswith("http") else url
    finally:
        ray.shutdown()


@dataclass(frozen=True)
class Resources:
    """What each trial gets and how many run at once; the retrain gets one whole node."""

    cpus_per_trial: int
    gpus_per_trial: float
    concurrency: int
    retrain_cpus: int
    retrain_gpus: float


def node_resources() -> list[dict[str, float]]:
    """What each live node of the connected Ray cluster offers (``CPU``, ``GPU``, custom resources)."""
    return [n["Resources"] for n in ray.nodes() if n.get("Alive")]


def plan_resources(
    nodes: list[dict[str, float]], cpus_per_trial: int, gpus_per_trial: float | None, concurrency: int | None
) -> Resources:
    """Check a trial fits on one of ``nodes`` and derive the concurrency they allow: a fraction of a GPU packs
    ``floor(1 / fraction)`` trials on each GPU, as far as the CPUs go."""
    total_gpu = sum(n.get("GPU", 0) for n in nodes)
    gpus = gpus_per_trial if gpus_per_trial is not None else (1.0 if total_gpu >= 1 else 0.0)
    if gpus > 0 and total_gpu == 0:
        raise UsageError(
            f"--gpus-per-trial {gpus:g} but no node of the cluster has a GPU; leave it out (or pass 0) to train on CPUs"
        )
    fits = [n for n in nodes if n.get("CPU", 0) >= cpus_per_trial and n.get("GPU", 0) >= gpus]
    if not fits:
        largest = max(nodes, key=lambda n: (n.get("GPU", 0), n.get("CPU", 0)), default={})
        raise UsageError(
            f"a trial asks for {cpus_per_trial} CPUs and {gpus:g} GPUs but the largest node offers "
            f"{largest.get('CPU', 0):g} CPUs and {largest.get('GPU', 0):g} GPUs; "
            "lower --cpus-per-trial / --gpus-per-trial"
        )
    allowed = sum(_trials_on(n, cpus_per_trial, gpus) for n in nodes)
    node = max(fits, key=lambda n: (n.get("GPU", 0), n.get("CPU", 0)))
    return Resources(
        cpus_per_trial=cpus_per_trial,
        gpus_per_trial=gpus,
        concurrency=max(1, min(concurrency or allowed, allowed)),
        retrain_cpus=int(node.get("CPU", cpus_per_trial)),
        retrain_gpus=1.0 if gpus > 0 else 0.0,
    )


def _trials_on(node: dict[str, float], cpus: int, gpus: float) -> int:
    by_cpu = int(node.get("CPU", 0) // cpus)
    if gpus <= 0:
        return by_cpu
    if gpus < 1:  # Ray packs fractions within one GPU, never across two
        per_gpu = int(math.floor(1 / gpus + 1e-9))
        return min(by_cpu, per_gpu * int(node.get("GPU", 0)))
    return min(by_cpu, int(node.get("GPU", 0) // gpus))
