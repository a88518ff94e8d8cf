"""A real two-node Ray cluster on this machine (``ray start --head`` and ``ray start --address``, each node with one
CPU, its own cache folder standing for its own disk, and a custom resource), joined with ``--address``."""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from datasets import make_demo_dataset
from tests.search_tests.tiny import tiny_search

LIMIT_S = 300
# about three minutes of cluster tests: under xdist (make test) it starts first too, beside the kill chain, so the
# short files fill both workers at the end
LONG = True
PIECE_KB = 64  # the two-node test's copy pieces: several per array


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _processes_of(temp_dir: str) -> set[int]:
    """The cluster's processes: those started with its temp dir, and everything they started."""
    parents: dict[int, int] = {}
    found: set[int] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if temp_dir in (entry / "cmdline").read_bytes().decode(errors="replace"):
                found.add(int(entry.name))
        except (OSError, IndexError, ValueError):
            continue
    grew = True
    while grew:
        more = {pid for pid, ppid in parents.items() if ppid in found} - found
        found |= more
        grew = bool(more)
    return found


def _can_hide_a_folder() -> bool:
    """Whether a node can be started in its own mount namespace (root, or a user namespace allowed)."""
    return subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode == 0


STORE_MB = 75  # Ray's smallest object store (ray_constants.OBJECT_STORE_MINIMUM_MEMORY_BYTES)
COMMON = ["--num-cpus", "1", "--object-store-memory", str(STORE_MB * 2**20), "--disable-usage-stats"]


