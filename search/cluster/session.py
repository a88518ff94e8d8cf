"""Starting or joining Ray, and fitting trials to the resources it has."""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import socket
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from datasets import UsageError
from search.command_line.options import RAY_DASHBOARD_PORT

__all__ = [
    "LOOPBACK",
    "Resources",
    "TOKEN_HELP",
    "WORKER_ENV",
    "check_address",
    "check_shared_storage",
    "free_port",
    "join",
    "node_resources",
    "plan_resources",
    "ray_session",
]

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
# A worker goes to the next trial only if the last trial's thread ends within this many seconds of its stop (Ray's
# default, 2 s, is shorter than freeing a model takes on a busy machine: after a kill, --resume starts beside the
# old workers, and a trial was lost with "reuse requires reset_config()")
WORKER_ENV = {"TUNE_FUNCTION_THREAD_TIMEOUT_S": "60"}


@contextmanager
def ray_session(address: str | None = None, dashboard_port: int = RAY_DASHBOARD_PORT) -> Iterator[str | None]:
    """Join ``address`` or start a local Ray whose dashboard listens on loopback only (none at port 0); yields the
    dashboard URL (the cluster's when joining one).

    An already initialised Ray (a notebook, the test suite) is used as it is and left running.
    """
    if ray.is_initialized():
        yield None
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        context = join(address)
    else:
        os.environ.update(WORKER_ENV)  # the local workers inherit it
        context = _start_local(dashboard_port)
    try:
        url = context.dashboard_url
        yield f"http://{url}" if url and not url.startswith("http") else url
    finally:
        ray.shutdown()


DASHBOARD_TRIES = 3


def _start_local(port: int) -> object:
    """A local Ray, its dashboard on loopback. At the default port the dashboard binds the first free port from 8265
    on itself, so searches started at one moment each get one. A port asked for that another process takes between
    the check and the dashboard's bind is retried on a free one; after that Ray starts without a dashboard."""
    quiet = {"logging_level": logging.WARNING}
    if not port:  # no dashboard saves its processes' start, about 4 CPU-seconds: for scripts and CI
        return ray.init(include_dashboard=False, **quiet)
    if port == RAY_DASHBOARD_PORT:
        return ray.init(include_dashboard=True, dashboard_host=LOOPBACK, **quiet)
    for attempt in range(DASHBOARD_TRIES):
        chosen = free_port(port if attempt == 0 else 0)
        try:
            return ray.init(include_dashboard=True, dashboard_host=LOOPBACK, dashboard_port=chosen, **quiet)
        except Exception as e:  # Ray raises ValueError for a taken port, a bare Exception when the dashboard dies
            ray.shutdown()
            log.warning("the dashboard could not listen on %d (%s)", chosen, str(e).strip().splitlines()[0][:200])
    log.warning("starting Ray without a dashboard after %d ports failed", DASHBOARD_TRIES)
    return ray.init(include_dashboard=False, **quiet)


def free_port(port: int) -> int:
    """``port`` when nothing listens there on loopback, else (or for 0) a free one the system picks."""
    with socket.socket() as probe:
        try:
            probe.bind((LOOPBACK, port))
        except OSError:
            probe.bind((LOOPBACK, 0))
            log.warning(
                "port %d is taken (another search's dashboard?); the dashboard uses %d", port, probe.getsockname()[1]
            )
        return probe.getsockname()[1]


TOKEN_HELP = (
    "copy the cluster's token (`ray get-auth-token` on the head) to ~/.ray/auth_token on this machine or set "
    "RAY_AUTH_TOKEN, with RAY_AUTH_MODE=token; see the README's 'Run on a cluster'"
)


def check_address(address: str | None) -> None:
    """A one-line UsageError, before any data is decoded, when nothing answers at ``address`` (HOST:PORT)."""
    if address in (None, "", "auto", "local"):
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=5).close()
    except (OSError, ValueError) as e:  # Ray itself retries an unreachable address for two minutes
        raise UsageError(
            f"cannot reach a Ray cluster at --address {address} ({e}); start one with `ray start --head` "
            "there, check the host and port, or leave --address out to run on this machine"
        ) from None


def join(address: str) -> object:
    """Connect to the Ray cluster at ``address``, or raise a one-line UsageError that says why not and the fix."""
    check_address(address)
    if "RAY_AUTH_MODE" not in os.environ:
        # a head of Ray 2.60 turns token authentication on and refuses a driver that does not send its token; Ray
        # read its configuration when imported, so it reads it again (as Ray's own tests do). No public API does
        # this; tests/search_tests/test_cluster.py::test_the_private_ray_call_the_driver_needs_still_exists pins it
        os.environ["RAY_AUTH_MODE"] = "token"
        from ray._raylet import Config

        Config.initialize("")
    with tempfile.TemporaryFile("w+") as captured, _stderr_to(captured):
        try:
            return ray.init(address=address, logging_level=logging.WARNING, runtime_env={"env_vars": WORKER_ENV})
        except ConnectionError as e:
            reason = str(e.__cause__ or e)
            if "InvalidAuthToken" in reason or "Unauthenticated" in reason:
                raise UsageError(f"the Ray cluster at {address} refused this driver's token; {TOKEN_HELP}") from None
            raise UsageError(f"cannot connect to the Ray cluster at {address}: {str(e).splitlines()[0]}") from None


