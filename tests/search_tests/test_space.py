from search import make_searcher, search_space
from search.space import BATCH_SIZES, baseline_points
from trainables import TrialConfig

BACKBONES = ["resnet10t", "mobilenetv3_small_050"]


def _proposals(seed: int, n: int = 6) -> list[dict]:
    searcher = make_searcher(BACKBONES, seed=seed, trials=12)
    return [searcher.suggest(f"t{i}") for i in range(n)]


def test_space_has_the_contract_names():
    assert set(search_space(BACKBONES)) == {
        "backbone",
        "freeze_depth",
        "aug_strength",
        "lr",
        "weight_decay",
        "batch_size",
        "label_smoothing",
        "dropout",
    }


def test_same_seed_proposes_the_same_configurations_and_another_seed_different_ones():
    first, again, other = _proposals(7), _proposals(7), _proposals(8)
    assert first == again
    assert first != other


def test_proposals_are_valid_trial_configs_within_the_contract_ranges():
    for config in _proposals(0, n=12):
        cfg = TrialConfig.from_dict(config)
        assert cfg.backbone in BACKBONES
        assert 0 <= cfg.freeze_depth <= 5 and 0 <= cfg.aug_strength <= 1
        assert 1e-4 <= cfg.lr <= 1e-2 and 0 <= cfg.label_smoothing <= 0.2
        assert cfg.batch_size in BATCH_SIZES


def test_baseline_recipes_are_evaluated_first_and_take_at_most_half():
    points = baseline_points(BACKBONES, trials=12)
    assert [(p["backbone"], p["freeze_depth"]) for p in points] == [
        ("resnet10t", 0),
        ("mobilenetv3_small_050", 0),
        ("resnet10t", 5),
        ("mobilenetv3_small_050", 5),
    ]
    assert len(baseline_points(BACKBONES, trials=3)) == 1
    searcher = make_searcher(BACKBONES, seed=0, trials=12, points=points)
    assert [searcher.suggest(f"t{i}") for i in range(4)] == points
    assert searcher.suggest("t4") not in points
