"""Configs and the entry point of detection/segmentation training (the runs are in
test_dense_detection.py and test_dense_segmentation.py)."""
import glob
import os

import pytest
import yaml

from gluon_resnest.dense import train
from gluon_resnest.dense.registry import DENSE_MODELS, parse_dense_name

CONFIGS = os.path.join(os.path.dirname(__file__), "..", "configs")
FILES = sorted(glob.glob(os.path.join(CONFIGS, "detection", "*.yaml"))
               + glob.glob(os.path.join(CONFIGS, "segmentation", "*.yaml")))


def _load(path):
    with open(path) as f:
        return yaml.safe_load(f)


def test_there_are_recipes_for_every_data_set():
    names = {os.path.basename(p) for p in FILES}
    for expected in ("shapes_faster_rcnn.yaml", "shapes_mask_rcnn.yaml", "shapes_deeplab.yaml",
                     "coco_faster_rcnn_fpn_syncbn_resnest50.yaml",
                     "coco_mask_rcnn_fpn_syncbn_resnest50.yaml",
                     "voc_faster_rcnn_fpn_resnest50.yaml", "ade20k_deeplab_resnest269.yaml",
                     "citys_deeplab_resnest101.yaml"):
        assert expected in names


@pytest.mark.parametrize("path", FILES, ids=os.path.basename)
def test_every_config_resolves_to_a_registered_recipe(path):
    cfg = train.resolve_config(_load(path))
    task, model, data = cfg["task"], cfg["model"], cfg["data"]
    assert os.path.basename(os.path.dirname(path)) == task
    if data["dataset"] == "shapes":
        assert data["root"] is None and cfg["train"]["iterations"] <= 120
        return
    # real data sets: the recipe's model is one of the registered GluonCV names
    if task == "detection":
        sync = "_syncbn" if model["norm"] == "syncbn" else ""
        name = f"{model['arch'].replace('_fpn', '')}_fpn{sync}_{model['backbone']}_{data['dataset']}"
    else:
        suffix = {"ade20k": "ade", "citys": "citys"}[data["dataset"]]
        name = f"deeplab_{model['backbone']}_{suffix}"
        assert data["crop_size"] % 8 == 0 and model["norm"] == "syncbn"
    assert name in DENSE_MODELS, name
    parse_dense_name(name)


def test_real_data_sets_need_a_root_and_never_download(tmp_path):
    cfg = _load(os.path.join(CONFIGS, "detection", "voc_faster_rcnn_fpn_resnest50.yaml"))
    with pytest.raises(FileNotFoundError, match="needs data.root"):
        train.run(cfg, str(tmp_path))
    cfg = _load(os.path.join(CONFIGS, "segmentation", "ade20k_deeplab_resnest50.yaml"))
    cfg["data"]["root"] = str(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="nothing is downloaded"):
        train.run(cfg, str(tmp_path))


@pytest.mark.parametrize("cfg, err, match", [
    ({"task": "keypoints"}, ValueError, "task must be one of"),
    ({"task": "detection", "trian": {}}, ValueError, "did you mean 'train'"),
    ({"task": "detection", "train": {"lr_rate": 1}}, ValueError, "'train.lr_rate'"),
    ({"task": "detection", "model": {"arch": "deeplab"}}, ValueError, "model.arch"),
    ({"task": "segmentation", "data": {"dataset": "coco"}}, ValueError, "data.dataset"),
    ({"task": "segmentation", "train": {"epochs": 2}}, ValueError, "exactly one"),
    ({"task": "detection", "train": {"batch_size": 0}}, ValueError, "batch_size"),
    ({"task": "detection", "data": 3}, TypeError, "mapping"),
])
def test_bad_configs(cfg, err, match):
    with pytest.raises(err, match=match):
        train.resolve_config(cfg)


def test_command_line_rejects_contradicting_task(tmp_path):
    path = os.path.join(CONFIGS, "segmentation", "shapes_deeplab.yaml")
    with pytest.raises(SystemExit, match="contradicts"):
        train.main(["--task", "detection", "--config", path, "--out", str(tmp_path)])
