"""Data: the demo digits, image folders, RecordIO, transforms, deterministic batches, errors."""
import os

import mxnet as mx
import numpy as np
import pytest

from gluon_resnest.train import data as D
from gluon_resnest.train.config import load_config

DATA_CFG = {"train_size": 24, "test_size": 24, "crop_pct": 0.75, "interpolation": "bilinear",
            "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}
AUG_CFG = {"crop_area": [0.5, 1.0], "crop_ratio": [0.75, 1.33], "flip": True,
           "auto_augment": True, "jitter": 0.4, "lighting": 0.1}


@pytest.fixture(scope="module")
def digits():
    return D.DigitsSource("val", 32)


def test_digits_split(digits):
    from sklearn.datasets import load_digits
    train = D.DigitsSource("train", 32)
    total = load_digits().target
    assert len(train) + len(digits) == len(total) == 1797
    assert len(digits) == 360
    # stratified: every class keeps its share of the data set (+-1 image)
    for c in range(10):
        share = (total == c).sum() * 0.2
        assert abs((digits.labels == c).sum() - share) <= 1
    img, label = digits.read(0)
    assert img.shape == (32, 32, 3) and img.dtype == np.uint8 and 0 <= label < 10


def test_folder_and_record_round_trip(tmp_path, digits):
    sub = D.SubsetSource(digits, np.arange(30), "first 30")
    assert D.write_folder(sub, str(tmp_path / "folder")) == 30
    assert D.write_record(sub, str(tmp_path / "rec" / "val")) == 30
    folder = D.FolderSource(str(tmp_path / "folder"))
    rec = D.RecordSource(str(tmp_path / "rec" / "val.rec"))
    labels = sorted(set(digits.labels[:30].tolist()))
    assert folder.classes == [str(c) for c in labels]          # sorted folder names
    assert rec.classes == [str(c) for c in range(max(labels) + 1)]   # from the .lst file
    assert sorted(rec.scan_labels()) == sorted(digits.labels[:30].tolist())
    for i in range(30):
        img, label = rec.read(i)
        ref, ref_label = sub.read(i)
        np.testing.assert_array_equal(img, ref)                    # PNG is lossless
        assert label == ref_label
    by_name = {os.path.basename(folder.name(i)): folder.read(i) for i in range(len(folder))}
    img, label = by_name["00007.png"]
    np.testing.assert_array_equal(img, sub.read(7)[0])
    assert folder.classes[label] == str(sub.read(7)[1])


def test_missing_paths_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="data path '.*nowhere' \\(data.train\\) does not"):
        D.open_source(str(tmp_path / "nowhere"), "data.train")
    (tmp_path / "x.rec").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match=r"RecordIO index .*x\.idx' does not exist"):
        D.RecordSource(str(tmp_path / "x.rec"))
    (tmp_path / "empty" / "cls").mkdir(parents=True)
    with pytest.raises(ValueError, match="no images found in"):
        D.FolderSource(str(tmp_path / "empty"))
    with pytest.raises(ValueError, match="no training data"):
        D.open_data(load_config("demo", [("data.train", None)])["data"])


def _corrupt_folder(tmp_path, digits):
    root = tmp_path / "imgs"
    D.write_folder(D.SubsetSource(digits, np.arange(12), "12"), str(root))
    bad = root / "0" / "broken.png"
    bad.parent.mkdir(exist_ok=True)
    bad.write_bytes(b"\x89PNG\r\n\x1a\n this is not really a png")
    return root, bad


def test_corrupt_images_error_or_skip(tmp_path, digits):
    root, bad = _corrupt_folder(tmp_path, digits)
    src = D.FolderSource(str(root))
    loader = D.BatchLoader(src, 64, DATA_CFG, train=False, on_corrupt="error")
    with pytest.raises(D.CorruptImageError, match=r"broken\.png.*on_corrupt=skip"):
        list(loader.batches())
    loader = D.BatchLoader(src, 64, DATA_CFG, train=False, on_corrupt="skip", workers=2)
    (_, x, y), = list(loader.batches())
    loader.close()
    assert len(y) == len(src) - 1 == 12 and x.shape == (12, 3, 24, 24)
    assert [os.path.basename(n) for n, _ in loader.skipped] == ["broken.png"]


