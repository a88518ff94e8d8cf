"""Trial checkpoints kept until no experiment snapshot can still name them."""

from __future__ import annotations

import logging
import os
import posixpath

from pyarrow import fs
from ray import tune
from ray.tune.experiment import Trial

__all__ = ["CheckpointRetention", "delete_older", "snapshot_period"]

log = logging.getLogger(__name__)

_PERIOD = os.environ.get("TUNE_GLOBAL_CHECKPOINT_S")  # a user's own setting wins


def snapshot_period(experiment: str) -> str:
    """How often Ray Tune saves the experiment snapshot (``TUNE_GLOBAL_CHECKPOINT_S``). Without ``num_to_keep`` Ray no
    longer forces one after each checkpoint, and its "auto" waits 10 s or more: a driver killed -9 would then run
    again every epoch of those seconds on --resume. Half a second locally; on remote storage (a URI) each snapshot is
    an upload, so Ray's own pace."""
    return _PERIOD or ("auto" if "://" in experiment else "0.5")


class CheckpointRetention(tune.Callback):
    """Keeps each trial's newest checkpoint and the one the last saved experiment snapshot names; deletes the older.

    Ray Tune's ``CheckpointConfig(num_to_keep=1)`` deletes a trial's checkpoint as soon as a newer one arrives, before
    the snapshot naming the newer one is saved: a driver killed in between leaves a snapshot naming a deleted
    checkpoint, and the resumed trial fails with "does not exist on storage anymore" until it ends in ERROR. Ray Tune
    calls ``get_state`` each time it saves a snapshot, after writing the trials' state; what the snapshot before it
    named may go then, since a complete newer snapshot is written (Ray copies each to the experiment folder in the
    background: a few files, done long before the next snapshot). A finished search keeps each trial's newest.
    """

    def __init__(self) -> None:
        self.arrived: dict[str, tune.Checkpoint] = {}  # per trial, its newest checkpoint since the last snapshot
        self.named: dict[str, tune.Checkpoint] = {}  # per trial, the newest the last snapshot names, if it changed

    def on_checkpoint(self, iteration: int, trials: list[Trial], trial: Trial, checkpoint: tune.Checkpoint, **info):
        self.arrived[trial.trial_id] = checkpoint

    def get_state(self) -> None:
        for checkpoint in self.named.values():
            delete_older(checkpoint)
        self.named, self.arrived = self.arrived, {}
        return None  # nothing to save: a restored search starts with nothing to delete

    def on_experiment_end(self, trials: list[Trial], **info) -> None:
        # after the search's last snapshot (Ray Tune saves it before ending the experiment's callbacks)
        for checkpoint in self.named.values():
            delete_older(checkpoint)


def delete_older(checkpoint: tune.Checkpoint) -> None:
    """Delete the checkpoints of ``checkpoint``'s trial that Ray Tune saved before it (``checkpoint_NNNNNN``)."""
    trial_dir, name = posixpath.split(checkpoint.path)
    try:
        entries = checkpoint.filesystem.get_file_info(fs.FileSelector(trial_dir))
        for entry in entries:
            if (
                entry.type == fs.FileType.Directory
                and entry.base_name.startswith("checkpoint_")
                and entry.base_name < name
            ):
                checkpoint.filesystem.delete_dir(entry.path)
    except OSError as e:  # a full or unreachable storage: the older checkpoints cost space, not correctness
        log.warning("could not delete the checkpoints before %s: %s", checkpoint.path, e)
