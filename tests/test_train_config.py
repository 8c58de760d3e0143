"""Configs: the shipped YAML files, overrides, inheritance and clear errors."""
import os

import pytest

import gluon_resnest
from gluon_resnest.model.variants import VARIANTS
from gluon_resnest.train import config as C

CONFIGS = os.path.join(os.path.dirname(__file__), "..", "configs")


def _write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_every_variant_has_an_imagenet_recipe_with_its_resolutions():
    """Each variant's config uses the variant's own test transform (its default_cfg) and the
    paper's recipe; resolutions and batch sizes follow the official training."""
    for name in VARIANTS:
        cfg = C.load_config(f"imagenet/{name}")
        assert cfg["model"]["name"] == name
        test = gluon_resnest.build(name).default_cfg
        d = cfg["data"]
        assert (3, d["test_size"], d["test_size"]) == test["input_size"], name
        assert d["train_size"] == d["test_size"], name
        assert d["crop_pct"] == pytest.approx(test["crop_pct"]), name
        assert d["interpolation"] == test["interpolation"], name
        o = cfg["optim"]
        assert (o["epochs"], o["warmup_epochs"], o["schedule"], o["optimizer"]) == \
            (270, 5, "cosine", "nag"), name
        assert (o["label_smoothing"], o["mixup"], o["lr"], o["lr_batch_size"]) == \
            (0.1, 0.2, 0.1, 256), name
        assert o["no_wd"] and cfg["aug"]["auto_augment"] and cfg["model"]["last_gamma"], name
        assert cfg["model"]["dropblock_prob"] == (0.0 if name == "resnest14" else 0.1), name
        # final dropout only where the paper's models have it
        want_drop = 0.2 if name in ("resnest200", "resnest269") else None
        assert cfg["model"]["final_drop"] == want_drop, name
        batch = {"resnest101": 4096, "resnest101_fast_2s1x64d": 4096, "resnest200": 2048,
                 "resnest269": 2048}.get(name, 8192)
        assert o["batch_size"] == batch, name


def test_shipped_configs_resolve():
    for rel in ("demo", "finetune"):
        cfg = C.load_config(rel)
        assert cfg["run"]["name"] == rel
    demo = C.load_config("demo")
    assert demo["data"]["train"] == "demo" and demo["optim"]["epochs"] >= 1


def test_overrides_and_set():
    cfg = C.load_config("demo", [C.parse_override("optim.lr=0.3"),
                                 C.parse_override("model.kwargs={layers: [1, 1, 1, 1]}"),
                                 ("aug.crop_area", "[0.5, 1.0]"), ("run.devices", "cpu:0,cpu:1"),
                                 C.parse_override("data.limit=64")])
    assert cfg["optim"]["lr"] == 0.3
    assert cfg["model"]["kwargs"] == {"layers": [1, 1, 1, 1]}
    assert cfg["aug"]["crop_area"] == [0.5, 1.0]
    assert cfg["run"]["devices"] == ["cpu:0", "cpu:1"]
    assert cfg["data"]["limit"] == 64
    assert cfg["optim"]["batch_size"] == C.load_config("demo")["optim"]["batch_size"]
    # a float-valued integer is accepted as an integer
    assert C.load_config("demo", [("optim.epochs", 3.0)])["optim"]["epochs"] == 3


def test_unknown_keys_suggest_the_closest(tmp_path):
    with pytest.raises(ValueError, match=r"unknown config key 'lr'.*did you mean optim\.lr"):
        C.load_config("demo", [C.parse_override("lr=0.1")])
    with pytest.raises(ValueError, match=r"'optim\.epoch'.*did you mean optim\.epochs"):
        C.load_config("demo", [("optim.epoch", 3)])
    path = _write(tmp_path, "bad.yaml", "optim:\n  label_smothing: 0.1\n")
    with pytest.raises(ValueError, match=r"label_smothing.*bad\.yaml.*optim\.label_smoothing"):
        C.load_config(path)
    path = _write(tmp_path, "bad2.yaml", "modle:\n  name: resnest50\n")
    with pytest.raises(ValueError, match=r"modle\.name.*did you mean model\.name"):
        C.load_config(path)


