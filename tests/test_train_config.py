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


def test_every_shipped_config_resolves():
    """One loader for every task: each file in configs/ validates (keys, types, counts)."""
    names = sorted(os.path.relpath(os.path.join(d, f), CONFIGS)[:-5]
                   for d, _, fs in os.walk(CONFIGS) for f in fs
                   if f.endswith(".yaml") and not f.startswith("_"))
    assert len(names) >= 30
    tasks = {}
    for name in names:
        cfg = C.load_config(name)
        assert cfg == C.resolve(cfg), name                  # resolving is idempotent
        tasks.setdefault(cfg["task"], []).append(name)
    assert {t: len(v) > 0 for t, v in tasks.items()} == \
        {"classification": True, "detection": True, "segmentation": True}


def test_numbers_in_any_yaml_spelling(tmp_path):
    """YAML 1.1 reads 1e-3 (no dot) and 1.0e3 (unsigned exponent) as strings; every number
    spelling is a number here, in files, overrides, --set values and Python dicts."""
    cfg = C.load_config("demo", [C.parse_override("optim.lr=1e-3"), ("optim.wd", "5E-5"),
                                 C.parse_override("optim.warmup_lr=1.0e-4"),
                                 C.parse_override("optim.final_lr=.5e-6")])
    assert (cfg["optim"]["lr"], cfg["optim"]["wd"]) == (0.001, 5e-05)
    assert (cfg["optim"]["warmup_lr"], cfg["optim"]["final_lr"]) == (1e-4, 5e-7)
    assert C.load_config("demo", [C.parse_override("optim.epochs=1e1")])["optim"]["epochs"] == 10
    path = _write(tmp_path, "sci.yaml", "base: " + os.path.join(CONFIGS, "demo.yaml") +
                  "\noptim: {lr: 2e-2, wd: 1e-5}\naug: {crop_area: [5e-1, 1]}\n")
    cfg = C.load_config(path)
    assert (cfg["optim"]["lr"], cfg["optim"]["wd"], cfg["aug"]["crop_area"]) == \
        (0.02, 1e-05, [0.5, 1])
    # detection: train.lr=1e-3 used to reach the schedule as the string '1e-3'
    det = C.load_config("detection/shapes_faster_rcnn", [C.parse_override("train.lr=1e-3")])
    assert det["train"]["lr"] == 0.001
    assert C.resolve({"task": "segmentation", "train": {"lr": "2e-3"}})["train"]["lr"] == 0.002
    # strings that only look like numbers stay errors
    for bad in ("1e", "fast", "1e-3x"):
        with pytest.raises(ValueError, match=f"optim.lr: expected a number, got '{bad}'"):
            C.load_config("demo", [("optim.lr", bad)])
    with pytest.raises(ValueError, match="train.lr: expected a finite number, got inf"):
        C.load_config("detection/shapes_faster_rcnn", [C.parse_override("train.lr=.inf")])


def test_paths_expand_the_home_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    home = str(tmp_path)
    cfg = C.load_config("finetune", [
        C.parse_override("model.pretrained=~/.mxnet/models/resnest50-bcfefe1d.params"),
        ("data.train", "~/images"), ("data.val", "~/val.rec"), ("run.out", "~/runs/a")])
    assert cfg["model"]["pretrained"] == os.path.join(home, ".mxnet/models/resnest50-bcfefe1d.params")
    assert (cfg["data"]["train"], cfg["data"]["val"], cfg["run"]["out"]) == \
        (os.path.join(home, "images"), os.path.join(home, "val.rec"), os.path.join(home, "runs/a"))
    assert C.load_config("finetune", [("model.pretrained", True)])["model"]["pretrained"] is True
    det = C.load_config("detection/voc_faster_rcnn_fpn_resnest50",
                        [("data.root", "~/VOCdevkit"), ("model.pretrained_base", "~/r50.params")])
    assert det["data"]["root"] == os.path.join(home, "VOCdevkit")
    assert det["model"]["pretrained_base"] == os.path.join(home, "r50.params")
    # config files themselves may be named with ~
    (tmp_path / "mine.yaml").write_text("base: " + os.path.join(CONFIGS, "demo.yaml") + "\n")
    assert C.load_config("~/mine.yaml")["model"]["name"] == "resnest14"