class TwoNodes:
    """The head starts with the fixture; the second node joins when a test asks (``join``)."""

    def __init__(self, base: Path):
        self.base = base
        self.temp_dir = f"/tmp/ray2n-{os.getpid()}"  # short: Ray's socket paths must stay under 108 characters
        self.hidden = base / "head-only"  # the worker node mounts an empty folder over it: only the head sees it
        self.hidden.mkdir()
        self.env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16)}
        self.env.pop("RAY_ADDRESS", None)
        self.hides = _can_hide_a_folder()

    def start(self) -> None:
        ray = str(Path(sys.executable).parent / "ray")
        head = subprocess.run(
            [ray, "start", "--head", "--port", str(_free_port()), "--temp-dir", self.temp_dir, *COMMON]
            + ["--resources", '{"head_slot": 1}', "--dashboard-host", "127.0.0.1"]
            + ["--dashboard-port", str(_free_port())],
            env={**self.env, "SEARCH_CACHE": str(self.base / "head-cache")},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert head.returncode == 0, head.stderr[-2000:]
        self.address = re.search(r"ray start --address='([^']+)'", head.stdout + head.stderr).group(1)
        self.joined = False

    def join(self, wait: bool = True) -> None:
        """The second node joins (once), as an autoscaler's node would; ``wait`` until the head lists it."""
        if self.joined:
            return
        self.joined = True
        ray = str(Path(sys.executable).parent / "ray")
        join = [ray, "start", "--address", self.address, *COMMON, "--resources", '{"worker_slot": 1}']
        if self.hides:
            hide = f"mount -t tmpfs tmpfs {self.hidden} && exec {' '.join(join[:-1])} '{join[-1]}'"
            join = ["unshare", "-m", "sh", "-c", hide]
        worker = subprocess.run(
            join,
            env={**self.env, "SEARCH_CACHE": str(self.base / "worker-cache")},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert worker.returncode == 0, worker.stderr[-2000:]
        if wait:
            self._wait_for_nodes(ray, 2)

    def _wait_for_nodes(self, ray: str, count: int) -> None:
        """Until the head lists ``count`` live nodes: a search started earlier sizes itself to fewer."""
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            status = subprocess.run(
                [ray, "status", "--address", self.address], env=self.env, capture_output=True, text=True, timeout=60
            )
            active = status.stdout.split("Active:", 1)[-1].split("Pending:", 1)[0]
            if active.count("node_") >= count:
                return
            time.sleep(1)
        pytest.fail(f"the cluster did not list {count} nodes:\n{status.stdout[-2000:]}")

    def search(self, *argv: str, env: dict | None = None) -> subprocess.CompletedProcess:
        self.join()
        return subprocess.run(
            [sys.executable, "-m", "search", *argv],
            env=self._driver_env(env),
            capture_output=True,
            text=True,
            timeout=LIMIT_S,
        )

    def start_search(self, *argv: str, env: dict | None = None) -> subprocess.Popen:
        """A search started now, on the nodes present now."""
        return subprocess.Popen(
            [sys.executable, "-m", "search", *argv],
            env=self._driver_env(env),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def _driver_env(self, env: dict | None) -> dict:
        return {**self.env, "SEARCH_CACHE": str(self.base / "driver-cache"), **(env or {})}

    def stop(self) -> None:
        for pid in _processes_of(self.temp_dir):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    nodes = TwoNodes(tmp_path_factory.mktemp("two-nodes"))
    try:
        nodes.start()
        yield nodes
    finally:
        nodes.stop()  # even when a test (or the start) failed
        deadline = time.monotonic() + 30
        while _processes_of(nodes.temp_dir) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not _processes_of(nodes.temp_dir), "the cluster's processes outlived the tests"


@pytest.fixture(scope="module")
def cluster_eggs(tmp_path_factory) -> Path:
    return make_demo_dataset("egg", tmp_path_factory.mktemp("eggs"), per_class={"train": 40, "valid": 12, "test": 12})


def _argv(eggs: Path, out: Path, *extra: str) -> list[str]:
    return tiny_search(eggs, out, "--no-retrain", *extra, trials=4, concurrency=None)  # as many as the nodes hold


def test_a_node_that_joins_a_running_search_gets_trials_and_copies_the_images_once(cluster, cluster_eggs, tmp_path):
    storage = tmp_path / "bucket"
    start = time.perf_counter()
    argv = _argv(cluster_eggs, tmp_path / "out", "--address", cluster.address, "--storage", f"file://{storage}")
    search = cluster.start_search(*argv, "--trials", "4", env={"SEARCH_PIECE_MB": str(PIECE_KB / 1024)})
    try:
        # one node, one CPU: one trial at a time, until the second node joins during the first trial
        deadline = time.monotonic() + LIMIT_S
        while not list(storage.glob("*/train_trial_*")) and search.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert search.poll() is None, search.communicate()[1][-3000:]
        cluster.join(wait=False)  # the running search finds it
        _, stderr = search.communicate(timeout=LIMIT_S)
    finally:
        search.kill()
    wall = time.perf_counter() - start
    assert search.returncode == 0, stderr[-3000:]
    trials = pd.read_parquet(tmp_path / "out" / cluster_eggs.name / "trials.parquet")
    print(f"one node, then two: {wall:.1f} s; nodes of the trials: {trials['node'].str[:12].tolist()}")
    assert len(trials) == 4 and trials["trial_id"].is_unique and trials["node"].nunique() == 2, trials
    assert (trials["status"] != "ERROR").all(), trials[["trial_id", "status", "error"]]  # ASHA may stop some
    # the search saw the node join and ran more trials at once than the one node present at its start fitted
    assert "2 nodes live: up to 2 trials at once" in stderr, stderr[-3000:]
    # the head's trials use the driver's cache (the driver runs there); the other node copied it once for its trials
    assert len(list((cluster.base / "driver-cache" / "decoded").glob("*/meta.json"))) == 1
    (original,) = (p.parent for p in (cluster.base / "driver-cache" / "decoded").glob("*/meta.json"))
    copies = (cluster.base / "worker-cache" / "decoded" / "copies.log").read_text().splitlines()
    assert len([line for line in copies if line.startswith(original.name)]) == 1, copies
    # the copy came in pieces (the arrays are several pieces long) and is byte for byte the driver's cache
    copy = cluster.base / "worker-cache" / "decoded" / original.name
    files = sorted(p.name for p in original.iterdir() if p.is_file())
    assert files == sorted(p.name for p in copy.iterdir() if p.is_file())
    assert max((original / f).stat().st_size for f in files) > 4 * PIECE_KB * 1024
    assert all((original / f).read_bytes() == (copy / f).read_bytes() for f in files)
    assert not (cluster.base / "head-cache" / "decoded").exists()
    assert (storage / cluster_eggs.name / "results" / "trials.parquet").is_file(), "tables copied to the storage"
    assert list((storage / cluster_eggs.name).glob("experiment_state-*.json")), "Ray Tune's state is there too"


def test_a_dataset_larger_than_the_object_store_reaches_the_other_node_byte_for_byte(cluster, cluster_eggs, tmp_path):
    cluster.join()
    run = subprocess.run(
        [sys.executable, "-m", "tests.search_tests.copy_on_node", str(cluster_eggs), str(tmp_path), "560", "16"],
        env={**cluster.env, "RAY_ADDRESS": cluster.address},
        capture_output=True,
        text=True,
        timeout=LIMIT_S,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    got = json.loads(run.stdout.splitlines()[-1])
    print({k: got[k] for k in ("bytes", "pieces", "rise_mb", "after_copy", "one_object")})
    # 128 images at 640 px stored: twice the store; the largest array alone is more than it
    original, copy = Path(got["original"]), Path(got["path"])
    assert got["bytes"] > 2 * STORE_MB * 2**20 and max(f.stat().st_size for f in original.iterdir()) > STORE_MB * 2**20
    assert got["node"] != got["head"] and copy.is_relative_to(cluster.base / "worker-cache")
    files = sorted(p.name for p in original.iterdir() if p.is_file())
    assert files == sorted(p.name for p in copy.iterdir() if p.is_file())
    assert all((original / f).read_bytes() == (copy / f).read_bytes() for f in files)
    # the pieces fitted the store: nothing spilled or was stored on disk; the copying process's peak grew by the
    # store it maps and a piece or two, not by the dataset; the same bytes as one object do not fit the store
    assert got["after_copy"] == {"spilled": 0, "on_disk": 0}, got
    assert got["rise_mb"] < STORE_MB + 3 * 16 < got["bytes"] / 2**20, got
    assert got["one_object"]["spilled"] + got["one_object"]["on_disk"] > 0, got


def test_storage_only_the_head_can_see_is_refused_before_any_trial(cluster, cluster_eggs, tmp_path):
    if not cluster.hides:
        pytest.skip("this machine cannot start a node in its own mount namespace (unshare -m)")
    argv = _argv(cluster_eggs, tmp_path / "out", "--address", cluster.address, "--storage", str(cluster.hidden))
    proc = cluster.search(*argv)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert f"the search's storage {cluster.hidden} is not visible from " in proc.stderr
    assert "pass --storage with a path every node mounts at the same place" in proc.stderr
    assert not list(cluster.hidden.rglob("result.json"))


def test_a_driver_without_the_clusters_token_is_told_how_to_get_it(cluster, cluster_eggs, tmp_path):
    proc = cluster.search(
        *_argv(cluster_eggs, tmp_path / "out", "--address", cluster.address),
        env={"RAY_AUTH_TOKEN": "0" * 32, "RAY_gcs_server_port_wait_time_s": "2"},  # Ray retries 20 s by default
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "InvalidAuthToken" not in proc.stderr, "Ray's retries stay quiet"
    assert proc.stderr.strip().splitlines()[-1:] == [
        f"error: the Ray cluster at {cluster.address} refused this driver's token; copy the cluster's token "
        "(`ray get-auth-token` on the head) to ~/.ray/auth_token on this machine or set RAY_AUTH_TOKEN, with "
        "RAY_AUTH_MODE=token; see the README's 'Run on a cluster'"
    ]


@pytest.mark.slow  # a real process
def test_an_unreachable_address_exits_2_at_once(cluster_eggs, tmp_path):
    port = _free_port()  # nothing listens there
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "search", *_argv(cluster_eggs, tmp_path / "out", "--address", f"127.0.0.1:{port}")],
        capture_output=True,
        text=True,
        timeout=LIMIT_S,
    )
    assert proc.returncode == 2
    assert f"cannot reach a Ray cluster at --address 127.0.0.1:{port} (" in proc.stderr
    assert time.perf_counter() - start < 60, "not Ray's two minutes of retries"


def test_the_private_ray_call_the_driver_needs_still_exists():
    """``search.cluster.session.join`` re-reads Ray's configuration after setting RAY_AUTH_MODE; no public API does."""
    from ray._raylet import Config

    assert callable(getattr(Config, "initialize", None)), (
        "ray._raylet.Config.initialize is gone: find how this Ray version re-reads RAY_AUTH_MODE after import"
    )
