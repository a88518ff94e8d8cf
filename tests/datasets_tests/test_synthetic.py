import numpy as np
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from datasets import build_cache, make_demo_dataset, render_egg, scan_folder


def test_same_seed_same_pixels_other_seed_other_pixels():
    a = np.asarray(render_egg((3, 0, 1, 7), broken=True, size=64))
    b = np.asarray(render_egg((3, 0, 1, 7), broken=True, size=64))
    c = np.asarray(render_egg((4, 0, 1, 7), broken=True, size=64))
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_demo_folder_is_real_jpegs_in_the_split_layout_and_written_once(tmp_path):
    root = make_demo_dataset("egg", tmp_path, per_class={"train": 3, "valid": 2, "test": 2})
    files = sorted(root.rglob("*.jpg"))
    assert len(files) == 2 * (3 + 2 + 2)
    assert {p.parent.name for p in files} == {"broken", "intact"}
    assert {p.parent.parent.name for p in files} == {"train", "valid", "test"}
    with Image.open(files[0]) as im:
        assert im.format == "JPEG" and im.size == (128, 128)
    stamp = files[0].stat().st_mtime_ns
    assert make_demo_dataset("egg", tmp_path, per_class={"train": 3, "valid": 2, "test": 2}) == root
    assert files[0].stat().st_mtime_ns == stamp


def test_mean_colour_cannot_separate_the_classes(tmp_path):
    """The task is not trivial: a logistic regression on per-image mean colour scores at most 0.75."""
    root = make_demo_dataset("egg", tmp_path, per_class={"train": 120, "valid": 1, "test": 50})
    cache = build_cache(scan_folder(root), 32, tmp_path / "cache")

    def features(split):
        x, y = cache.load(split)
        return np.asarray(x, dtype=np.float32).mean(axis=(1, 2)), y

    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(*features("train"))
    score = model.score(*features("test"))
    assert score <= 0.75, score


def test_sports_stand_in_has_kaggles_layout_and_100_classes(tmp_path):
    root = make_demo_dataset("sports", tmp_path, per_class={"train": 2, "valid": 1, "test": 1})
    folder = scan_folder(root)
    assert folder.layout == "train/val/test" and len(folder.classes) == 100
    assert {s: len(v) for s, v in folder.files.items()} == {"train": 200, "val": 100, "test": 100}


def test_anime_stand_in_is_one_folder_that_the_project_splits(tmp_path):
    root = make_demo_dataset("anime", tmp_path, per_class={"all": 20})
    assert sorted(p.name for p in root.iterdir() if p.is_dir()) == ["anime", "cartoon", "human"]
    folder = scan_folder(root)
    assert folder.layout == "class-folders" and folder.classes == ("anime", "cartoon", "human")
    assert all(len(v) > 0 for v in folder.files.values())


def test_the_face_styles_are_not_told_apart_by_mean_colour(tmp_path):
    root = make_demo_dataset("anime", tmp_path, per_class={"all": 80})
    cache = build_cache(scan_folder(root), 32, tmp_path / "cache")

    def features(split):
        x, y = cache.load(split)
        return np.asarray(x, dtype=np.float32).mean(axis=(1, 2)), y

    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(*features("train"))
    assert model.score(*features("test")) <= 0.75
