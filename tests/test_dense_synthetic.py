"""The generated shapes data set: consistent boxes, masks, polygons and segmentation maps."""
import numpy as np
import pytest

from gluon_resnest.dense.synthetic import (
    SHAPES,
    ShapesConfig,
    ShapesDetection,
    ShapesSegmentation,
    make_sample,
)


def _samples(n=6, **kw):
    cfg = ShapesConfig(**kw)
    return [make_sample(cfg, "train", i) for i in range(n)]


def test_sample_is_deterministic_and_splits_differ():
    cfg = ShapesConfig(image_size=64)
    a, b = make_sample(cfg, "train", 3), make_sample(cfg, "train", 3)
    assert np.array_equal(a["image"], b["image"]) and np.array_equal(a["boxes"], b["boxes"])
    assert not np.array_equal(a["image"], make_sample(cfg, "val", 3)["image"])
    assert not np.array_equal(a["image"], make_sample(ShapesConfig(64, seed=1), "train", 3)["image"])


def test_boxes_masks_and_segmap_agree():
    for s in _samples(8):
        n = len(s["labels"])
        assert 1 <= n <= 3 and s["image"].shape == (128, 128, 3) and s["image"].dtype == np.uint8
        assert s["masks"].shape == (n, 128, 128) and s["boxes"].shape == (n, 4)
        assert s["masks"].sum(axis=0).max() == 1                  # instances do not overlap
        for mask, box, label in zip(s["masks"], s["boxes"], s["labels"]):
            ys, xs = np.nonzero(mask)
            assert box.tolist() == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
            assert (s["segmap"][mask.astype(bool)] == label + 1).all()
        background = s["masks"].sum(axis=0) == 0
        assert (s["segmap"][background] == 0).all()


def test_polygons_rasterise_to_the_masks_with_gluoncv():
    pytest.importorskip("pycocotools", reason="GluonCV's polygon rasteriser needs pycocotools")
    from gluoncv.data.transforms.mask import to_mask
    ious = []
    for s in _samples(6):
        for polys, mask in zip(s["polygons"], s["masks"]):
            theirs = to_mask(polys, (128, 128))
            ious.append((theirs & mask).sum() / (theirs | mask).sum())
    # two rasterisers (OpenCV here, COCO's in GluonCV) differ by about a pixel along edges;
    # the shapes are 28-54 px across
    assert min(ious) > 0.85 and np.mean(ious) > 0.9, ious


def test_classes_are_separable_by_colour():
    # each class is filled with its own saturated colour: mean colours per class differ clearly
    means = {c: [] for c in range(3)}
    for s in _samples(12):
        for mask, label in zip(s["masks"], s["labels"]):
            means[int(label)].append(s["image"][mask.astype(bool)].mean(axis=0))
    centres = [np.mean(means[c], axis=0) for c in range(3) if means[c]]
    assert len(centres) == 3
    for i in range(3):
        for j in range(i + 1, 3):
            assert np.abs(centres[i] - centres[j]).max() > 100


def test_detection_view_is_gluoncv_style():
    ds = ShapesDetection(5, with_masks=True, image_size=64)
    img, label, segm = ds[2]
    assert img.shape == (64, 64, 3) and str(img.dtype) == "<class 'numpy.uint8'>"
    assert label.shape[1] == 5 and len(segm) == label.shape[0]
    assert ds.classes == list(SHAPES) and len(ds) == 5
    with pytest.raises(IndexError):
        ds[5]


def test_segmentation_view_uses_gluoncv_transforms():
    ds = ShapesSegmentation(4, "train", "train", base_size=64, crop_size=48, image_size=64)
    img, mask = ds[0]
    assert img.shape == (48, 48, 3) and mask.shape == (48, 48)
    assert set(np.unique(mask.asnumpy())) <= {0, 1, 2, 3}
    val = ShapesSegmentation(4, "val", "val", base_size=64, crop_size=48, image_size=64)
    assert val[1][1].shape == (48, 48) and ds.NUM_CLASS == 4


@pytest.mark.parametrize("kw, match", [
    ({"min_objects": 0}, "without objects has no annotations"),
    ({"image_size": 16}, "image_size"),
    ({"classes": ("circle", "hexagon")}, "classes"),
    ({"classes": ()}, "classes"),
    ({"min_size": 0.5, "max_size": 0.3}, "min_size"),
])
def test_bad_config(kw, match):
    with pytest.raises(ValueError, match=match):
        ShapesConfig(**kw)


def test_bad_split_and_size():
    with pytest.raises(ValueError, match="split"):
        ShapesDetection(4, split="holdout")
    with pytest.raises(ValueError, match="num_images"):
        ShapesSegmentation(0)