def test_dense_keys_are_checked_with_suggestions(tmp_path):
    path = _write(tmp_path, "det.yaml", "task: detection\ntrain:\n  lr_rate: 0.1\n")
    with pytest.raises(ValueError, match=r"'train\.lr_rate' in .*det\.yaml; did you mean "
                                         r"train\.lr_mode, train\.lr\b"):
        C.load_config(path)
    with pytest.raises(ValueError, match=r"'trian\.lr' in the command line; did you mean "
                                         r"train\.lr\b.*task detection"):
        C.load_config(None, [("trian.lr", 1)], task="detection")
    with pytest.raises(ValueError, match=r"unknown config key 'optim\.lr'.*did you mean train\.lr"):
        C.load_config("segmentation/shapes_deeplab", [C.parse_override("optim.lr=0.1")])
    with pytest.raises(ValueError, match=r"model\.arch: 'deeplab' is not one of faster_rcnn_fpn"):
        C.load_config(None, [("model.arch", "deeplab")], task="detection")
    with pytest.raises(ValueError, match=r"model\.backbone: unknown ResNeSt variant "
                                         r"'resnest51'.*'resnest50'"):
        C.load_config(None, [("model.backbone", "resnest51")], task="segmentation")
    with pytest.raises(ValueError, match=r"model\.norm: 'frozen' is not one of gn, bn, syncbn"):
        C.load_config(None, [("model.norm", "frozen")], task="segmentation")
    with pytest.raises(ValueError, match="config key data is a section; set its keys"):
        C.load_config(None, [("data", 3)], task="detection")
    with pytest.raises(TypeError, match="config key data in config: expected a mapping"):
        C.resolve({"task": "detection", "data": 3})
    with pytest.raises(ValueError, match="config key task in config: 'tracking' is not one of"):
        C.load_config(None, task="tracking")
    with pytest.raises(ValueError, match="task 'detection' contradicts task: segmentation"):
        C.load_config("segmentation/shapes_deeplab", task="detection")
    # the task's defaults, complete
    seg = C.load_config(None, task="segmentation")
    assert seg == C.resolve({"task": "segmentation"})
    assert seg["train"]["iterations"] == 40 and seg["model"]["arch"] == "deeplab"


@pytest.mark.parametrize("override, message", [
    ("train.iterations=0", "train.iterations: expected a positive integer, got 0"),
    ("train.iterations=-5", "train.iterations: expected a positive integer, got -5"),
    ("train.iterations=2.5", "train.iterations: expected an integer, got 2.5"),
    ("train.iterations=null", "set exactly one of train.iterations and train.epochs"),
    ("train.epochs=0", "train.epochs: expected a positive integer, got 0"),
    ("train.batch_size=0", "train.batch_size: expected a positive integer, got 0"),
    ("train.warmup_iters=-1", "train.warmup_iters: must be >= 0, got -1"),
    ("train.checkpoint_interval=0", "train.checkpoint_interval: expected a positive integer"),
    ("data.num_train=0", "data.num_train: expected a positive integer, got 0"),
    ("train.lr=0", "train.lr: must be > 0, got 0"),
])
def test_dense_counts_are_validated(override, message):
    with pytest.raises(ValueError, match=message.replace(".", r"\.")):
        C.load_config(None, [C.parse_override(override)], task="detection")


def test_one_of_iterations_and_epochs():
    """Naming one of the two nulls the other (a recipe of epochs overridden by iterations and
    the reverse); a file naming both is an error."""
    det = C.load_config(None, [("train.epochs", 2)], task="detection")
    assert (det["train"]["iterations"], det["train"]["epochs"]) == (None, 2)
    coco = C.load_config("detection/coco_faster_rcnn_fpn_syncbn_resnest50",
                         [C.parse_override("train.iterations=100")])
    assert (coco["train"]["iterations"], coco["train"]["epochs"]) == (100, None)
    with pytest.raises(ValueError, match="set exactly one of train.iterations and train.epochs"):
        C.resolve({"task": "detection", "train": {"iterations": 5, "epochs": 2}})


@pytest.mark.parametrize("override, message", [
    ("optim.epochs=0", "optim.epochs: expected a positive integer, got 0"),
    ("optim.epochs=-1", "optim.epochs: expected a positive integer, got -1"),
    ("optim.batch_size=0", "optim.batch_size: expected a positive integer, got 0"),
    ("run.stop_after=0", "run.stop_after: expected a positive integer, got 0"),
    ("optim.warmup_epochs=20", r"optim.warmup_epochs: must be in \[0, epochs=10\], got 20"),
    ("data.limit=0", "data.limit: expected a positive integer, got 0"),
])
def test_classification_counts_are_validated(override, message):
    with pytest.raises(ValueError, match=message.replace(".", r"\.")):
        C.load_config("demo", [C.parse_override(override)])


def test_data_transform_defaults_come_from_the_variant():
    """Unset sizes, crop, interpolation and mean/std are the variant's (model/variants.py),
    so `-c finetune model.name=resnest101` trains and tests at 256 px."""
    for name in ("resnest50", "resnest101", "resnest200"):
        spec = VARIANTS[name]
        d = C.load_config("finetune", [("model.name", name)])["data"]
        assert (d["train_size"], d["test_size"], d["crop_pct"], d["interpolation"]) == \
            (spec.input_size, spec.input_size, spec.crop_pct, spec.interpolation), name
        assert (tuple(d["mean"]), tuple(d["std"])) == (spec.mean, spec.std)
    d = C.load_config("finetune", [("model.name", "resnest101"), ("data.test_size", 288)])["data"]
    assert (d["train_size"], d["test_size"]) == (256, 288)
    demo = C.load_config("demo")["data"]
    assert (demo["test_size"], demo["mean"]) == (32, [0.5, 0.5, 0.5])     # the file's own


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