def test_label_outside_the_model_classes_is_an_error(digits):
    loader = D.BatchLoader(digits, 360, DATA_CFG, train=False, classes=5)
    with pytest.raises(ValueError, match=r"has label [5-9], but the model has 5 classes"):
        list(loader.batches())


def test_eval_transform_matches_mxnet_resize_short_and_center_crop(digits):
    """Resize the short side to size/crop_pct, then centre crop (MXNet's own image ops)."""
    img = np.random.default_rng(0).integers(0, 256, (64, 96, 3)).astype(np.uint8)
    cfg = dict(DATA_CFG, test_size=28, crop_pct=0.875, mean=[0, 0, 0], std=[1, 1, 1])
    ours = D.eval_transform(img, cfg)                              # short side 32, crop 28
    ref = mx.image.resize_short(mx.nd.array(img, dtype="uint8"), 32, interp=1)
    ref = mx.image.center_crop(ref, (28, 28))[0].asnumpy().astype(np.float32) / 255
    assert ours.shape == (3, 28, 28)
    np.testing.assert_allclose(ours, ref.transpose(2, 0, 1), atol=1.01 / 255)


def test_train_transform_is_deterministic_per_seed(digits):
    img = digits.read(3)[0]
    a = D.train_transform(img, np.random.default_rng([0, 1, 3]), DATA_CFG, AUG_CFG)
    b = D.train_transform(img, np.random.default_rng([0, 1, 3]), DATA_CFG, AUG_CFG)
    c = D.train_transform(img, np.random.default_rng([0, 2, 3]), DATA_CFG, AUG_CFG)
    assert a.shape == (3, 24, 24) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_batches_are_deterministic_and_shard_exactly(digits):
    kw = dict(data=DATA_CFG, aug=AUG_CFG, train=True, seed=5)
    full = D.BatchLoader(digits, 32, **kw)
    again = D.BatchLoader(digits, 32, workers=2, **kw)   # threads give the same arrays
    halves = [D.BatchLoader(digits, 32, part=(r, 2), **kw) for r in range(2)]
    assert len(full) == 360 // 32
    b1, b2 = list(full.batches(1)), list(again.batches(1))
    for (_, x, y), (_, x2, y2) in zip(b1, b2):
        np.testing.assert_array_equal(x, x2)
        np.testing.assert_array_equal(y, y2)
    p0, p1 = list(halves[0].batches(1)), list(halves[1].batches(1))
    for (_, x, y), (_, xa, ya), (_, xb, yb) in zip(b1, p0, p1):
        np.testing.assert_array_equal(x, np.concatenate([xa, xb]))
        np.testing.assert_array_equal(y, np.concatenate([ya, yb]))
    # resuming mid-epoch yields the remaining batches unchanged
    tail = list(full.batches(1, start=4))
    assert [t[0] for t in tail] == list(range(4, len(full)))
    np.testing.assert_array_equal(tail[0][1], b1[4][1])
    assert not np.array_equal(full.order(1), full.order(2))
    again.close()


def test_val_fraction_and_limit(tmp_path, digits):
    D.write_folder(D.SubsetSource(digits, np.arange(40), "40"), str(tmp_path / "f"))
    cfg = load_config("demo", [("data.train", str(tmp_path / "f")), ("data.val", None),
                               ("data.val_fraction", 0.25)])["data"]
    train, val = D.open_data(cfg)
    assert (len(train), len(val)) == (30, 10)
    names = {train.name(i) for i in range(30)} | {val.name(i) for i in range(10)}
    assert len(names) == 40                                       # a partition
    train, val = D.open_data(dict(cfg, limit=8))
    assert (len(train), len(val)) == (8, 8)
