"""The training recipe against independent references: GluonCV's schedulers and DropBlock
scheduler, numpy formulas, MXNet's optimizer, and PIL's image operations."""
import mxnet as mx
import numpy as np
import pytest
from gluoncv.nn.dropblock import DropBlockScheduler
from gluoncv.utils import LRScheduler, LRSequential
from PIL import Image, ImageEnhance, ImageOps

import gluon_resnest
from gluon_resnest.model.blocks import DropBlock
from gluon_resnest.train import recipe


# -- learning rate --------------------------------------------------------------------------
@pytest.mark.parametrize("schedule", ["cosine", "constant"])
@pytest.mark.parametrize("warmup", [0, 2, 5])
def test_lr_schedule_matches_gluoncv(schedule, warmup):
    """GluonCV's LRSequential(linear warm-up, cosine) is the schedule of the official training."""
    ipe, epochs, base = 7, 12, 0.8
    parts = []
    if warmup:
        parts.append(LRScheduler("linear", base_lr=0.0, target_lr=base, nepochs=warmup,
                                 iters_per_epoch=ipe))
    parts.append(LRScheduler(schedule, base_lr=base, target_lr=0.0, nepochs=epochs - warmup,
                             iters_per_epoch=ipe))
    ref = LRSequential(parts)
    for step in range(epochs * ipe):
        ours = recipe.lr_at(step, ipe, epochs, base, warmup, 0.0, 0.0, schedule)
        assert ours == pytest.approx(ref(step), rel=1e-12, abs=1e-12), step


def test_lr_schedule_end_points():
    assert recipe.lr_at(0, 10, 20, 1.0, warmup_epochs=0) == pytest.approx(1.0)
    assert recipe.lr_at(199, 10, 20, 1.0, final_lr=0.01) == pytest.approx(0.01)
    assert recipe.lr_at(10**6, 10, 20, 1.0) == pytest.approx(0.0)   # past the end: stays
    assert recipe.lr_at(5 * 10, 10, 20, 1.0, warmup_epochs=5) == pytest.approx(1.0)  # peak
    assert recipe.lr_at(0, 10, 20, 1.0, warmup_epochs=5, warmup_lr=0.1) == pytest.approx(0.1)


def test_lr_scaled_by_batch_size():
    assert recipe.scaled_lr(0.1, 8192, 256) == pytest.approx(3.2)   # the paper's R50 run
    assert recipe.scaled_lr(0.1, 2048, 256) == pytest.approx(0.8)


# -- targets --------------------------------------------------------------------------------
def test_label_smoothing_targets_and_loss():
    eps, k = 0.1, 5
    labels = np.array([0, 3, 4, 3])
    t = recipe.smooth_targets(labels, k, eps)
    ref = np.full((4, k), eps / k)
    ref[np.arange(4), labels] = 1 - eps + eps / k
    np.testing.assert_allclose(t, ref, rtol=1e-6)
    # the loss MXNet computes with these targets = (1-eps) * CE(label) + eps * mean_k(-log p_k)
    logits = np.random.RandomState(0).randn(4, k)
    logp = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    expected = -(1 - eps) * logp[np.arange(4), labels] - eps * logp.mean(1)
    loss = mx.gluon.loss.SoftmaxCrossEntropyLoss(sparse_label=False)(
        mx.nd.array(logits), mx.nd.array(t)).asnumpy()
    np.testing.assert_allclose(loss, expected, rtol=1e-5)


def test_mixup_blends_images_and_targets():
    x = np.random.RandomState(0).rand(4, 3, 2, 2).astype(np.float32)
    t = recipe.smooth_targets(np.array([0, 1, 2, 1]), 3, 0.0)
    xm, tm = recipe.mixup(x, t, 0.7)
    np.testing.assert_allclose(xm[0], 0.7 * x[0] + 0.3 * x[3], rtol=1e-6)
    np.testing.assert_allclose(tm[1], 0.7 * t[1] + 0.3 * t[2], rtol=1e-6)
    np.testing.assert_allclose(tm.sum(1), 1.0, rtol=1e-6)


# -- DropBlock ramp -------------------------------------------------------------------------
def test_dropblock_ramp_matches_gluoncv_scheduler():
    net = gluon_resnest.build("resnest14", classes=4, layers=(1, 1, 1, 1), bottleneck_width=8,
                              stem_width=8, dropblock_prob=0.1)
    blocks = []

    def visit(b):
        if isinstance(b, DropBlock):
            blocks.append(b)
        for c in b._children.values():
            visit(c)
    visit(net)
    assert recipe.set_dropblock(net, 0.0) == len(blocks) == 6   # 3 per block, stages 3 and 4
    epochs = 5
    for epoch in range(epochs):
        DropBlockScheduler(net, 0.0, 0.1, epochs)(epoch)     # GluonCV sets its own ramp
        ref = [b.drop_prob for b in blocks]
        recipe.set_dropblock(net, recipe.dropblock_prob_at(epoch, epochs, 0.1))
        assert [b.drop_prob for b in blocks] == pytest.approx(ref)
    assert blocks[0].drop_prob == pytest.approx(0.1)               # reached at the last epoch


