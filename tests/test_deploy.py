"""The cluster files in deploy/ parse, run the search's real command line and ask for the resources they claim."""

import shlex
from pathlib import Path

import pytest
import yaml

from datasets import UsageError
from search.cluster.session import plan_resources
from search.command_line.parser import search_parser

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"


def _search_args(command: str) -> list[str]:
    words = shlex.split(command)
    start = words.index("-m")
    assert words[start + 1] == "search", command
    return words[start + 2 :]


def test_the_rayjob_runs_the_sports_search_on_gpu_workers_with_token_authentication():
    job = yaml.safe_load((DEPLOY / "rayjob.yaml").read_text())
    assert job["kind"] == "RayJob" and job["apiVersion"] == "ray.io/v1"
    args = search_parser().parse_args(_search_args(job["spec"]["entrypoint"]))  # exits on an unknown option
    assert args.tasks == ["sports"] and args.storage.startswith("s3://")
    cluster = job["spec"]["rayClusterSpec"]
    head = cluster["headGroupSpec"]
    assert head["serviceType"] == "ClusterIP" and head["rayStartParams"]["num-cpus"] == "0"
    (gpu,) = cluster["workerGroupSpecs"]
    limits = gpu["template"]["spec"]["containers"][0]["resources"]["limits"]
    gpus, cpus = int(limits["nvidia.com/gpu"]), int(limits["cpu"])
    assert gpus == int(gpu["rayStartParams"]["num-gpus"]) >= 1
    assert cluster["enableInTreeAutoscaling"] is True
    assert gpu["minReplicas"] <= gpu["replicas"] < gpu["maxReplicas"], "the autoscaler adds GPU pods"
    _accepted_as_it_starts(args, [{"CPU": 0.0}] + [{"CPU": float(cpus), "GPU": float(gpus)}] * gpu["minReplicas"])
    trials_per_pod = min(int(gpus / args.gpus_per_trial), cpus // args.cpus_per_trial)
    assert trials_per_pod == 2, "the comment promises two trials per pod"
    pods = [head["template"]["spec"], gpu["template"]["spec"], job["spec"]["submitterPodTemplate"]["spec"]]
    for pod in pods:
        env = {e["name"]: e for e in pod["containers"][0]["env"]}
        assert env["RAY_AUTH_MODE"]["value"] == "token"
        assert env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "ray-auth-token"
    images = {pod["containers"][0]["image"] for pod in pods}
    assert len(images) == 1, "the driver and the workers run the same code"


def test_the_cluster_launcher_keeps_the_dashboard_on_loopback_and_gives_every_node_the_token():
    config = yaml.safe_load((DEPLOY / "cluster.yaml").read_text())
    head_start = " ".join(config["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head_start and "RAY_AUTH_MODE=token" in head_start
    assert all("RAY_AUTH_MODE=token" in c for c in config["worker_start_ray_commands"] if " start " in c)
    assert config["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"
    types = config["available_node_types"]
    assert types[config["head_node_type"]]["resources"] == {"CPU": 0}
    workers = [t for name, t in types.items() if name != config["head_node_type"]]
    assert workers and all(t["max_workers"] <= config["max_workers"] for t in workers)
    assert any(t["node_config"]["InstanceType"].startswith(("g", "p")) for t in workers), "GPU instance types"
    assert any("pip install" in c and "-e ." in c for c in config["setup_commands"])
    command = _header_command(DEPLOY / "cluster.yaml")
    args = search_parser().parse_args(_search_args(command))
    assert args.tasks == ["sports"] and args.gpus_per_trial == 0.5
    (gpu_type,) = workers
    assert gpu_type["min_workers"] < gpu_type["max_workers"], "the autoscaler adds GPU workers"
    _accepted_as_it_starts(args, [{"CPU": 0.0}] * (1 + gpu_type["min_workers"]))  # g5.2xlarge: none at first


def _accepted_as_it_starts(args, nodes: list[dict]) -> None:
    """The search plans the cluster as it starts, before the autoscaler adds a GPU node, and waits for one;
    without --autoscaling the same cluster is refused."""
    assert args.autoscaling
    planned = plan_resources(nodes, args.cpus_per_trial, args.gpus_per_trial, None, autoscaling=True)
    assert planned.concurrency == 1 and planned.allowed(nodes) == 1, "one trial waits and asks for a node"
    grown = nodes + [{"CPU": 8.0, "GPU": 1.0}]
    assert planned.allowed(grown) == 1 + min(int(1 / args.gpus_per_trial), 8 // args.cpus_per_trial)
    with pytest.raises(UsageError, match="no node of the cluster has a GPU"):
        plan_resources(nodes, args.cpus_per_trial, args.gpus_per_trial, None)


def _header_command(path: Path) -> str:
    """The search command the file's header tells users to run (`ray exec ... '...'`), continuation lines joined."""
    header = [line.lstrip("# ").rstrip() for line in path.read_text().splitlines() if line.startswith("#")]
    text = " ".join(header).replace("\\ ", " ")
    start = text.index("python -m search")
    return text[start : text.index("'", start)]
