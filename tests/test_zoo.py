"""Registration in GluonCV's zoo and the route for unmodified GluonCV scripts."""
import os
import re
import subprocess
import sys
import textwrap

import gluoncv
import pytest
from gluoncv.model_zoo import get_model, get_model_list

import gluon_resnest
from gluon_resnest.model.resnest import ResNeSt
from gluon_resnest.model.variants import variant_names


def test_every_name_resolves_through_gluoncv():
    names = set(get_model_list())
    for name in variant_names():
        assert name in names
        net = get_model(name, classes=3)
        assert isinstance(net, ResNeSt), name


def test_registering_twice_is_harmless():
    before = dict(gluoncv.model_zoo.model_zoo._models)
    gluon_resnest.register()
    gluon_resnest.register()
    assert dict(gluoncv.model_zoo.model_zoo._models) == before


SCRIPT = textwrap.dedent("""
    import sys
    from gluoncv.model_zoo import get_model
    net = get_model(sys.argv[1])
    print(type(net).__module__, type(net).__name__)
""")


def test_unmodified_script_via_launcher(tmp_path):
    script = tmp_path / "train_like_gluoncv.py"
    script.write_text(SCRIPT)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    plain = subprocess.run([sys.executable, str(script), "resnest50_fast"], env=env,
                           capture_output=True, text=True, timeout=120)
    # GluonCV alone lacks the name (or, with torch >= 2 installed, refuses to import at all)
    assert plain.returncode != 0
    assert "resnest50_fast" in plain.stderr or "torch>=1.4.0,<2.0.0 is required" in plain.stderr
    run = subprocess.run([sys.executable, "-m", "gluon_resnest", "run", str(script),
                          "resnest50_fast"], env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "gluon_resnest.model.resnest ResNeSt"


# What GluonCV's scripts/classification/imagenet/demo_imagenet.py does (the script is not
# installed with the pip package): get_model(name, pretrained=True), GluonCV's transform_eval,
# net(img), topk, and net.classes indexed by the top ids.
DEMO_IMAGENET = textwrap.dedent("""
    import argparse
    import gluoncv
    from gluoncv.data.transforms.presets.imagenet import transform_eval
    from gluoncv.model_zoo import get_model
    from mxnet import image, nd

    gluoncv.utils.check_version("0.3.0")
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--input-pic", required=True)
    opt = parser.parse_args()
    net = get_model(opt.model, pretrained=True)
    classes = net.classes
    pred = net(transform_eval(image.imread(opt.input_pic)))
    top = nd.topk(pred, k=5)[0].astype("int")
    prob = nd.softmax(pred)[0]
    for i in range(5):
        print("[%s], with probability %.4f." % (classes[top[i].asscalar()],
                                              prob[top[i]].asscalar()))
""")


def test_gluoncv_demo_imagenet_with_local_pretrained_file(tmp_path):
    """A GluonCV-named weight file in $MXNET_HOME/models (random weights): the demo prints the
    same top-5 names and probabilities as GluonCV's own resnest14 with that file."""
    import cv2
    import mxnet as mx
    import numpy as np
    from conftest import randomize
    from gluoncv.data import ImageNet1kAttr
    from gluoncv.data.transforms.presets.imagenet import transform_eval
    from gluoncv.model_zoo import resnest as gcv_resnest

    from gluon_resnest.weights.gluoncv import KNOWN_SHA1

    models = tmp_path / "home" / "models"
    models.mkdir(parents=True)
    src = gluon_resnest.get_model("resnest14")
    src.initialize()
    randomize(src, seed=3)
    src.fc.weight.set_data(src.fc.weight.data() * 30)  # spread logits: a clear top-5
    weights = models / f"resnest14-{KNOWN_SHA1['resnest14'][:8]}.params"
    src.save_parameters(str(weights))
    pic = tmp_path / "pic.png"
    cv2.imwrite(str(pic), np.random.RandomState(0).randint(0, 256, (300, 260, 3), np.uint8))
    script = tmp_path / "demo_imagenet.py"
    script.write_text(DEMO_IMAGENET)

    env = dict(os.environ, OMP_NUM_THREADS="1", MXNET_HOME=str(tmp_path / "home"))
    run = subprocess.run([sys.executable, "-m", "gluon_resnest", "run", str(script),
                          "--model", "resnest14", "--input-pic", str(pic)],
                         env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr

    ref = gcv_resnest.resnest14()                      # GluonCV's network, the same file
    ref.load_parameters(str(weights))
    pred = ref(transform_eval(mx.image.imread(str(pic))))
    prob = mx.nd.softmax(pred)[0].asnumpy()
    order = np.argsort(-prob)
    top = order[:5]
    names = ImageNet1kAttr().classes
    assert prob[top[0]] > 0.05 and prob[top[4]] > 1.2 * prob[order[5]]   # no near-tie at 5
    lines = [re.fullmatch(r"\[(.*)\], with probability ([\d.]+)\.", ln)
             for ln in run.stdout.splitlines()]
    assert len(lines) == 5 and all(lines), run.stdout
    assert [m.group(1) for m in lines] == [names[i] for i in top]
    np.testing.assert_allclose([float(m.group(2)) for m in lines], prob[top], atol=1e-4)


def test_pretrained_classifier_carries_names_and_count(tmp_path):
    src = gluon_resnest.get_model("resnest14")
    src.initialize()
    path = str(tmp_path / "w.params")
    src.save_parameters(path)
    net = gluon_resnest.get_model("resnest14", pretrained=path)
    assert net.num_classes == 1000 and len(net.classes) == 1000 and len(net.synset) == 1000
    assert net.classes[0] == gluoncv.data.ImageNet1kAttr().classes[0]
    fresh = gluon_resnest.get_model("resnest14", classes=7)
    assert fresh.num_classes == 7 and fresh.classes is None
    fresh.classes = list("abcdefg")
    assert fresh.classes[6] == "g"
    with pytest.raises(ValueError, match="3 class names for a 7-class classifier"):
        fresh.classes = ["a", "b", "c"]
    with pytest.raises(TypeError, match="list of class names"):
        fresh.classes = "abcdefg"
    tuned = gluon_resnest.get_model("resnest14", pretrained=path, classes=7)
    assert tuned.num_classes == 7 and tuned.classes is None


def _launch(tmp_path, body, *args):
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(body))
    return subprocess.run([sys.executable, "-m", "gluon_resnest", "run", str(script), *args],
                          env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True,
                          text=True, timeout=120)


def test_launcher_passes_the_scripts_exceptions_through(tmp_path):
    run = _launch(tmp_path, """
        def helper(x):
            return x["key"] + 1
        helper({"key": "a"})
    """)
    assert run.returncode == 1
    assert "Traceback (most recent call last)" in run.stderr
    assert 'return x["key"] + 1' in run.stderr                # the script's own frame
    assert run.stderr.rstrip().splitlines()[-1].startswith("TypeError: can only concatenate")
    assert "gluon-resnest run: error" not in run.stderr
    run = _launch(tmp_path, "import sys\nprint(sys.argv[1:])\nsys.exit(int(sys.argv[1]))\n", "3")
    assert run.returncode == 3 and run.stdout.strip() == "['3']" and run.stderr == ""


def test_launcher_own_errors_are_one_line(tmp_path, capsys):
    from gluon_resnest.cli import main
    missing = str(tmp_path / "nope.py")
    assert main(["run", missing]) == 2
    err = capsys.readouterr().err
    assert err == f"gluon-resnest run: error: script {missing!r} does not exist (or is not a file)\n"