# -- weight decay ---------------------------------------------------------------------------
def test_no_weight_decay_on_bias_and_batchnorm():
    net = gluon_resnest.build("resnest14", classes=4, layers=(1, 1, 1, 1), bottleneck_width=8,
                              stem_width=8)
    net.initialize(mx.init.Xavier())
    recipe.exclude_from_wd(net)
    exempt = set()

    def visit(b):
        if isinstance(b, mx.gluon.nn.BatchNorm):
            exempt.update((b.gamma.name, b.beta.name))
        elif isinstance(b, (mx.gluon.nn.Conv2D, mx.gluon.nn.Dense)) and b.bias is not None:
            exempt.add(b.bias.name)
        for c in b._children.values():
            visit(c)
    visit(net)
    trainable = {n: p for n, p in net.collect_params().items() if p.grad_req != "null"}
    assert exempt and exempt < set(trainable)
    for name, p in trainable.items():
        assert p.wd_mult == (0.0 if name in exempt else 1.0), name
    # one SGD step with zero (but fresh) gradients: only weight decay acts
    before = {n: p.data().asnumpy().copy() for n, p in trainable.items()}
    with mx.autograd.record():
        loss = net(mx.nd.ones((2, 3, 32, 32))).sum() * 0
    loss.backward()
    mx.gluon.Trainer(net.collect_params(), "sgd", {"learning_rate": 1.0, "wd": 0.1}).step(1)
    for name, p in trainable.items():
        factor = 1.0 if name in exempt else 0.9
        np.testing.assert_allclose(p.data().asnumpy(), before[name] * factor, rtol=1e-6,
                                   err_msg=name)


# -- AutoAugment ----------------------------------------------------------------------------
def _img(seed, lo=0, hi=256, shape=(20, 24, 3)):
    return np.random.default_rng(seed).integers(lo, hi, shape).astype(np.uint8)


@pytest.mark.parametrize("seed", [0, 1])
def test_pixel_ops_match_pil(seed):
    img, narrow = _img(seed), _img(seed, 30, 200)
    pil = Image.fromarray
    pairs = [(recipe.posterize(img, 4), ImageOps.posterize(pil(img), 4)),
             (recipe.posterize(img, 7), ImageOps.posterize(pil(img), 7)),
             (recipe.solarize(img, 113.78), ImageOps.solarize(pil(img), 113.78)),
             (recipe.invert(img), ImageOps.invert(pil(img))),
             (recipe.autocontrast(narrow), ImageOps.autocontrast(pil(narrow))),
             (recipe.equalize(narrow), ImageOps.equalize(pil(narrow)))]
    for f in (0.1, 0.5, 1.0, 1.9):
        pairs += [(recipe.color(img, f), ImageEnhance.Color(pil(img)).enhance(f)),
                  (recipe.contrast(img, f), ImageEnhance.Contrast(pil(img)).enhance(f)),
                  (recipe.brightness(img, f), ImageEnhance.Brightness(pil(img)).enhance(f))]
    for i, (ours, ref) in enumerate(pairs):
        np.testing.assert_array_equal(ours, np.asarray(ref), err_msg=f"pair {i}")


def test_geometric_ops():
    sq = _img(3, shape=(16, 16, 3))
    np.testing.assert_array_equal(recipe.rotate(sq, 90), np.rot90(sq))   # counter-clockwise
    t = recipe.translate(sq, 3, "x")
    np.testing.assert_array_equal(t[:, 3:], sq[:, :-3])
    assert (t[:, :3] == 128).all()                                       # grey fill
    t = recipe.translate(sq, -2, "y")
    np.testing.assert_array_equal(t[:-2], sq[2:])
    ys, xs = np.mgrid[0:16, 0:16]
    for a in (0.17, -0.23):   # nearest sampling of x' = x + a * y at pixel centres
        src = np.floor(xs + 0.5 + a * (ys + 0.5)).astype(int)
        ok = (src >= 0) & (src < 16)
        ref = np.full_like(sq, 128)
        ref[ok] = sq[ys[ok], src[ok]]
        np.testing.assert_array_equal(recipe.shear(sq, a, "x"), ref)


def test_imagenet_policy_table_and_magnitudes():
    assert len(recipe.IMAGENET_POLICY) == 25
    for sub in recipe.IMAGENET_POLICY:
        assert len(sub) == 2
        for op, prob, mag in sub:
            assert op in recipe.OPS and 0.0 <= prob <= 1.0 and 0 <= mag <= 9
    # the paper's ranges: magnitude 0..9 spans them linearly, 9 the strongest
    assert recipe.op_value("Rotate", 9) == pytest.approx(30.0)
    assert recipe.op_value("ShearX", 9) == pytest.approx(0.3)
    assert recipe.op_value("TranslateX", 9) == pytest.approx(150 / 331)
    assert recipe.op_value("Color", 0) == pytest.approx(0.1)
    assert recipe.op_value("Contrast", 9) == pytest.approx(1.9)
    assert recipe.op_value("Solarize", 0) == pytest.approx(256.0)
    assert recipe.op_value("Solarize", 9) == pytest.approx(0.0)
    assert (recipe.op_value("Posterize", 0), recipe.op_value("Posterize", 9)) == (8.0, 4.0)
    with pytest.raises(ValueError, match="0..9"):
        recipe.op_value("Rotate", 10)


def test_auto_augment_probabilities_and_determinism():
    img = _img(4)
    always = ((("Invert", 1.0, 0), ("Invert", 0.0, 0)),)
    np.testing.assert_array_equal(recipe.auto_augment(img, np.random.default_rng(0), always),
                                  255 - img)
    half = ((("Invert", 0.5, 0), ("Invert", 0.0, 0)),)
    rng = np.random.default_rng(1)
    hits = sum((recipe.auto_augment(img, rng, half) != img).any() for _ in range(400))
    assert 160 < hits < 240                 # Binomial(400, 0.5): mean 200, sd 10
    a = recipe.auto_augment(img, np.random.default_rng(7))
    b = recipe.auto_augment(img, np.random.default_rng(7))
    np.testing.assert_array_equal(a, b)
    assert a.shape == img.shape and a.dtype == np.uint8
