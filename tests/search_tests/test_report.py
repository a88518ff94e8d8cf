"""Hyperparameter importance comes from the study's completed trials; pruned ones carry no final value."""

import optuna
from PIL import Image

from results import importance
from search.outputs import param_importances


def _study(tmp_path, completed: int, pruned: int) -> str:
    url = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(study_name="search", storage=url, direction="maximize")
    for i in range(completed + pruned):
        trial = study.ask(
            {
                "lr": optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True),
                "freeze_depth": optuna.distributions.IntDistribution(0, 5),
            }
        )
        trial.report(0.5, 1)
        if i < completed:
            study.tell(trial, 1 - abs(trial.params["lr"] - 1e-3) * 100)
        else:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    return url


def test_importance_is_computed_from_completed_trials_and_plotted(tmp_path):
    importances = param_importances(_study(tmp_path, completed=6, pruned=2))
    assert set(importances) == {"lr", "freeze_depth"} and importances["lr"] > 0
    path = importance(importances, tmp_path / "importance.png")
    with Image.open(path) as image:
        assert image.format == "PNG" and image.width > 200


def test_fewer_than_three_completed_trials_give_no_importance_however_many_were_pruned(tmp_path):
    assert param_importances(_study(tmp_path, completed=2, pruned=6)) == {}