@contextmanager
def _stderr_to(file) -> Iterator[None]:
    """Ray's C++ client logs each failed attempt to connect on stderr; the error raised says it in one line."""
    saved = os.dup(2)
    os.dup2(file.fileno(), 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


@dataclass(frozen=True)
class Resources:
    """What each trial gets and how many run at once; the retrain gets one whole node."""

    cpus_per_trial: int
    gpus_per_trial: float
    concurrency: int  # at the start; on a cluster it follows the live nodes (FollowCluster), within ``cap``
    retrain_cpus: int
    retrain_gpus: float
    cluster: bool = False  # several nodes, or joined a cluster: nodes may come and go
    autoscaling: bool = False
    cap: int | None = None  # --concurrency

    def allowed(self, nodes: list[dict[str, float]]) -> int:
        """How many trials may run at once on ``nodes`` (the live ones, now): what they fit, within ``cap``; with
        an autoscaler one more, which waits and so asks it for a node."""
        fit = sum(_trials_on(n, self.cpus_per_trial, self.gpus_per_trial) for n in nodes) + self.autoscaling
        return max(1, min(self.cap or fit, fit))


@ray.remote(num_cpus=0)
def _sees(path: str, token: str) -> bool:
    try:
        return Path(path).read_text() == token
    except OSError:
        return False


def check_shared_storage(experiment: str) -> None:
    """Refuse a local storage path that some node of a multi-node cluster cannot see: its trials would write their
    checkpoints and results where the driver never finds them. Cloud URIs (``s3://``, ``gs://``) are shared."""
    others = [n for n in ray.nodes() if n.get("Alive") and n["NodeID"] != ray.get_runtime_context().get_node_id()]
    if "://" in experiment or not others:
        return
    root = Path(experiment).parent
    root.mkdir(parents=True, exist_ok=True)
    marker = root / f".visible-{uuid.uuid4().hex}"
    marker.write_text(marker.name)
    try:
        checks = {
            n["NodeManagerAddress"] + " (node " + n["NodeID"][:12] + ")": _sees.options(
                scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)
            ).remote(str(marker), marker.name)
            for n in others
        }
        blind = [name for name, ref in checks.items() if not ray.get(ref, timeout=120)]
    finally:
        marker.unlink(missing_ok=True)
    if blind:
        raise UsageError(
            f"the search's storage {root} is not visible from {', '.join(blind)}: with several nodes, pass --storage "
            "with a path every node mounts at the same place (NFS, EFS, a shared volume) or a bucket (s3://, gs://)"
        )


def node_resources() -> list[dict[str, float]]:
    """What each live node of the connected Ray cluster offers (``CPU``, ``GPU``, custom resources)."""
    return [n["Resources"] for n in ray.nodes() if n.get("Alive")]


def plan_resources(
    nodes: list[dict[str, float]],
    cpus_per_trial: int,
    gpus_per_trial: float | None,
    concurrency: int | None,
    *,
    cluster: bool = False,
    autoscaling: bool = False,
) -> Resources:
    """Check a trial fits on one of ``nodes`` (or, with ``autoscaling``, may fit on a node the autoscaler adds) and
    derive the concurrency they allow: a fraction of a GPU packs ``floor(1 / fraction)`` trials on each GPU, as far
    as the CPUs go."""
    total_gpu = sum(n.get("GPU", 0) for n in nodes)
    gpus = gpus_per_trial if gpus_per_trial is not None else (1.0 if total_gpu >= 1 else 0.0)
    if gpus > 0 and total_gpu == 0 and not autoscaling:
        raise UsageError(
            f"--gpus-per-trial {gpus:g} but no node of the cluster has a GPU; leave it out (or pass 0) to train on "
            "CPUs, or pass --autoscaling when the cluster's autoscaler adds GPU nodes"
        )
    fits = [n for n in nodes if n.get("CPU", 0) >= cpus_per_trial and n.get("GPU", 0) >= gpus]
    if not fits and autoscaling:  # the retrain then asks for the trials' shape, on whichever node comes
        fits = [{"CPU": float(cpus_per_trial), "GPU": gpus}]
    elif not fits:
        largest = max(nodes, key=lambda n: (n.get("GPU", 0), n.get("CPU", 0)), default={})
        raise UsageError(
            f"a trial asks for {cpus_per_trial} CPUs and {gpus:g} GPUs but the largest node offers "
            f"{largest.get('CPU', 0):g} CPUs and {largest.get('GPU', 0):g} GPUs; "
            "lower --cpus-per-trial / --gpus-per-trial"
        )
    node = max(fits, key=lambda n: (n.get("GPU", 0), n.get("CPU", 0)))
    planned = Resources(
        cpus_per_trial=cpus_per_trial,
        gpus_per_trial=gpus,
        concurrency=1,
        retrain_cpus=int(node.get("CPU", cpus_per_trial)),
        retrain_gpus=1.0 if gpus > 0 else 0.0,
        cluster=cluster or autoscaling or len(nodes) > 1,
        autoscaling=autoscaling,
        cap=concurrency,
    )
    return dataclasses.replace(planned, concurrency=planned.allowed(nodes))


def _trials_on(node: dict[str, float], cpus: int, gpus: float) -> int:
    by_cpu = int(node.get("CPU", 0) // cpus)
    if gpus <= 0:
        return by_cpu
    if gpus < 1:  # Ray packs fractions within one GPU, never across two
        per_gpu = int(math.floor(1 / gpus + 1e-9))
        return min(by_cpu, per_gpu * int(node.get("GPU", 0)))
    return min(by_cpu, int(node.get("GPU", 0) // gpus))
