"""Concurrency that follows the cluster: nodes that join during a search get trials, as they appear."""

from __future__ import annotations

import logging
import time

from ray.tune.search import ConcurrencyLimiter, Searcher

from search.cluster.session import Resources, node_resources

__all__ = ["FollowCluster"]

log = logging.getLogger(__name__)

RECHECK_S = 2.0  # how often the live nodes are read again (one call to Ray's GCS)


class FollowCluster(ConcurrencyLimiter):
    """Ray Tune's concurrency limit, set again from the live nodes before each suggestion: a node that joins (an
    autoscaler's, or one started by hand) raises it at once, one that leaves lowers it. TPE keeps seeing the
    results of the trials before it rather than all its trials sampled up front."""

    def __init__(self, searcher: Searcher, resources: Resources):
        super().__init__(searcher, max_concurrent=max(1, resources.concurrency))
        self.resources = resources
        self.checked = 0.0  # wall-clock seconds: a restored searcher may read them on another machine

    def suggest(self, trial_id: str) -> dict | None:
        if time.time() - self.checked > RECHECK_S:
            nodes = node_resources()
            allowed = self.resources.allowed(nodes)
            if allowed != self.max_concurrent:
                log.info("%d nodes live: up to %d trials at once", len(nodes), allowed)
            self.max_concurrent, self.checked = allowed, time.time()
        return super().suggest(trial_id)
