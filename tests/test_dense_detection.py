"""Faster/Mask R-CNN + FPN on ResNeSt: taps, GluonCV weight compatibility, bad input, training.

Reduced settings for the 2-core CPU budget (the backbone is the full ResNeSt-50, randomly
initialised): 96x96 images in training (128x128 elsewhere), batch 1, 128 RPN proposals after NMS
in training (64 at test), 64 sampled RoIs, FPN and box head 128 channels (2 convs), 256-unit box
FC, GroupNorm instead of SyncBatchNorm (one image per step), 40-120 iterations.
"""
import os
import warnings

import mxnet as mx
import numpy as np
import pytest
from mxnet import autograd

from gluon_resnest.dense import detection
from gluon_resnest.dense.detection import (
    TAP_NAMES,
    StageTaps,
    custom_faster_rcnn_fpn,
    faster_rcnn_fpn,
    fpn_features,
    mask_rcnn_fpn,
)
from gluon_resnest.dense.initialize import initialize_missing
from gluon_resnest.dense.synthetic import SHAPES
from gluon_resnest.model.resnest import StageFeatures, build
from gluon_resnest.train import dense as train

SMALL = dict(short=128, max_size=128, rpn_train_pre_nms=512, rpn_train_post_nms=128,
             rpn_test_pre_nms=256, rpn_test_post_nms=64, num_sample=64, num_fpn_filters=128,
             num_box_head_conv=2, num_box_head_conv_filters=128, num_box_head_dense_filters=256)


def _small_net(kind="faster", **kw):
    build_fn = faster_rcnn_fpn if kind == "faster" else mask_rcnn_fpn
    opts = dict(SMALL, norm="gn", pretrained_base=False, **kw)
    if kind == "mask":
        opts.update(rcnn_max_dets=16)
    net = build_fn("resnest50", "custom", classes=list(SHAPES), **opts)
    detection.initialize_detector(net)
    return net


