"""Detection/segmentation names in GluonCV's zoo, the backbone hook, DropBlock switch-off."""
import warnings
from functools import partial

# isort: off
import gluon_resnest  # noqa: F401  (first: lets gluoncv import next to torch >= 2)
# isort: on
import gluoncv
import mxnet as mx
import pytest
from gluoncv.model_zoo import get_model, get_model_list, model_zoo, segbase
from gluoncv.nn.dropblock import set_drop_prob

from gluon_resnest._compat import gluoncv_dense as compat_dense
from gluon_resnest.dense import dilated_backbone
from gluon_resnest.dense.registry import CUSTOM_MODELS, DENSE_MODELS, get_dense_model, parse_dense_name
from gluon_resnest.integrations import gluoncv_dense
from gluon_resnest.model.blocks import DropBlock
from gluon_resnest.model.resnest import ResNeSt

EXPECTED = (
    [f"faster_rcnn_fpn_syncbn_resnest{d}_coco" for d in (50, 101, 200, 269)]
    + [f"faster_rcnn_fpn_resnest{d}_{s}" for d in (50, 101) for s in ("coco", "voc")]
    + [f"mask_rcnn_fpn_syncbn_resnest{d}_coco" for d in (50, 101)]
    + [f"mask_rcnn_fpn_resnest{d}_coco" for d in (50, 101)]
    + [f"deeplab_resnest{d}_ade" for d in (50, 101, 200, 269)]
    + [f"deeplab_resnest{d}_citys" for d in (50, 101)])


def test_every_name_is_registered_and_listed():
    assert sorted(DENSE_MODELS) == sorted(EXPECTED)
    listed = set(get_model_list())
    for name in EXPECTED + list(CUSTOM_MODELS):
        assert name in listed
        assert getattr(model_zoo._models[name], "_gluon_resnest", False), name


def test_gluoncv_script_names_resolve():
    # train_faster_rcnn.py: '_'.join(('faster_rcnn', 'fpn', 'syncbn', network, dataset))
    for network in ("resnest50", "resnest101", "resnest269"):
        name = "_".join(("faster_rcnn", "fpn", "syncbn", network, "coco"))
        assert model_zoo._models[name] is DENSE_MODELS[name]


def test_registering_twice_is_harmless():
    before = dict(model_zoo._models)
    lookup = segbase.get_backbone
    gluoncv_dense.register_dense(model_zoo._models)
    assert model_zoo._models == before and segbase.get_backbone is lookup
    assert model_zoo._models["custom_faster_rcnn_fpn"]._gluoncv_original.__module__.startswith(
        "gluoncv.")


def test_segmentation_backbone_hook():
    net = segbase.get_backbone("resnest50", pretrained=False, dilated=True, ctx=mx.cpu(),
                               root="~/.mxnet/models", norm_layer=mx.gluon.nn.BatchNorm,
                               norm_kwargs=None)
    assert isinstance(net, ResNeSt) and net.output_stride == 8
    assert all(hasattr(net, a) for a in ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2",
                                         "layer3", "layer4"))
    other = segbase.get_backbone("resnet18", pretrained=False, dilated=True)
    assert type(other).__module__.startswith("gluoncv.")
    with pytest.raises(ValueError, match="resnest50"):
        segbase.get_backbone("resnest51", pretrained=False)


def test_set_drop_prob_reaches_our_dropblock():
    net = dilated_backbone("resnest50", dropblock_prob=0.1)
    blocks = [b for b in _walk(net) if isinstance(b, DropBlock)]
    assert blocks and all(b.drop_prob == 0.1 for b in blocks)
    assert isinstance(blocks[0], gluoncv.nn.dropblock.DropBlock)
    net.apply(partial(set_drop_prob, 0.0))
    assert all(b.drop_prob == 0.0 for b in blocks)


def test_custom_constructor_dispatch():
    custom = model_zoo._models["custom_faster_rcnn_fpn"]
    ours = custom(classes=["a", "b"], base_network_name="resnest50", pretrained_base=False)
    assert ours.classes == ["a", "b"] and isinstance(ours.backbone, ResNeSt)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = custom(classes=["a"], base_network_name="resnet18_v1b", pretrained_base=False)
    assert not hasattr(theirs, "backbone") and theirs.classes == ["a"]


def test_pretrained_base_never_downloads(tmp_path, monkeypatch):
    monkeypatch.delenv("MXNET_HOME", raising=False)
    with pytest.raises(FileNotFoundError, match="resnest50"):
        get_model("faster_rcnn_fpn_resnest50_voc", root=str(tmp_path))
    with pytest.raises(FileNotFoundError, match="faster_rcnn_fpn_syncbn_resnest50_coco"):
        get_model("faster_rcnn_fpn_syncbn_resnest50_coco", pretrained=True, root=str(tmp_path))
    with pytest.raises(FileNotFoundError, match="deeplab_resnest50_ade"):
        get_model("deeplab_resnest50_ade", pretrained=True, root=str(tmp_path))
    with pytest.raises(FileNotFoundError, match="resnest101"):
        segbase.get_segmentation_model(model="psp", dataset="ade20k", backbone="resnest101",
                                       root=str(tmp_path))


@pytest.mark.parametrize("name, match", [
    ("faster_rcnn_fpn_resnest50_kitti", "unknown dataset suffix 'kitti'"),
    ("mask_rcnn_fpn_syncbn_resnest101_openimages", "unknown dataset suffix 'openimages'"),
    ("deeplab_resnest50_mapillary", "unknown dataset suffix 'mapillary'"),
    ("faster_rcnn_fpn_resnest51_coco", "resnest50"),
    ("yolo3_resnest50_coco", "not a detection/segmentation model name"),
])
def test_bad_names(name, match):
    with pytest.raises(ValueError, match=match):
        parse_dense_name(name)


def test_get_dense_model_builds_unregistered_combinations():
    net = get_dense_model("faster_rcnn_fpn_syncbn_resnest50_fast_voc", pretrained_base=False)
    assert net.base_network_name == "resnest50_fast_2s1x64d" and len(net.classes) == 20
    with pytest.raises(TypeError, match="fixes"):
        DENSE_MODELS["faster_rcnn_fpn_resnest50_coco"](dataset="voc")


def test_internals_check_fails_loudly(monkeypatch):
    monkeypatch.delattr(segbase, "get_backbone")
    with pytest.raises(RuntimeError, match=f"GluonCV {gluoncv.__version__}"):
        compat_dense._check_gluoncv()
    with pytest.raises(RuntimeError, match="expected a dict"):
        gluoncv_dense.register_dense(list(DENSE_MODELS))


def _walk(block):
    yield block
    for child in block._children.values():
        yield from _walk(child)
