"""After the search: the greedy soup and the ensemble chosen on validation from the trials' last checkpoints, their
members retrained on train+val, every variant tested once (with and without test-time augmentation)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import ray
from ray import tune

from results import CONFIG_COLUMNS, ranked_trials
from search.cluster.session import Resources
from search.final.retrain import retrain_task
from trainables import TrialSetup
from trainables.combine import (
    average_weights,
    flipped_probabilities,
    greedy_ensemble,
    metrics_of,
    select_variants,
    split_probabilities,
)

__all__ = [
    "AUTO_MEMBERS",
    "Blend",
    "Choice",
    "ENSEMBLE_CANDIDATES",
    "affordable_ensemble",
    "ensemble_choice",
    "flip_pays",
    "SOUP_CANDIDATES",
    "candidates",
    "choose_variants",
    "retrained_soup",
    "trial_config",
    "variant_rows",
]


SOUP_CANDIDATES = 4  # the best backbone's top trials a soup may average: each member is one more retrain
ENSEMBLE_CANDIDATES = 8  # the top trials of any backbone an ensemble chooses from
AUTO_MEMBERS = 3  # with --time-budget and no --ensemble: the most members the plan reserves and the driver weighs


@dataclass(frozen=True)
class Blend:
    """A soup or an ensemble chosen on validation: each member trial's weight, best first (a soup's are all 1), and
    the blend's validation accuracy."""

    members: Mapping[str, int]
    val_acc: float

    def __str__(self) -> str:
        return ", ".join(f"{t} x{n}" if n > 1 else t for t, n in self.members.items())


@dataclass(frozen=True)
class Choice:
    """The final stage's choice on validation, before any retrain: each candidate's accuracy and probabilities, the
    soup and the ensemble (None: not asked for, or not taken), whether to test with the flipped view, and why."""

    val_acc: Mapping[str, float] = field(default_factory=dict)
    probs: Mapping[str, np.ndarray] = field(default_factory=dict)
    soup: Blend | None = None
    ensemble: Blend | None = None
    tta: bool = False
    why: str = ""

    def members(self) -> list[str]:
        """Every trial the soup and the ensemble retrain, once each."""
        blends = [b for b in (self.soup, self.ensemble) if b is not None]
        return list(dict.fromkeys(t for b in blends for t in b.members))


def trial_config(row: pd.Series) -> dict:
    """A trial's configuration as it trained (a batch halved after running out of memory stays halved)."""
    plain = {k: row[k].item() if hasattr(row[k], "item") else row[k] for k in CONFIG_COLUMNS}
    return plain | {"batch_size": int(row["trained_batch_size"])}


def candidates(
    trials: pd.DataFrame,
    checkpoints: dict[str, tune.Checkpoint],
    soup: bool,
    ensemble: int,
    limit: int | None = ENSEMBLE_CANDIDATES,
) -> list:
    """(trial id, backbone, checkpoint), best first: the ensemble's pool (the ``limit`` best, all for None) and the
    soup's (the best backbone's)."""
    ranked = ranked_trials(trials)
    ranked = ranked[ranked["trial_id"].isin(list(checkpoints))]
    keep = ranked.head((limit or len(ranked)) if ensemble else 0)["trial_id"].tolist()
    if soup and len(ranked):
        same = ranked[ranked["backbone"] == ranked.iloc[0]["backbone"]].head(SOUP_CANDIDATES)["trial_id"].tolist()
        keep += [t for t in same if t not in keep]
    rows = ranked.set_index("trial_id")
    order = [t for t in ranked["trial_id"] if t in keep]
    return [(t, rows.loc[t, "backbone"], checkpoints[t]) for t in order]


def choose_variants(
    setup: TrialSetup, resources: Resources, pool: list, soup: bool, ensemble: int, tta: bool = False
) -> Choice:
    """``select_variants`` as a Ray task where the retrain would run; ``tta`` as asked."""
    remote, one = retrain_task(select_variants, setup, resources)
    out = ray.get(remote.remote(one, pool, SOUP_CANDIDATES if soup else 0, ensemble))
    return Choice(
        out["val_acc"],
        out["probs"],
        Blend(dict.fromkeys(out["soup"]["members"], 1), out["soup"]["val_acc"]) if "soup" in out else None,
        Blend(out["ensemble"]["members"], out["ensemble"]["val_acc"]) if "ensemble" in out else None,
        tta,
    )


