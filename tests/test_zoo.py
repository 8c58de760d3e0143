"""Registration in GluonCV's zoo and the route for unmodified GluonCV scripts."""
import os
import subprocess
import sys
import textwrap

import gluoncv
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
