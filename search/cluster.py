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


def plan_resources(cpus_per_trial: int, gpus_per_trial: float | None, concurrency: int | None) -> Resources:
    """Check a trial fits on some node and derive the concurrency the cluster allows."""
    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    total_cpu = sum(n.get("CPU", 0) for n in nodes)
    total_gpu = sum(n.get("GPU", 0) for n in nodes)
    gpus = gpus_per_trial if gpus_per_trial is not None else (1.0 if total_gpu >= 1 else 0.0)
    fits = [n for n in nodes if n.get("CPU", 0) >= cpus_per_trial and n.get("GPU", 0) >= gpus]
    if not fits:
        largest = max(nodes, key=lambda n: (n.get("GPU", 0), n.get("CPU", 0)), default={})
        raise UsageError(
            f"a trial asks for {cpus_per_trial} CPUs and {gpus:g} GPUs but the largest node offers "
            f"{largest.get('CPU', 0):g} CPUs and {largest.get('GPU', 0):g} GPUs; "
            "lower --cpus-per-trial / --gpus-per-trial"
        )
    allowed = int(total_cpu // cpus_per_trial)
    if gpus > 0:
        allowed = min(allowed, int(math.floor(total_gpu / gpus + 1e-9)))
    node = max(fits, key=lambda n: (n.get("GPU", 0), n.get("CPU", 0)))
    return Resources(
        cpus_per_trial=cpus_per_trial,
        gpus_per_trial=gpus,
        concurrency=max(1, min(concurrency or allowed, allowed)),
        retrain_cpus=int(node.get("CPU", cpus_per_trial)),
        retrain_gpus=1.0 if gpus > 0 else 0.0,
    )
