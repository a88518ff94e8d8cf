"""``--mlflow URI``: every trial's parameters and metrics through Ray Tune's MLflow integration, and the retrained
model's figures as one more run of the same experiment."""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from urllib.parse import urlparse

from datasets import UsageError

__all__ = ["check_mlflow", "log_retrained", "mlflow_callbacks"]

RETRAINED_RUN = "retrained"
FINAL_METRICS = ("val_acc", "val_macro_f1", "test_acc", "test_macro_f1", "test_loss")


# the tracking stores MLflow registers (its _tracking_store_registry); "" is a local folder
TRACKING_SCHEMES = (
    "",
    "file",
    "http",
    "https",
    "databricks",
    "databricks-uc",
    "uc",
    "sqlite",
    "postgresql",
    "mysql",
    "mssql",
)


def check_mlflow(uri: str | None) -> None:
    """Refuse ``--mlflow`` before Ray starts when MLflow is not installed."""
    if not uri:
        return
    if importlib.util.find_spec("mlflow") is None:
        raise UsageError(f"--mlflow {uri}: MLflow is not installed; pip install 'search[mlflow]' (or mlflow-skinny)")
    scheme = urlparse(uri).scheme.split("+")[0]  # postgresql+psycopg2:// is SQLAlchemy's dialect+driver
    if scheme not in TRACKING_SCHEMES:
        known = ", ".join(f"{s}://" for s in TRACKING_SCHEMES if s)
        raise UsageError(
            f"--mlflow {uri}: MLflow has no tracking store for '{scheme}'; give a folder or one of {known}"
        )


def mlflow_callbacks(uri: str | None, experiment: str) -> list:
    """Ray Tune's MLflow logger: one run per trial (named after it), its config as params, each epoch's metrics."""
    if not uri:
        return []
    from ray.air.integrations.mlflow import MLflowLoggerCallback

    return [MLflowLoggerCallback(tracking_uri=uri, experiment_name=experiment, tags={"search.task": experiment})]


def log_retrained(uri: str | None, experiment: str, record: Mapping) -> None:
    """The retrained best configuration as a run of its own: its config, search trial, and val/test figures."""
    if not uri:
        return
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    found = client.get_experiment_by_name(experiment)
    experiment_id = found.experiment_id if found else client.create_experiment(experiment)
    tags = {"search.task": experiment, "search.trial_id": str(record["trial_id"]), "mlflow.runName": RETRAINED_RUN}
    run = client.create_run(experiment_id, tags=tags)
    for key, value in record["config"].items():
        client.log_param(run.info.run_id, key, value)
    for key in FINAL_METRICS:
        client.log_metric(run.info.run_id, key, float(record[key]))
    client.set_terminated(run.info.run_id)