def test_stage_taps_have_stable_names_and_match_stage_outputs():
    net = build("resnest50", dropblock_prob=0.0)
    net.initialize()
    taps = StageTaps(net)
    sym = taps(mx.sym.var("data"))
    assert sym.list_outputs() == [f"resnest_taps_{n}_output" for n in TAP_NAMES]
    x = mx.nd.random.uniform(shape=(1, 3, 96, 128))
    ours, ref = taps(x), StageFeatures(net)(x)
    for a, b, stride, ch in zip(ours, ref, (4, 8, 16, 32), (256, 512, 1024, 2048)):
        assert a.shape == (1, ch, 96 // stride, 128 // stride)
        np.testing.assert_array_equal(a.asnumpy(), b.asnumpy())


def test_fpn_levels():
    net = build("resnest50", dropblock_prob=0.0)
    fpn = fpn_features(net, 64)
    fpn.initialize()
    outs = fpn(mx.nd.random.uniform(shape=(1, 3, 128, 192)))
    assert [o.shape for o in outs] == [(1, 64, 128 // s, 192 // s) for s in (4, 8, 16, 32, 64)]


def test_fresh_detector_initialisation():
    """The R-CNN classifier starts at the sampler's class frequencies; the FPN convolutions get
    the Xavier(uniform, in, 1) GluonCV's FPN declares (MXNet drops it from the symbol)."""
    net = _small_net()
    net(mx.nd.zeros((1, 3, 128, 128)))                        # finish deferred shapes
    pos = round(SMALL["num_sample"] * 0.25) / SMALL["num_sample"]   # GluonCV's pos_ratio 0.25
    prior = np.array([1 - pos] + [pos / len(SHAPES)] * len(SHAPES))
    bias = net.class_predictor.bias.data().asnumpy()
    np.testing.assert_allclose(np.exp(bias) / np.exp(bias).sum(), prior, rtol=1e-5)
    for name, p in net.features.collect_params().items():
        if name.startswith("P") and name.endswith("weight"):
            w = p.data().asnumpy()
            bound = np.sqrt(1.0 / w[0].size)                 # sqrt(magnitude / fan_in)
            assert np.abs(w).max() <= bound and 0.9 < w.std() * np.sqrt(3) / bound < 1.1, name


def test_gluoncv_detection_weights_load_into_ours(tmp_path):
    """GluonCV's own faster_rcnn_fpn_syncbn_resnest50_coco file (random weights here) loads
    strictly into ours and gives the same feature pyramid (its backbone uses MXNet's auto
    names, ours structural ones: the loader translates)."""
    from gluoncv.model_zoo.rcnn.faster_rcnn.predefined_models import (
        faster_rcnn_fpn_syncbn_resnest50_coco as gluoncv_model,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = gluoncv_model(pretrained_base=False)
        theirs.collect_params("resnest_.*weight").initialize(mx.init.Xavier(magnitude=2))
        initialize_missing(theirs)
        x = mx.nd.random.uniform(shape=(1, 3, 128, 128))
        # finish deferred init, part by part (a full forward of the COCO recipe is slow)
        theirs.rpn(mx.nd.zeros_like(x), *theirs.features(x))
        theirs.class_predictor(theirs.box_features(mx.nd.zeros((1, 256, 7, 7))))
        theirs.box_predictor(mx.nd.zeros((1, 1024)))
    path = str(tmp_path / "faster_rcnn_fpn_syncbn_resnest50_coco-0123abcd.params")
    theirs.save_parameters(path)
    ours = faster_rcnn_fpn("resnest50", "coco", pretrained=path)
    assert isinstance(ours, detection.ResNeStFasterRCNN) and len(ours.classes) == 80
    for a, b in zip(ours.features(x), theirs.features(x)):
        assert b.asnumpy().std() > 1e-3                       # not a trivially flat pyramid
        np.testing.assert_allclose(a.asnumpy(), b.asnumpy(), rtol=1e-4, atol=1e-4)
    roi = mx.nd.random.uniform(shape=(3, 256, 7, 7))
    np.testing.assert_allclose(ours.class_predictor(ours.box_features(roi)).asnumpy(),
                               theirs.class_predictor(theirs.box_features(roi)).asnumpy(),
                               rtol=1e-4, atol=1e-5)


def test_registered_models_follow_gluoncv_recipes():
    net = faster_rcnn_fpn("resnest101", "coco", pretrained_base=False)
    assert net.short == (640, 800) and net.max_size == 1333 and net.num_class == 80
    assert net._strides == (4, 8, 16, 32, 64) and net._roi_size == (7, 7)
    assert net.train_patterns == "(?!.*moving)"
    assert net.model_name == "faster_rcnn_fpn_syncbn_resnest101_coco"
    assert len(net.box_features) == 4 * 3 + 2                  # 4 x (conv, SyncBN, relu) + FC
    voc = faster_rcnn_fpn("resnest50", "voc", norm="frozen", pretrained_base=False)
    assert voc.num_class == 20 and voc.short == 600 and voc.nms_thresh == 0.3
    # frozen: the backbone trains the convolutions of stages 2-4 only, chosen by structure
    trained = {id(p) for p in voc.collect_train_params().values()}
    backbone = {k: id(p) in trained for k, p in voc.backbone._collect_params_with_prefix().items()}
    assert not any(v for k, v in backbone.items() if k.startswith(("conv1.", "bn1.", "layer1.")))
    assert all(backbone[k] for k in ("layer2.0.conv1.weight", "layer2.0.conv2.conv.weight",
                                     "layer3.5.conv2.fc1.bias", "layer4.0.downsample.1.weight"))
    assert not any(v for k, v in backbone.items() if ".bn" in k or "downsample.2." in k)
    others = [p for p in voc.collect_params().values()
              if id(p) not in {id(q) for q in voc.backbone.collect_params().values()}]
    assert others and all(id(p) in trained for p in others)    # FPN, RPN, heads: all trained
    # the same selection as GluonCV's frozen recipe wrote over MXNet's generated names
    gluoncv_style = "|".join([".*dense", ".*rpn", ".*mask", "P", r".*layers(2|3|4)_.*conv"])
    assert set(voc.collect_train_params().keys()) == set(voc.collect_params(gluoncv_style).keys())
    mask = mask_rcnn_fpn("resnest50", "coco", pretrained_base=False)
    assert mask._roi_size == (14, 14) and mask._target_roi_size == (28, 28)


@pytest.mark.parametrize("classes, err, match", [
    ("cat", TypeError, "did you mean"),
    ([], ValueError, "empty"),
    (["cat", "cat"], ValueError, "duplicate"),
    (["cat", ""], ValueError, "non-empty"),
    (["background", "cat"], ValueError, "background"),
])
def test_wrong_classes(classes, err, match):
    with pytest.raises(err, match=match):
        custom_faster_rcnn_fpn(classes, pretrained_base=False)


def test_classes_contradicting_the_dataset():
    with pytest.raises(ValueError, match="COCO's 80 classes"):
        faster_rcnn_fpn("resnest50", "coco", classes=["cat"], pretrained_base=False)
    with pytest.raises(ValueError, match="needs classes"):
        faster_rcnn_fpn("resnest50", "custom", pretrained_base=False)
    with pytest.raises(ValueError, match="unknown detection data set 'kitti'"):
        faster_rcnn_fpn("resnest50", "kitti", pretrained_base=False)


def test_inputs_smaller_than_the_stride_and_bad_batches():
    net = _small_net()
    with pytest.raises(ValueError, match="smaller than the backbone's total stride 32"):
        net(mx.nd.zeros((1, 3, 16, 128)))          # GluonCV's net would fail inside MXNet
    assert net(mx.nd.zeros((1, 3, 32, 64)))[0].shape[0] == 1
    with pytest.raises(ValueError, match="one image at a time"):
        net(mx.nd.zeros((2, 3, 128, 128)))
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        net(mx.nd.zeros((1, 1, 128, 128)))
    with autograd.train_mode():
        with pytest.raises(ValueError, match="empty annotation set"):
            net(mx.nd.zeros((1, 3, 128, 128)), -mx.nd.ones((1, 2, 4)), -mx.nd.ones((1, 2, 1)))
        with pytest.raises(ValueError, match="no ground truth"):
            net(mx.nd.zeros((1, 3, 128, 128)))


def test_empty_annotation_sets_in_training_data():
    with pytest.raises(ValueError, match="sample 3 has an empty annotation set"):
        train.check_detection_label(np.zeros((0, 5), np.float32), 3)
    with pytest.raises(ValueError, match="training set is empty"):
        train._Checked([], None)


def _assert_same_detections(got, expected):
    """Equal detections up to the order of (near-)tied scores, which sorting may swap: each
    valid expected row is matched to the nearest (id, score, box) row of ``got``."""
    got = [o[0].asnumpy() for o in got]
    expected = [o[0].asnumpy() for o in expected]
    for a in got:
        assert np.isfinite(a).all()
    np.testing.assert_allclose(np.sort(got[1][:, 0]), np.sort(expected[1][:, 0]),
                               rtol=1e-4, atol=1e-4)
    rows_got, rows_exp = (np.concatenate(o[:3], axis=1) for o in (got, expected))
    valid = np.nonzero(expected[1][:, 0] > 0)[0]
    assert len(valid) > 0
    for j in valid:
        i = int(np.argmin(np.abs(rows_got - rows_exp[j]).max(axis=1)))
        for a, b in zip(got, expected):
            np.testing.assert_allclose(a[i], b[j], rtol=1e-3, atol=1e-3)


def _check_export(net, tmp_path, name):
    """The hybridized net exports; the exported graph gives the net's own detections on a
    validation image of the shapes set (noise can leave a trained detector with none)."""
    from gluoncv.data.transforms.presets.rcnn import FasterRCNNDefaultValTransform

    from gluon_resnest.dense.synthetic import ShapesDetection
    img, label = ShapesDetection(1, "val", image_size=128)[0]
    x = FasterRCNNDefaultValTransform(128, 128)(img, label)[0].expand_dims(0)
    net.hybridize(static_alloc=True)
    with autograd.predict_mode():
        expected = net(x)
    prefix = str(tmp_path / name)
    net.export(prefix)
    assert os.path.isfile(prefix + "-symbol.json") and os.path.isfile(prefix + "-0000.params")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loaded = mx.gluon.SymbolBlock.imports(prefix + "-symbol.json", ["data"],
                                              prefix + "-0000.params")
    _assert_same_detections(loaded(x), expected)
    return expected


def _rpn(history):
    return [h["rpn_conf"] + h["rpn_box"] for h in history]


@pytest.mark.slow
def test_faster_rcnn_trains_on_shapes(tmp_path):
    # the demo's defaults: 96 px, 120 iterations, fresh residual blocks start as the identity
    res = train.run({"task": "detection", "train": {"log_interval": 0, "export": False}},
                    str(tmp_path))
    hist = res["loss_history"]
    n = res["config"]["train"]["iterations"]
    totals, rpn = [h["total"] for h in hist], _rpn(hist)
    assert np.isfinite(totals).all() and len(totals) == n - res["skipped"] >= n - 4
    # The RPN learns first (its losses fall several-fold); the R-CNN head's losses rise while
    # it does: at first the only positive RoIs are the ground-truth boxes (box target 0), then
    # up to a quarter of the sampled RoIs are proposals with real targets. The head then learns
    # them, and over 120 iterations at 96 px the total falls (measured, first 5 vs last 10:
    # 1.31 -> 0.98 for train.seed 0; the ratio was 0.75, 0.60, 0.79 and 0.78 for seeds 0-3, so
    # the bound is 0.9; 1.07 -> 0.62 without last_gamma, whose gain here is the mAP: 0.68
    # against 0.39).
    assert np.mean(totals[-10:]) < 0.9 * np.mean(totals[:5]), totals
    assert np.mean(rpn[-10:]) < 0.35 * np.mean(rpn[:5]), rpn
    assert res["metrics"]["mAP"] > max(0.2, res["metrics_before"]["mAP"] + 0.15), res["metrics"]
    net = faster_rcnn_fpn("resnest50", "custom", classes=list(SHAPES), norm="gn",
                          pretrained_base=False, **SMALL)
    detection.load_detector(net, res["params"])
    ids, scores, boxes = _check_export(net, tmp_path, "faster")
    m = 3 * 64                                     # classes x RPN test proposals
    assert ids.shape == (1, m, 1) and scores.shape == (1, m, 1) and boxes.shape == (1, m, 4)


@pytest.mark.slow
def test_mask_rcnn_trains_on_shapes(tmp_path):
    pytest.importorskip("pycocotools", reason="GluonCV's Mask R-CNN transform needs pycocotools")
    res = train.run({"task": "detection", "model": {"arch": "mask_rcnn_fpn"},
                     "data": {"image_size": 96},
                     "train": {"iterations": 80, "log_interval": 0, "export": False,
                               "clip_gradient": 5.0}}, str(tmp_path))
    hist = res["loss_history"]
    totals, rpn, masks = [h["total"] for h in hist], _rpn(hist), [h["rcnn_mask"] for h in hist]
    assert np.isfinite(totals).all() and len(totals) == 80 - res["skipped"] >= 76
    # The per-iteration mask loss depends on which RoIs are positive (0.2-1.4 within a run),
    # and the R-CNN head's losses rise while the RPN learns (see the Faster R-CNN test), so
    # the total is no signal at this length. What learns, measured for seeds 0-2 with AVX2 and
    # AVX-512 kernels: the RPN (last 10 / first 5: 0.08-0.13), the mask loss over 20
    # iterations (last / first: 0.44-0.68) and the box mAP (0.30-0.68, from 0-0.14 untrained).
    # The mask mIoU is not asserted: it was 0.32-0.65 in five runs and in two still the level
    # of no masks at all (0.21), the mask head's probabilities not yet above 0.5.
    assert np.mean(rpn[-10:]) < 0.35 * np.mean(rpn[:5]), rpn
    assert np.mean(masks[-20:]) < 0.8 * np.mean(masks[:20]), masks
    before, after = res["metrics_before"], res["metrics"]
    assert after["mAP"] > before["mAP"] + 0.1, (before, after)
    net = mask_rcnn_fpn("resnest50", "custom", classes=list(SHAPES), norm="gn",
                        pretrained_base=False, rcnn_max_dets=16, **SMALL)
    detection.load_detector(net, res["params"])
    ids, scores, boxes, probs = _check_export(net, tmp_path, "mask")
    assert ids.shape == (1, 16, 1) and boxes.shape == (1, 16, 4)
    assert probs.shape == (1, 16, 28, 28) and 0 <= probs.min() and probs.max() <= 1


def test_last_gamma_starts_fresh_residual_blocks_as_the_identity(tmp_path):
    """``last_gamma``: every fresh bottleneck's bn3 gamma is 0, so a block computes
    relu(x + 0) = x on its (non-negative) input; loaded backbone weights are left alone."""
    net = _small_net()
    base = net.backbone
    units = [b for stage in (base.layer1, base.layer2, base.layer3, base.layer4) for b in stage]
    assert len(units) == 16 and all(abs(u.bn3.gamma.data()).sum() > 0 for u in units)
    path = str(tmp_path / "backbone.params")
    base.save_parameters(path)

    kw = dict(SMALL, norm="gn", pretrained_base=False)
    fresh = faster_rcnn_fpn("resnest50", "custom", classes=list(SHAPES), **kw)
    detection.initialize_detector(fresh, last_gamma=True)
    units = [b for s in (fresh.backbone.layer2, fresh.backbone.layer3) for b in s]
    assert all(u.bn3.gamma.data().abs().max().asscalar() == 0 for u in units)
    assert fresh.backbone.layer1[0].bn1.gamma.data().min().asscalar() == 1
    x = mx.nd.relu(mx.nd.random.normal(shape=(1, 512, 16, 16)))
    identity = fresh.backbone.layer2[1]                      # no downsample: residual is x
    np.testing.assert_array_equal(identity(x).asnumpy(), x.asnumpy())

    loaded = faster_rcnn_fpn("resnest50", "custom", classes=list(SHAPES), **kw)
    loaded.backbone.load_parameters(path)
    detection.initialize_detector(loaded, last_gamma=True)   # loaded: nothing is zeroed
    np.testing.assert_array_equal(loaded.backbone.layer3[2].bn3.gamma.data().asnumpy(),
                                  base.layer3[2].bn3.gamma.data().asnumpy())
