"""Ranking the backbones before any trial: each one's frozen features (cached for the trials), its LogME score and
its fitted probe's validation accuracy, as Ray tasks where trials would run."""

from __future__ import annotations

import dataclasses
import logging
import math

import ray

from search.cluster.session import Resources
from search.tuning.tuner import error_line
from trainables import TrialSetup, screen_backbone, thread_speedup

__all__ = ["kept_backbones", "measure_speedup", "screen_backbones"]

log = logging.getLogger(__name__)


def screen_backbones(
    setup: TrialSetup, backbones: list[str], resources: Resources, earlier: dict[str, dict] | None = None
) -> dict[str, dict]:
    """backbone -> ``{"logme", "probe_val_acc", "feature_dim", "screen_s", "forward_s", "head_s", "threads"}``, most
    promising first. Fewer backbones than trial slots share the node's CPUs (one backbone: all of them). A backbone
    whose screening failed gets ``{"error": ...}`` instead, is ranked last and still searched: its trials fail or
    not on their own, and the tables say why. ``earlier``: the scores the search measured when it started (--resume
    continues with them rather than spend a Ray task on each backbone again)."""
    if earlier and set(earlier) == set(backbones):
        log.info("the backbones' screening from when this search started: %s", ", ".join(earlier))
        return earlier
    threads = resources.cpus_per_trial
    if not resources.gpus_per_trial and not resources.cluster:
        threads = max(threads, resources.retrain_cpus // max(1, len(backbones)))
    remote = ray.remote(num_cpus=threads, num_gpus=resources.gpus_per_trial)(screen_backbone)
    refs = {b: remote.remote(b, dataclasses.replace(setup, cpus=threads)) for b in backbones}
    results = []
    for backbone, ref in refs.items():
        try:
            results.append(ray.get(ref))
        except ray.exceptions.RayTaskError as e:
            error = error_line(e)
            log.warning("%s: screening failed (%s); searched without a score", backbone, error)
            results.append({"backbone": backbone, "error": error})
    ranked = sorted(results, key=_rank)
    for r in ranked:
        if "error" not in r:
            log.info(
                "%s: LogME %.3f, fitted probe val_acc %.3f (%.0f s)",
                r["backbone"],
                r["logme"],
                r["probe_val_acc"],
                r["screen_s"],
            )
    return {r["backbone"]: r for r in ranked}


def _rank(score: dict) -> tuple[float, float]:
    """The fitted probe's validation accuracy first, LogME to break ties. The probe is the model every LP-FT trial
    of the backbone starts from, measured on the metric the search maximises; LogME needs no validation split but
    only estimates it, and on sports-a50 it ranked the three lite backbones in the reverse order of their probes
    (docs/measurements.md)."""
    return -score.get("probe_val_acc", -math.inf), -score.get("logme", -math.inf)


def kept_backbones(scores: dict[str, dict], prescreen: int | None) -> list[str]:
    """The backbones to search, in ``screen_backbones``' order: all of them, or the ``prescreen`` best."""
    ranked = list(scores)
    return ranked[:prescreen] if prescreen else ranked


def measure_speedup(setup: TrialSetup, resources: Resources, backbone: str) -> float:
    """The retrain's training speed over a trial's, measured in a Ray task with the retrain's resources (1 on a GPU,
    where a trial's share is not counted as slower)."""
    if resources.gpus_per_trial or resources.retrain_cpus <= resources.cpus_per_trial:
        return 1.0
    remote = ray.remote(num_cpus=resources.retrain_cpus)(thread_speedup)
    one = dataclasses.replace(setup, cpus=resources.retrain_cpus)
    speedup = ray.get(remote.remote(backbone, one, resources.cpus_per_trial))
    log.info(
        "the retrain's %d threads train %.2fx as fast as a trial's %d", one.cpus, speedup, resources.cpus_per_trial
    )
    return speedup
