"""End to end through ``gluon-resnest``: the demo, eval, predict, and bad input at the CLI."""
import csv
import os
import re
import shutil
import signal

import numpy as np
import pytest
import yaml
from conftest import signal_when

from gluon_resnest import cli
from gluon_resnest.train import checkpoint as ck
from gluon_resnest.train import data as D

DEMO_EPOCHS = 3
TINY = ["model.kwargs={bottleneck_width: 8, stem_width: 8}", "data.limit=96",
        "optim.batch_size=32", "optim.epochs=1", "run.progress=false", "run.export=false"]


def gr(capsys, *argv):
    """Run ``gluon-resnest ARGV``; returns (exit code, stdout, stderr)."""
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """configs/demo.yaml for 3 of its 10 epochs (the full demo runs for minutes; the README
    reports it). Runs through the CLI's main() in-process."""
    out = str(tmp_path_factory.mktemp("demo") / "run")
    import io
    from contextlib import redirect_stderr, redirect_stdout
    buf, err = io.StringIO(), io.StringIO()
    with redirect_stdout(buf), redirect_stderr(err):
        code = cli.main(["train", "--out", out, f"optim.epochs={DEMO_EPOCHS}"])
    return code, out, buf.getvalue(), err.getvalue()


@pytest.mark.slow
def test_demo_trains_and_writes_every_output(demo):
    code, out, text, err = demo
    assert code == 0, err
    assert text.startswith("resolved config:") and re.search(r"name[:=] ?resnest14", text)
    acc = float(re.search(r"final validation accuracy: ([\d.]+)% top-1", text).group(1))
    # 3 epochs of the 10-epoch demo: the full demo reaches ~99 % (README); 3 reach > 85 %.
    assert acc >= 85.0, text
    with open(os.path.join(out, "metrics.csv")) as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == list(range(1, DEMO_EPOCHS + 1))
    assert float(rows[-1]["val_top1"]) * 100 == pytest.approx(acc, abs=0.01)
    with open(os.path.join(out, "curves.png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    for name in ("best.ckpt", "last.ckpt", "config.yaml", "export/model-symbol.json",
                 "export/model-0000.params", "export/model-meta.json"):
        assert os.path.isfile(os.path.join(out, name)), name
    assert re.search(r"export check: .* 360 validation images \(identical predictions", text)
    with open(os.path.join(out, "config.yaml")) as f:
        assert yaml.safe_load(f)["run"]["out"] == out                # the real run folder
    # stderr is no terminal here: no progress bar frames, just the epoch lines on stdout
    assert "\r" not in err and "epoch 1/3" not in err and "epoch 1/3:" in text
    with open(os.path.join(out, "train.log"), encoding="utf-8") as f:
        logged = f.read().splitlines()
    assert [line for line in logged if line.startswith("epoch ")] == \
        [line for line in text.splitlines() if line.startswith("epoch ")]
    assert logged[-1].startswith(f"finished after epoch {DEMO_EPOCHS} of {DEMO_EPOCHS} in ")


def test_eval_exported_and_checkpoint_agree_with_training(demo, tmp_path, capsys):
    _, out, _, _ = demo
    best = ck.read_meta(os.path.join(out, "best.ckpt"))
    want = 100 * best["history"][-1]["val_top1"]
    code, text, err = gr(capsys, "eval", os.path.join(out, "export", "model"), "--data", "demo")
    assert code == 0, err
    top1 = float(re.search(r"top-1 ([\d.]+)%", text).group(1))
    assert top1 == pytest.approx(want, abs=0.01)
    assert "resize to 32 (crop_pct 1.000), centre crop 32" in text
    code, text, _ = gr(capsys, "eval", os.path.join(out, "best.ckpt"), "--data", "demo")
    assert float(re.search(r"top-1 ([\d.]+)%", text).group(1)) == pytest.approx(want, abs=0.01)
    # the same images as PNG files in class folders (lossless) give the same accuracy
    assert gr(capsys, "demo-data", str(tmp_path / "digits"))[0] == 0
    code, text, _ = gr(capsys, "eval", os.path.join(out, "export", "model"), "--data",
                       str(tmp_path / "digits" / "val"))
    assert float(re.search(r"top-1 ([\d.]+)%", text).group(1)) == pytest.approx(want, abs=0.01)


def test_predict_prints_top5(demo, tmp_path, capsys):
    _, out, _, _ = demo
    src = D.DigitsSource("val", 32)
    D.write_folder(D.SubsetSource(src, np.arange(20), "20"), str(tmp_path))
    files = sorted(str(p) for p in tmp_path.glob("*/*.png"))
    code, text, err = gr(capsys, "predict", os.path.join(out, "export", "model"), *files)
    assert code == 0, err
    blocks = text.strip().split("\n")
    assert len(blocks) == 6 * len(files)
    right = 0
    for i, path in enumerate(files):
        lines = blocks[6 * i: 6 * i + 6]
        assert lines[0] == path
        ranked = [re.match(r"\s+(\d)\. (\S+)\s+([\d.]+)%", s).groups() for s in lines[1:]]
        assert [int(r[0]) for r in ranked] == [1, 2, 3, 4, 5]
        probs = [float(r[2]) for r in ranked]
        assert probs == sorted(probs, reverse=True) and sum(probs) <= 100.01
        right += ranked[0][1] == os.path.basename(os.path.dirname(path))
    assert right >= 16                                              # >= 80 % of 20 digits
    code, _, err = gr(capsys, "predict", os.path.join(out, "export", "model"), "nope.png")
    assert code == 2 and "image 'nope.png' does not exist" in err


def test_bad_input_errors_at_the_cli(tmp_path, capsys):
    code, _, err = gr(capsys, "train", "--data", str(tmp_path / "missing"), "--model",
                      "resnest14")
    assert code == 2 and "data path" in err and "does not exist" in err
    code, _, err = gr(capsys, "train", "optim.learning_rate=0.1")
    assert code == 2 and "did you mean optim.lr" in err
    code, _, err = gr(capsys, "train", "--set", "optim.epoch", "3")
    assert code == 2 and "did you mean optim.epochs" in err
    code, _, err = gr(capsys, "eval", str(tmp_path / "nomodel"), "--data", "demo")
    assert code == 2 and "no model at" in err
    code, _, err = gr(capsys, "train", "-c", "demo", "--resume", str(tmp_path))
    assert code == 2 and "either --resume" in err


def test_class_count_mismatch(tmp_path, capsys):
    src = D.SubsetSource(D.DigitsSource("val", 32), np.arange(60), "60")
    D.write_folder(src, str(tmp_path / "f"))
    code, _, err = gr(capsys, "train", "-c", "demo", "--data", str(tmp_path / "f"),
                      "model.classes=5", *TINY)
    assert code == 2
    assert "class-count mismatch" in err and "has 10 classes" in err and "model.classes is 5" in err


def test_corrupt_images_error_or_skip_and_count(tmp_path, capsys):
    src = D.SubsetSource(D.DigitsSource("val", 32), np.arange(100), "100")
    D.write_folder(src, str(tmp_path / "f"))
    (tmp_path / "f" / "3" / "zz-broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    args = ["train", "-c", "demo", "--data", str(tmp_path / "f"), "data.limit=null",
            "--out", str(tmp_path / "run")] + TINY[:1] + TINY[2:]
    code, _, err = gr(capsys, *args)
    assert code == 2 and "zz-broken.png" in err and "data.on_corrupt=skip" in err
    code, text, err = gr(capsys, *args, "data.on_corrupt=skip", "optim.batch_size=101")
    assert code == 0, err
    assert "skipped 1 unreadable image(s), first: cannot decode image" in text
    assert "skipped 1 unreadable training image(s)" in text


def test_train_data_without_a_config_fine_tunes_a_recipe_sized_to_the_data(demo, tmp_path,
                                                                          capsys):
    """`train --data DIR` without -c: configs/finetune.yaml with the folder's classes, a batch
    no larger than the data and the warm-up inside the epochs, and it says so (it once took
    the ImageNet recipe: batch 8192, 1000 classes, 5 warm-up epochs). Here it fine-tunes the
    demo's network (its checkpoint, layout and size) on 6 of the digits."""
    _, out, _, _ = demo
    folder = tmp_path / "small"
    D.write_folder(D.SubsetSource(D.DigitsSource("val", 32), np.arange(0, 360, 9), "40"),
                   str(folder))
    for c in "6789":
        shutil.rmtree(folder / c)
    images = sum(len(os.listdir(folder / c)) for c in "012345")
    run_dir = str(tmp_path / "run")
    code, text, err = gr(capsys, "train", "--data", str(folder), "--model", "resnest14",
                         "model.kwargs={radix: 2, bottleneck_width: 16, stem_width: 16}",
                         f"model.pretrained={os.path.join(out, 'best.ckpt')}",
                         "data.train_size=32", "data.test_size=32", "data.crop_pct=1",
                         "--epochs", "2", "run.progress=false", "--out", run_dir)
    assert code == 0, err
    n_train = images - round(images * 0.1)                 # finetune.yaml holds out 10 %
    assert n_train < 32                                    # smaller than the recipe's batch
    assert f"no -c given: fine-tuning resnest14 with configs/finetune.yaml sized to {folder}: " \
           f"6 classes (from the data); batch {n_train} of {n_train} training images " \
           f"(1 iteration(s) per epoch)" in text
    assert "1 warm-up epoch(s) of 2" in text
    assert "classifier re-initialised for 6 classes" in text and "finished 2 epochs" in text
    with open(os.path.join(run_dir, "config.yaml")) as f:
        saved = yaml.safe_load(f)
    assert saved["model"]["classes"] == 6 and saved["optim"]["batch_size"] == n_train <= 32
    assert saved["optim"]["warmup_epochs"] < saved["optim"]["epochs"] == 2
    assert saved["run"]["out"] == run_dir


def test_train_data_without_weights_says_what_to_do(tmp_path, capsys, monkeypatch):
    """Fine-tuning needs ImageNet weights; without them one clear error names the ways on,
    before anything is built."""
    monkeypatch.setenv("MXNET_HOME", str(tmp_path / "mxnet"))
    D.write_folder(D.SubsetSource(D.DigitsSource("val", 32), np.arange(30), "30"),
                   str(tmp_path / "f"))
    code, _, err = gr(capsys, "train", "--data", str(tmp_path / "f"), "--out",
                      str(tmp_path / "run"))
    assert code == 2 and "Traceback" not in err
    assert "fine-tuning resnest50 starts from its ImageNet weights, and none were found" in err
    for way in ("model.pretrained=FILE", "model.pretrained=null", "-c CONFIG"):
        assert way in err
    assert not (tmp_path / "run").exists()


def test_train_help_reads_well(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["train", "--help"])
    text = capsys.readouterr().out
    assert exit_.value.code == 0
    for part in ("KEY=VALUE", "--resume", "--data", "configs/demo.yaml", "SIGTERM"):
        assert part in text


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_and_exits_cleanly(tmp_path):
    out = tmp_path / "run"
    code, err = signal_when(["train", "--out", str(out), "optim.epochs=200"] + TINY[:3] + TINY[4:],
                            "epoch 1/200:", signal.SIGTERM)
    assert code == 128 + signal.SIGTERM, err
    assert "interrupted by SIGTERM" in err and "--resume" in err and "Traceback" not in err
    meta = ck.read_meta(str(out / "last.ckpt"))
    assert meta["epoch"] >= 1


def test_overrides_may_follow_options():
    args = cli.build_parser().parse_args(["train", "a.b=1", "--out", "d", "c.d=2", "--epochs",
                                          "3", "e.f=[1, 2]"])
    assert args.overrides == ["a.b=1", "c.d=2", "e.f=[1, 2]"]
    assert (args.out, args.epochs) == ("d", 3)


def test_finetune_from_a_checkpoint_reinitialises_the_head(demo, tmp_path):
    """configs/finetune_demo.yaml: the demo's weights, a new 5-class classifier."""
    from gluon_resnest.train import load_config
    from gluon_resnest.train.trainer import Trainer
    _, out, _, _ = demo
    D.write_folder(D.DigitsSource("val", 32), str(tmp_path / "all"))
    for c in "56789":
        os.rename(tmp_path / "all" / c, tmp_path / f"moved{c}")
    cfg = load_config("finetune_demo", [("data.train", str(tmp_path / "all")),
                                        ("data.val_fraction", 0.2),
                                        ("model.pretrained", os.path.join(out, "best.ckpt"))])
    lines = []
    trainer = Trainer(cfg, out_dir=str(tmp_path / "run"), log=lines.append)
    trainer._describe()
    assert any("classifier re-initialised for 5 classes" in s for s in lines)
    assert trainer.class_names == ["0", "1", "2", "3", "4"]
    ours = {k: p.data().asnumpy() for k, p in trainer.net._collect_params_with_prefix().items()}
    import zipfile

    import mxnet as mx
    with zipfile.ZipFile(os.path.join(out, "best.ckpt")) as zf:
        theirs = {k: v.asnumpy() for k, v in mx.nd.load_frombuffer(zf.read("model.params"))
                  .items()}
    assert ours["fc.weight"].shape == (5, 2048)
    for k, v in theirs.items():
        if not k.startswith("fc."):
            np.testing.assert_array_equal(ours[k], v, err_msg=k)


def test_train_and_eval_on_recordio(tmp_path, capsys):
    """ImageNet-style RecordIO: DIR/train.rec and DIR/val.rec (+ .idx, .lst) are found."""
    code, text, _ = gr(capsys, "demo-data", str(tmp_path / "rec"), "--format", "rec")
    assert code == 0 and "train.rec" in text
    run_dir = str(tmp_path / "run")
    code, text, err = gr(capsys, "train", "-c", "demo", "--data", str(tmp_path / "rec"),
                         "--out", run_dir, *TINY)
    assert code == 0, err
    assert re.search(r"data: 96 images of RecordIO .*train\.rec \(1437 records\); "
                     r"validation: 96 images of RecordIO .*val\.rec", text)
    code, text, err = gr(capsys, "eval", run_dir, "--data", str(tmp_path / "rec" / "val.rec"))
    assert code == 0, err
    assert re.search(r"RecordIO .*val\.rec \(360 records\)", text) and "(360 images)" in text
