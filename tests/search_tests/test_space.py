from search import make_searcher, search_space
from search.space import BATCH_SIZES
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