def retrained_soup(
    soup: Blend, runs: dict[str, dict], setup: TrialSetup, resources: Resources, backbone: str
) -> tuple[dict, tuple[np.ndarray, np.ndarray]]:
    """The soup's retrained weights (the mean of its members' retrains) and its test probabilities, without and with
    test-time augmentation (a Ray task where the retrain ran; a soup of one is that model)."""
    members = list(soup.members)
    if len(members) == 1:
        run = runs[members[0]]
        return run["state_dict"], (run["test_probs"], run["test_probs_tta"])
    state = average_weights([runs[t]["state_dict"] for t in members])
    remote, one = retrain_task(split_probabilities, setup, resources)
    ref = ray.put(state)
    probs = ray.get([remote.remote(backbone, ref, one, "test", tta) for tta in (False, True)])
    return state, (probs[0], probs[1])


def variant_rows(
    choice: Choice,
    runs: dict[str, dict],
    soup: tuple[np.ndarray, np.ndarray] | None,
    labels: np.ndarray,
    num_classes: int,
    best_id: str,
    backbones: dict[str, str],
) -> list[dict]:
    """One row per variant (single, soup, ensemble), each without and with test-time augmentation: its members,
    validation accuracy where it was chosen on validation, and its test figures."""
    rows = []

    def add(variant: str, members: Mapping[str, int], val_acc: float | None, probs: tuple) -> None:
        for tta, p in zip((False, True), probs, strict=True):
            test = metrics_of(p, labels, num_classes)
            rows.append(
                {
                    "variant": variant,
                    "tta": tta,
                    "members": [{"trial_id": t, "backbone": backbones[t], "weight": n} for t, n in members.items()],
                    "val_acc": None if tta else val_acc,  # chosen without the flipped view
                    "test_acc": test["acc"],
                    "test_macro_f1": test["macro_f1"],
                }
            )

    single = runs[best_id]
    add("single", {best_id: 1}, choice.val_acc.get(best_id), (single["test_probs"], single["test_probs_tta"]))
    if choice.soup is not None and soup is not None:
        add("soup", choice.soup.members, choice.soup.val_acc, soup)
    if choice.ensemble is not None:
        members = choice.ensemble.members
        total = sum(members.values())
        probs = tuple(
            sum(runs[t][key] * n for t, n in members.items()) / total for key in ("test_probs", "test_probs_tta")
        )
        add("ensemble", members, choice.ensemble.val_acc, probs)
    return rows


def affordable_ensemble(
    probs: dict[str, np.ndarray], labels: np.ndarray, size: int, costs: dict[str, float], allowance: float
) -> tuple[dict[str, int], float]:
    """Greedy ensemble selection (``greedy_ensemble``) among the candidates whose retrains, summed, fit in
    ``allowance`` seconds: while the chosen members cost more, the costliest of them leaves the pool (the best
    candidate stays, alone if need be)."""
    pool = dict(probs)
    while True:
        members, accuracy = greedy_ensemble(pool, labels, size)
        if sum(costs[t] for t in members) <= allowance or len(pool) == 1:
            return members, accuracy
        first = next(iter(pool))
        costliest = max((t for t in members if t != first), key=lambda t: costs[t], default=None)
        if costliest is None:
            return members, accuracy
        del pool[costliest]


def ensemble_choice(
    ranked: list[str],
    probs: dict[str, np.ndarray],
    labels: np.ndarray,
    size: int,
    costs: dict[str, float] | None = None,
    allowance: float = float("inf"),
) -> tuple[dict[str, int], float]:
    """The ensemble the final stage takes, and the time budget's plan expects: ``affordable_ensemble`` over the first
    ``ENSEMBLE_CANDIDATES`` distinct trials of ``ranked`` (best first) that have probabilities. Identical ones count
    once: probes that kept their fitted head give the same probabilities, and on sports-a50 eight such lite0 probes
    filled the pool and left out the lite2 probe that the best ensemble needed."""
    pool: dict[str, np.ndarray] = {}
    for trial in ranked:
        if len(pool) == ENSEMBLE_CANDIDATES:
            break
        if trial in probs and not any(np.array_equal(probs[trial], p) for p in pool.values()):
            pool[trial] = probs[trial]
    if not pool:
        return {}, -1.0
    return affordable_ensemble(pool, labels, size, costs or dict.fromkeys(pool, 0.0), allowance)


def flip_pays(
    setup: TrialSetup,
    resources: Resources,
    members: dict[str, int],
    pool: list,
    probs: dict[str, np.ndarray],
    labels: np.ndarray,
) -> tuple[bool, float]:
    """Whether test-time augmentation raises the chosen model's validation accuracy (the members' flipped views
    computed in a Ray task where the retrain runs), and the accuracy with it."""
    remote, one = retrain_task(flipped_probabilities, setup, resources)
    flipped = ray.get(remote.remote(one, [c for c in pool if c[0] in members]))
    total = sum(members.values())
    plain = sum(probs[t] * n for t, n in members.items()) / total
    tta = sum(flipped[t] * n for t, n in members.items()) / total
    accuracy = float((tta.argmax(1) == labels).mean())
    return accuracy > float((plain.argmax(1) == labels).mean()), accuracy
