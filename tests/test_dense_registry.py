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
    + [f"mask_rcnn_fpn_bn_resnest{d}_coco" for d in (50, 101)]
    + [f"{k}_rcnn_fpn{n}_resnest{d}_coco" for k in ("cascade", "cascade_mask")
       for n in ("_syncbn", "") for d in (50, 101, 200)]
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
    # train_mask_rcnn.py --use-fpn [--norm-layer bn]: '_'.join(('mask_rcnn', 'fpn'[, 'bn'], ...))
    for network in ("resnest50", "resnest101"):
        for module_list, norm in ((("fpn", "bn"), "syncbn"), (("fpn",), "frozen")):
            name = "_".join(("mask_rcnn", *module_list, network, "coco"))
            assert model_zoo._models[name] is DENSE_MODELS[name]
            assert parse_dense_name(name)["norm"] == norm, name


def test_mask_rcnn_script_routes_build_ours():
    """The three routes of GluonCV's train_mask_rcnn.py, with its arguments, for --network
    resnest50 on one device: --norm-layer bn (SyncBatchNorm), no norm layer (frozen), and
    custom-model (--norm-layer bn: SyncBatchNorm, sym_norm_kwargs={'ndev': 1})."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bn = get_model("mask_rcnn_fpn_bn_resnest50_coco", pretrained_base=False,
                       per_device_batch_size=1, num_devices=1)
        frozen = get_model("mask_rcnn_fpn_resnest50_coco", pretrained_base=False,
                           per_device_batch_size=1)
    assert isinstance(bn.backbone, ResNeSt) and bn.norm == "syncbn"
    assert isinstance(bn.backbone.bn1, mx.gluon.contrib.nn.SyncBatchNorm)
    assert frozen.norm == "frozen" and "use_global_stats=True" in repr(frozen.backbone.bn1)
    assert _fpn_norms(bn) and not _fpn_norms(frozen)

    from gluoncv.data import COCODetection
    custom = dict(num_fpn_filters=256, num_box_head_conv=4, num_box_head_conv_filters=256,
                  num_box_head_dense_filters=1024, short=800, max_size=1333, min_stage=2,
                  max_stage=6, nms_thresh=0.5, nms_topk=-1, post_nms=-1, roi_mode="align",
                  roi_size=[14, 14], strides=[4, 8, 16, 32, 64], clip=4.14, rpn_channel=256,
                  base_size=16, scales=[2, 4, 8, 16, 32], ratios=[0.5, 1, 2],
                  alloc_size=[384, 384], rpn_nms_thresh=0.7, rpn_train_pre_nms=12000,
                  rpn_train_post_nms=2000, rpn_test_pre_nms=6000, rpn_test_post_nms=1000,
                  rpn_min_size=1, per_device_batch_size=1, num_sample=512, pos_iou_thresh=0.5,
                  pos_ratio=0.25, max_num_gt=100, target_roi_scale=2, num_fcn_convs=4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = get_model("custom_mask_rcnn_fpn", classes=COCODetection.CLASSES, transfer=None,
                        dataset="coco", pretrained_base=False, base_network_name="resnest50",
                        norm_layer=mx.gluon.contrib.nn.SyncBatchNorm,
                        norm_kwargs={"num_devices": 1},
                        sym_norm_kwargs={"ndev": 1, "eps": 1e-3}, **custom)
    assert isinstance(net.backbone, ResNeSt) and net.norm == "syncbn"
    assert net.model_name == "mask_rcnn_fpn_syncbn_resnest50_coco" and len(net.classes) == 80
    norms = _fpn_norms(net)
    assert norms and all(n["attrs"]["ndev"] == "1" for n in norms)
    assert all(float(n["attrs"]["eps"]) == 1e-3 for n in norms)    # sym_norm_kwargs is used


@pytest.mark.parametrize("kwargs, match", [
    (dict(sym_norm_kwargs={"ndev": 1}), "the FPN has no norm layer"),
    (dict(norm_layer=mx.gluon.contrib.nn.SyncBatchNorm, sym_norm_kwargs={"groups": 8}),
     r"unknown key\(s\) \['groups'\]"),
    (dict(norm_layer=mx.gluon.contrib.nn.SyncBatchNorm, norm_kwargs={"num_devices": 2},
          sym_norm_kwargs={"ndev": 4}), "contradicts num_devices=2"),
    (dict(norm_kwargs={"groups": 8}), r"norm_kwargs: unsupported key\(s\) \['groups'\]"),
    (dict(norm_layer=mx.gluon.nn.GroupNorm), "norm_layer must be"),
])
def test_custom_norm_arguments_are_used_or_rejected(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CUSTOM_MODELS["custom_mask_rcnn_fpn"](classes=["a"], base_network_name="resnest50",
                                              pretrained_base=False, **kwargs)


def _fpn_norms(net):
    """The FPN's symbolic norm nodes (SyncBatchNorm or BatchNorm) with their attributes."""
    import json
    nodes = json.loads(net.features(mx.sym.var("data"))[0].tojson())["nodes"]
    # GluonCV names the FPN's SyncBatchNorm P{i}_*_bn, this package its BatchNorm fpn_bn{i}
    return [n for n in nodes if n["op"] in ("_contrib_SyncBatchNorm", "BatchNorm")
            and n["name"].startswith(("P", "fpn_bn"))]


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


LAZY = """
import sys
import gluon_resnest
from gluoncv.model_zoo import model_zoo, segbase
from gluon_resnest.dense.registry import CUSTOM_MODELS, DENSE_MODELS
dense = ("gluon_resnest.dense.detection", "gluon_resnest.dense.cascade",
         "gluon_resnest.dense.segmentation")
print(all(model_zoo._models[n] is DENSE_MODELS[n] for n in DENSE_MODELS),
      all(getattr(model_zoo._models[n], "_gluon_resnest", False) for n in CUSTOM_MODELS),
      [m for m in dense if m in sys.modules])
net = segbase.get_backbone("resnest14", pretrained=False, dilated=True)
print(type(net).__name__, net.output_stride, [m for m in dense if m in sys.modules])
"""


def test_import_registers_every_name_without_loading_dense_code():
    """``import gluon_resnest`` registers every dense name; the detection/segmentation modules
    load when a dense model (here GluonCV's backbone lookup) is first built."""
    import os
    import subprocess
    import sys
    run = subprocess.run([sys.executable, "-c", LAZY], capture_output=True, text=True,
                         timeout=120, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines() == [
        "True True []", "ResNeSt 8 ['gluon_resnest.dense.segmentation']"]