def test_type_and_value_errors(tmp_path):
    with pytest.raises(ValueError, match="optim.lr: expected a number, got 'fast'"):
        C.load_config("demo", [("optim.lr", "fast")])
    with pytest.raises(ValueError, match="optim.epochs: expected an integer"):
        C.load_config("demo", [("optim.epochs", 2.5)])
    with pytest.raises(ValueError, match="optim.optimizer: 'adamw' is not one of nag, sgd, adam"):
        C.load_config("demo", [("optim.optimizer", "adamw")])
    with pytest.raises(ValueError, match="aug.flip: expected true or false"):
        C.load_config("demo", [("aug.flip", "maybe")])
    with pytest.raises(ValueError, match="label_smoothing: must be in"):
        C.load_config("demo", [("optim.label_smoothing", 1.5)])
    with pytest.raises(ValueError, match="model.classes: expected a positive integer"):
        C.load_config("demo", [("model.classes", 0)])
    with pytest.raises(ValueError, match="must look like key=value"):
        C.parse_override("optim.lr")
    with pytest.raises(ValueError, match="not valid YAML"):
        C.load_config(_write(tmp_path, "broken.yaml", "model: [unclosed\n"))


def test_base_inheritance_and_cycles(tmp_path):
    _write(tmp_path, "parent.yaml", "optim:\n  lr: 0.5\n  epochs: 7\nmodel:\n  name: resnest26\n")
    child = _write(tmp_path, "child.yaml", "base: parent.yaml\noptim:\n  epochs: 6\n")
    cfg = C.load_config(child)
    assert (cfg["optim"]["lr"], cfg["optim"]["epochs"], cfg["model"]["name"]) == \
        (0.5, 6, "resnest26")
    a = _write(tmp_path, "a.yaml", "base: b.yaml\n")
    _write(tmp_path, "b.yaml", "base: a.yaml\n")
    with pytest.raises(ValueError, match="inherits from itself"):
        C.load_config(a)


def test_missing_config_names_close_matches():
    with pytest.raises(FileNotFoundError, match=r"'imagenet/resnest5' not found.*resnest50"):
        C.load_config("imagenet/resnest5")


def test_dense_task_configs_pass_through_unvalidated(tmp_path):
    path = _write(tmp_path, "det.yaml", "task: detection\nrecipe:\n  anchors: 3\n")
    cfg = C.load_config(path, [("recipe.anchors", "5"), ("extra.key", "x")])
    assert cfg["task"] == "detection" and cfg["recipe"]["anchors"] == 5
    assert cfg["extra"]["key"] == "x"
    assert C.load_config(None, task="segmentation") == {"task": "segmentation"}
    with pytest.raises(ValueError, match="task: 'tracking' is not one of"):
        C.load_config(None, task="tracking")


def test_format_config_round_trips():
    import yaml
    cfg = C.load_config("demo")
    assert C.resolve(yaml.safe_load(C.format_config(cfg))) == cfg


def test_a_built_package_carries_the_configs(tmp_path):
    """`setup.py build_py` (what a wheel is made from) copies configs/ into the package, and
    config names resolve from that copy outside the checkout."""
    import subprocess
    import sys
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    lib = tmp_path / "lib"
    subprocess.run([sys.executable, "setup.py", "-q", "build_py", "--build-lib", str(lib)],
                   cwd=root, check=True, capture_output=True)
    shipped = sorted(os.path.relpath(os.path.join(d, f), lib / "gluon_resnest" / "configs")
                     for d, _, fs in os.walk(lib / "gluon_resnest" / "configs") for f in fs)
    in_repo = sorted(os.path.relpath(os.path.join(d, f), os.path.join(root, "configs"))
                     for d, _, fs in os.walk(os.path.join(root, "configs")) for f in fs
                     if f.endswith(".yaml"))
    assert shipped == in_repo and "demo.yaml" in shipped
    code = ("from gluon_resnest.train.config import find_config; "
            "print(find_config('demo')); print(find_config('imagenet/resnest50'))")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, check=True, text=True,
                         capture_output=True, env={**os.environ, "PYTHONPATH": str(lib)}).stdout
    assert out.split() == [str(lib / "gluon_resnest" / "configs" / "demo.yaml"),
                           str(lib / "gluon_resnest" / "configs" / "imagenet" / "resnest50.yaml")]
