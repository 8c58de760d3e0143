"""Weight compatibility with GluonCV's own ResNeSt (its parameter files load; same outputs)."""
import mxnet as mx
import numpy as np
import pytest
from conftest import randomize
from gluoncv.model_zoo import resnest as gcv_resnest

import gluon_resnest

CASES = [("resnest14", 64), ("resnest26", 64), ("resnest50", 96), ("resnest101", 64)]


@pytest.mark.parametrize("name, size", CASES)
def test_gluoncv_file_loads_and_outputs_match(tmp_path, name, size):
    ref = getattr(gcv_resnest, name)()
    ref.initialize()
    x = mx.nd.random.uniform(-1, 1, shape=(2, 3, size, size))
    ref(x)  # finish deferred init
    randomize(ref, seed=1)
    path = str(tmp_path / f"{name}.params")
    ref.save_parameters(path)  # structural keys, as GluonCV publishes them

    ours = gluon_resnest.get_model(name, pretrained=path)
    with mx.autograd.predict_mode():
        y_ref = ref(x).asnumpy()
    y = ours(x).asnumpy()
    assert np.abs(y_ref).max() > 0.1  # far from the ~0.05 logits of a default init
    np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5 * np.abs(y_ref).max())

    ours.hybridize(static_alloc=True, static_shape=True)
    np.testing.assert_allclose(ours(x).asnumpy(), y_ref, rtol=1e-5, atol=1e-5 * np.abs(y_ref).max())


def test_same_keys_and_shapes_as_gluoncv_for_every_gluoncv_variant():
    for name in ("resnest14", "resnest26", "resnest50", "resnest101", "resnest200", "resnest269"):
        ref = dict((k, v.shape) for k, v in
                   getattr(gcv_resnest, name)()._collect_params_with_prefix().items())
        ours = dict((k, v.shape) for k, v in
                    gluon_resnest.build(name)._collect_params_with_prefix().items())
        assert ours == ref, name


def test_dilated_matches_gluoncv(tmp_path):
    ref = gcv_resnest.resnest50(dilated=True)
    ref.initialize()
    x = mx.nd.random.uniform(-1, 1, shape=(1, 3, 64, 64))
    ref(x)
    randomize(ref, seed=2)
    path = str(tmp_path / "d.params")
    ref.save_parameters(path)
    ours = gluon_resnest.get_model("resnest50", dilated=True, pretrained=path)
    with mx.autograd.predict_mode():
        y_ref = ref(x).asnumpy()
    np.testing.assert_allclose(ours(x).asnumpy(), y_ref, rtol=1e-5, atol=1e-5 * np.abs(y_ref).max())
    c5 = gluon_resnest.StageFeatures(ours)(x)[-1]
    assert c5.shape == (1, 2048, 8, 8)  # output stride 8


def test_training_gradients_match_gluoncv(tmp_path):
    """One training step (batch statistics) in float64: same gradients as GluonCV.

    float64 separates implementation differences from float32 rounding, which training-mode
    BatchNorm over a few samples amplifies to ~1e-2 in some gradients. ``fc1.bias`` feeds a
    training-mode BatchNorm, so its exact gradient is 0 and both sides hold only rounding noise.
    """
    ref = gcv_resnest.resnest14()  # GluonCV builds resnest14 without DropBlock
    ref.initialize()
    x = mx.nd.random.uniform(-1, 1, shape=(4, 3, 64, 64))
    label = mx.nd.array([0, 3, 5, 7])
    ref(x)
    randomize(ref, seed=4)
    path = str(tmp_path / "r14.params")
    ref.save_parameters(path)
    ours = gluon_resnest.get_model("resnest14", pretrained=path)
    loss_fn = mx.gluon.loss.SoftmaxCrossEntropyLoss()
    grads = []
    for net, hybrid in ((ref, False), (ours, True)):
        net.cast("float64")
        net.hybridize(active=hybrid)
        with mx.autograd.record():
            loss = loss_fn(net(x.astype("float64")), label.astype("float64"))
        loss.backward()
        grads.append({k: p.grad().asnumpy() for k, p in net._collect_params_with_prefix().items()
                      if p.grad_req != "null"})
    assert grads[0].keys() == grads[1].keys()
    for key, g_ref in grads[0].items():
        if key.endswith("fc1.bias"):
            assert np.abs(grads[1][key]).max() < 1e-6 and np.abs(g_ref).max() < 1e-6
            continue
        scale = np.abs(g_ref).max()
        assert scale > 0, key
        np.testing.assert_allclose(grads[1][key], g_ref, rtol=0, atol=1e-9 * scale, err_msg=key)


def test_private_member_checks_fail_loudly_on_other_versions(monkeypatch):
    """_compat names MXNet's and GluonCV's private members once and refuses versions it was
    not checked against, naming the installed one."""
    import types

    from gluon_resnest import _compat
    from gluon_resnest._compat import mxnet_blocks

    monkeypatch.setattr(mx, "__version__", "2.0.0")
    with pytest.raises(RuntimeError, match=r"needs MXNet 1\.9\.x .*MXNet 2\.0\.0"):
        mxnet_blocks._check_mxnet()
    monkeypatch.undo()
    mxnet_blocks._check_mxnet()                             # the installed 1.9.1 passes
    monkeypatch.delattr(mx.gluon.Parameter, "_load_init")
    with pytest.raises(RuntimeError, match="lacks Parameter._load_init"):
        mxnet_blocks._check_mxnet()
    with pytest.raises(RuntimeError, match="installed: gluoncv 0.12.0"):
        _compat.check_gluoncv_version(types.SimpleNamespace(__version__="0.12.0"), "x")
