import json

import numpy as np
import pytest

from datasets import UsageError, build_cache, report_line, scan_folder, split_map
from tests.conftest import write_image


def _class_folders(root, per_class=10, classes=("cats", "dogs")):
    for i, c in enumerate(classes):
        for k in range(per_class):
            write_image(root / c / f"{k}.png", colour=(40 * i, 100, 5 * k))
    return root


def test_split_folders_layout_with_valid_alias(tmp_path):
    for split in ("train", "valid", "test"):
        _class_folders(tmp_path / split, per_class=3)
    folder = scan_folder(tmp_path)
    assert folder.layout == "train/val/test"
    assert folder.classes == ("cats", "dogs")
    assert {s: len(v) for s, v in folder.files.items()} == {"train": 6, "val": 6, "test": 6}


def test_class_folders_are_split_stratified_and_the_same_every_time(tmp_path):
    _class_folders(tmp_path, per_class=20)
    a, b = scan_folder(tmp_path, seed=0), scan_folder(tmp_path, seed=0)
    assert a.layout == "class-folders"
    assert a.files == b.files
    for split in ("train", "val", "test"):
        labels = [y for _, y in a.files[split]]
        assert labels.count(0) == labels.count(1) > 0
    everything = [p for split in a.files.values() for p, _ in split]
    assert len(everything) == len(set(everything)) == 40


def test_one_extra_top_folder_is_stepped_into(tmp_path):
    _class_folders(tmp_path / "archive", per_class=10)
    assert scan_folder(tmp_path).root == tmp_path / "archive"


def test_an_empty_class_folder_is_an_error_naming_it(tmp_path):
    _class_folders(tmp_path / "data", per_class=5, classes=("only",))
    (tmp_path / "data" / "notes").mkdir()
    with pytest.raises(UsageError, match="notes has no images"):
        scan_folder(tmp_path / "data")


def test_fewer_than_two_classes_is_an_error_naming_the_folder(tmp_path):
    _class_folders(tmp_path / "data" / "photos", per_class=5, classes=("only",))
    (tmp_path / "data" / "photos" / "stray.png").write_bytes(b"")
    with pytest.raises(UsageError, match=r"data/photos has 1 class folder\(s\); a classifier needs at least two"):
        scan_folder(tmp_path / "data" / "photos")


def test_files_outside_class_folders_are_reported_not_dropped(tmp_path):
    root = _class_folders(tmp_path / "d", per_class=10)
    (root / "README.txt").write_text("about the data")
    folder = scan_folder(root)
    assert folder.skipped == [{"path": str(root / "README.txt"), "reason": "not inside a class folder"}]


def test_bad_files_are_skipped_with_their_reason_and_good_ones_kept(tmp_path):
    root = _class_folders(tmp_path / "d", per_class=10)
    (root / "cats" / "empty.jpg").write_bytes(b"")
    (root / "cats" / "fake.jpg").write_text("not an image")
    (root / "dogs" / "readme.txt").write_text("hello")
    folder = scan_folder(root)
    cache = build_cache(folder, 16, tmp_path / "cache")
    report = cache.report()
    reasons = {r["path"].rsplit("/", 1)[1]: r["reason"] for r in report["skipped"]}
    assert reasons["empty.jpg"] == "empty file (0 bytes)"
    assert reasons["fake.jpg"].startswith("not a readable image")
    assert reasons["readme.txt"].startswith("not an image file")
    assert sum(cache.sizes.values()) == 20
    assert sum(sum(c.values()) for c in report["images"].values()) == 20


def test_cache_is_decoded_once_and_rebuilt_when_a_file_changes(tmp_path):
    root = _class_folders(tmp_path / "d", per_class=10)
    first = build_cache(scan_folder(root), 16, tmp_path / "cache")
    x, y = first.load("train")
    assert x.dtype == np.uint8 and x.shape[1:] == (18, 18, 3) and len(x) == len(y)  # 16 px models crop 18 px
    again = build_cache(scan_folder(root), 16, tmp_path / "cache")
    assert again.path == first.path
    write_image(root / "cats" / "0.png", colour=(1, 2, 3), size=(50, 20))
    changed = build_cache(scan_folder(root), 16, tmp_path / "cache")
    assert changed.fingerprint != first.fingerprint
    assert json.loads((changed.path / "meta.json").read_text())["fingerprint"] == changed.fingerprint


