"""A driver on the two-node cluster's head (``RAY_ADDRESS`` and the token come from the environment): it decodes
``IMAGES`` into a cache under ``ROOT`` at ``SIZE`` px and has the other node copy it the way a trial does
(``TrialSetup.local_data``), ``PIECE_MB`` at a time. Prints one JSON line of what the test checks.

    python -m tests.search_tests.copy_on_node IMAGES ROOT SIZE PIECE_MB
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import ray
from ray._private.internal_api import get_memory_info_reply, get_state_from_address

from datasets import build_cache, cache_pieces, scan_folder
from trainables.peak import peak_memory_mb, reset_peak_memory
from trainables.setup import TrialSetup


@ray.remote(num_cpus=0, resources={"worker_slot": 1})  # only the joined node has this resource
def copy_there(setup: TrialSetup) -> dict:
    """A trial's copy, on the other node: where it landed and how far the copying process's memory rose."""
    import torch

    before = peak_memory_mb(torch.device("cpu"))
    reset_peak_memory(torch.device("cpu"))
    path = setup.local_data().path
    return {
        "path": str(path),
        "node": ray.get_runtime_context().get_node_id(),
        "rise_mb": peak_memory_mb(torch.device("cpu")) - before,
    }


def _store() -> dict:
    stats = get_memory_info_reply(get_state_from_address(None)).store_stats
    return {"spilled": stats.spilled_bytes_total, "on_disk": stats.object_store_bytes_fallback}


def main(images: str, root: str, size: str, piece_mb: str) -> None:
    ray.init(logging_level="ERROR")
    cache = build_cache(scan_folder(images), int(size), Path(root))
    pieces = cache_pieces(cache, int(float(piece_mb) * 2**20))
    head = ray.get_runtime_context().get_node_id()
    setup = TrialSetup(data=cache, max_epochs=1, data_node=head, data_pieces=pieces)
    copied = ray.get(copy_there.remote(setup))
    after_copy = _store()
    # the old way, for contrast: the whole cache as one object does not fit the capped store
    whole = ray.put(np.concatenate([np.fromfile(p, np.uint8) for p in sorted(cache.path.iterdir()) if p.is_file()]))
    one_object = _store()
    del whole
    print(
        json.dumps(
            {
                "original": str(cache.path),
                "bytes": sum(p[2] for p in pieces),
                "pieces": len(pieces),
                "head": head,
                **copied,
                "after_copy": after_copy,
                "one_object": one_object,
            }
        )
    )


if __name__ == "__main__":
    main(*sys.argv[1:])