def test_identical_images_in_two_splits_are_reported(tmp_path):
    for split in ("train", "val", "test"):
        _class_folders(tmp_path / split, per_class=2)
    report = build_cache(scan_folder(tmp_path), 16, tmp_path / "cache").report()
    assert report["duplicates_across_splits"], "same pixels in train, val and test should be listed"


def test_train_and_test_only_carves_validation_from_train(tmp_path):
    for split in ("train", "test"):
        _class_folders(tmp_path / split, per_class=10)
    folder = scan_folder(tmp_path)
    assert folder.layout == "test/train"
    assert len(folder.files["test"]) == 20
    assert len(folder.files["train"]) + len(folder.files["val"]) == 20 and folder.files["val"]


def test_kaggle_csv_index_is_used_when_present(tmp_path):
    rows = ["class id,filepaths,labels,data set"]
    for split in ("train", "valid", "test"):
        for i, c in enumerate(("air hockey", "archery")):
            for k in range(2):
                write_image(tmp_path / split / c / f"{k}.jpg", colour=(k, i, 9), fmt="JPEG")
                rows.append(f"{i},{split}/{c}/{k}.jpg,{c},{split}")
    write_image(tmp_path / "train" / "archery" / "unlisted.jpg", fmt="JPEG")
    rows.append("1,train/archery/gone.jpg,archery,train")
    (tmp_path / "sports.csv").write_text("\n".join(rows) + "\n")
    folder = scan_folder(tmp_path)
    assert folder.layout == "CSV index" and folder.classes == ("air hockey", "archery")
    assert {s: len(v) for s, v in folder.files.items()} == {"train": 4, "val": 4, "test": 4}
    assert [s["reason"] for s in folder.skipped] == ["listed in sports.csv but missing"]


def test_class_sets_that_differ_between_splits_are_an_error(tmp_path):
    _class_folders(tmp_path / "train", per_class=2)
    _class_folders(tmp_path / "valid", per_class=2, classes=("cats", "birds"))
    with pytest.raises(UsageError, match="differ from train's: birds, dogs"):
        scan_folder(tmp_path)


def test_a_class_too_small_to_split_is_an_error(tmp_path):
    _class_folders(tmp_path, per_class=2)
    with pytest.raises(UsageError, match="too few to split"):
        scan_folder(tmp_path)


def test_mostly_unreadable_folder_is_an_error_naming_it(tmp_path):
    root = _class_folders(tmp_path / "d", per_class=10)
    for c in ("cats", "dogs"):
        for k in range(5):
            (root / c / f"broken{k}.jpg").write_text("not a picture")
    with pytest.raises(UsageError, match=r"10 of 30 images in .*/d could not be read \(33%, more than 20%\)"):
        build_cache(scan_folder(root), 16, tmp_path / "cache")


def test_imbalance_and_leakage_are_warned_about_and_summarised(tmp_path):
    root = tmp_path / "d"
    for k in range(40):
        write_image(root / "many" / f"{k}.png", colour=(k, 1, 1))
    for k in range(10):
        write_image(root / "few" / f"{k}.png", colour=(1, k, 200))
    report = build_cache(scan_folder(root), 16, tmp_path / "cache").report()
    assert any("strong class imbalance" in w and "macro-F1" in w for w in report["warnings"])
    assert report_line(report).startswith("50 images in 2 classes (train ")


def test_a_stored_split_is_kept_and_new_files_join_train(tmp_path):
    root = _class_folders(tmp_path / "d", per_class=20)
    first = scan_folder(root, seed=0)
    assert first.made_splits == ("val", "test")
    stored = split_map(first)
    write_image(root / "cats" / "new.png", colour=(9, 9, 9))
    again = scan_folder(root, seed=123, keep=stored)  # another seed: the stored split still wins
    for split in ("val", "test"):
        assert again.files[split] == first.files[split]
    assert len(again.files["train"]) == len(first.files["train"]) + 1
