"""AMX for MXNet's oneDNN: the decision (fake CPU flags, fake syscall), the ISA report, the
`info` command and the BF16 speed note. Real AMX runs only where the CPU has amx_tile."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from gluon_resnest._compat import onednn
from gluon_resnest.cli import main
from gluon_resnest.deploy.bf16 import bf16_support

AMX_FLAGS = {"amx_tile", "amx_bf16", "amx_int8", "avx512_bf16", "avx512_vnni", "avx512f", "avx2"}
NO_AMX = AMX_FLAGS - {"amx_tile", "amx_bf16", "amx_int8"}
HAS_AMX = "amx_tile" in onednn.cpu_flags()


class FakeRequest:
    def __init__(self, granted=True):
        self.calls, self.granted = 0, granted

    def __call__(self):
        self.calls += 1
        return (True, "granted") if self.granted else (False, "returned -1 (errno 22)")


def test_amx_cpu_sets_isa_and_asks_for_tiles():
    env, req = {}, FakeRequest()
    st = onednn.enable_amx(AMX_FLAGS, env, req)
    assert st.enabled and st.set_isa and st.permission is True
    assert env["DNNL_MAX_CPU_ISA"] == "AVX512_CORE_AMX" and req.calls == 1


def test_opt_out_does_nothing():
    env, req = {"GLUON_RESNEST_AMX": "0"}, FakeRequest()
    st = onednn.enable_amx(AMX_FLAGS, env, req)
    assert st.state == "disabled" and req.calls == 0
    assert env == {"GLUON_RESNEST_AMX": "0"}


@pytest.mark.parametrize("user, state", [("AVX512_CORE_BF16", "limited"),
                                         ("AVX512_CORE_AMX", "enabled")])
def test_user_isa_is_kept(user, state):
    env, req = {"DNNL_MAX_CPU_ISA": user}, FakeRequest()
    st = onednn.enable_amx(AMX_FLAGS, env, req)
    assert (st.state, st.set_isa, env) == (state, False, {"DNNL_MAX_CPU_ISA": user})
    assert req.calls == 1       # the tile state is still asked for: the user's AMX needs it


def test_no_amx_does_nothing():
    env, req = {}, FakeRequest()
    st = onednn.enable_amx(NO_AMX, env, req)
    assert (st.state, env, req.calls) == ("not available", {}, 0)


def test_refused_permission_leaves_isa_unset():
    env, req = {}, FakeRequest(granted=False)
    st = onednn.enable_amx(AMX_FLAGS, env, req)
    assert st.state == "permission refused" and not st.enabled and "errno 22" in st.detail
    assert "DNNL_MAX_CPU_ISA" not in env and req.calls == 1


def test_subprocess_drops_inherited_isa_when_refused():
    """A child inherits the parent's DNNL_MAX_CPU_ISA; refused there, it must not keep it."""
    env = {}
    onednn.enable_amx(AMX_FLAGS, env, FakeRequest())
    child = dict(env)
    st = onednn.enable_amx(AMX_FLAGS, child, FakeRequest(granted=False))
    assert st.state == "permission refused" and child == {}
    child = dict(env)       # granted in the child: still counted as ours, not the user's
    assert onednn.enable_amx(AMX_FLAGS, child, FakeRequest()).state == "enabled"
    assert child == env


def test_tile_request_is_arch_prctl(monkeypatch):
    calls = []

    class FakeSyscall:      # stands for libc's syscall(): takes restype, records its arguments
        def __init__(self, rc):
            self.rc, self.restype = rc, None

        def __call__(self, *args):
            calls.append(tuple(a.value for a in args))
            return self.rc

    class FakeLibc:
        def __init__(self, rc):
            self.syscall = FakeSyscall(rc)

    for rc, granted in ((0, True), (-1, False)):
        monkeypatch.setattr(onednn.ctypes, "CDLL", lambda *a, rc=rc, **k: FakeLibc(rc))
        monkeypatch.setattr(onednn.sys, "platform", "linux")
        monkeypatch.setattr(onednn.platform, "machine", lambda: "x86_64")
        ok, reason = onednn._request_tile_permission()
        assert ok is granted, reason
    assert calls == [(158, 0x1023, 18)] * 2


def test_cpuinfo_parsing(tmp_path):
    f = tmp_path / "cpuinfo"
    f.write_text("processor\t: 0\nmodel name\t: Test CPU 9000\nflags\t\t: fpu avx2 amx_tile\n\n"
                 "processor\t: 1\nmodel name\t: Test CPU 9000\nflags\t\t: fpu avx2 amx_tile\n")
    assert onednn.cpu_flags(str(f)) == {"fpu", "avx2", "amx_tile"}
    assert onednn.cpu_model(str(f)) == "Test CPU 9000"
    assert onednn.cpu_flags(str(tmp_path / "missing")) == frozenset()


def test_import_runs_no_operator_and_enables_first():
    """oneDNN reads DNNL_MAX_CPU_ISA at its first primitive: importing the package (as the INT8
    subprocess `python -m gluon_resnest.deploy.int8` does) must run none, and must load
    _compat.onednn before mxnet."""
    env = {**os.environ, "MKLDNN_VERBOSE": "1", "DNNL_VERBOSE": "1"}
    run = subprocess.run([sys.executable, "-X", "importtime", "-c",
                          "import gluon_resnest.deploy.int8"],
                         env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "dnnl_verbose" not in run.stdout
    names = [line.rsplit("|", 1)[-1].strip() for line in run.stderr.splitlines()
             if line.startswith("import time:")]
    assert names.index("gluon_resnest._compat.onednn") < names.index("mxnet")


def test_bf16_note_depends_on_amx():
    no = onednn.AmxStatus("not available", "no amx_tile")
    off = onednn.AmxStatus("disabled", "GLUON_RESNEST_AMX=0")
    # AMX hardware left off: oneDNN's AVX512-BF16 path is slower than FP32 there
    assert "GLUON_RESNEST_AMX=0" in onednn.bf16_speed_note(AMX_FLAGS, off)
    assert "slower than FP32" in onednn.bf16_speed_note(AMX_FLAGS, off)
    assert onednn.bf16_speed_note(AMX_FLAGS, onednn.AmxStatus("enabled", "set")) is None
    # native AVX512-BF16 without AMX hardware (Zen 5): faster than FP32, nothing to say
    assert onednn.bf16_speed_note(NO_AMX, no) is None
    emulated = NO_AMX - {"avx512_bf16"}
    assert "emulated" in onednn.bf16_speed_note(emulated, no)
    assert "not available" in onednn.bf16_speed_note({"avx2"}, no)


def test_bf16_note_only_for_mxnet_bf16(capsys):
    printed = onednn.note_bf16_speed("predict", "bf16")
    assert printed == (onednn.bf16_speed_note() is not None)
    for precision, runtime in (("fp32", "mxnet"), ("int8", "mxnet"), ("bf16", "openvino")):
        assert onednn.note_bf16_speed("predict", precision, runtime) is False
    err = capsys.readouterr().err
    assert err.count("gluon-resnest predict: hint: BF16 runs without AMX") == int(printed)


def test_info_command(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    isa = [line for line in out.splitlines() if line.startswith("oneDNN isa: ")]
    assert len(isa) == 1 and "unknown" not in isa[0], out
    flags = onednn.cpu_flags()
    if "avx512_bf16" in flags:      # oneDNN 2.4.4's own wording for this ISA level
        assert "bfloat16" in isa[0]
    assert ("AMX" in isa[0]) == onednn.amx_status().enabled
    assert f"AMX: {onednn.amx_status().state}" in out
    assert "avx512_bf16=" + ("yes" if "avx512_bf16" in flags else "no") in out


def test_bf16_export_and_predict_say_when_slower(tmp_path, capsys):
    ok, reason = bf16_support()
    if not ok:
        pytest.skip(f"BF16 needs oneDNN bfloat16 kernels: {reason}")
    out = tmp_path / "m-bf16"
    assert main(["export", "resnest14", "--random", "--bf16", "--size", "32",
                 "--out", str(out)]) == 0
    slow = onednn.bf16_speed_note() is not None
    note = "hint: BF16 runs without AMX here"
    assert (note in capsys.readouterr().err) == slow
    img = tmp_path / "x.png"
    Image.fromarray(np.random.RandomState(0).randint(0, 255, (40, 40, 3), np.uint8)).save(img)
    assert main(["predict", str(out), str(img), "--topk", "1"]) == 0
    captured = capsys.readouterr()
    assert str(img) in captured.out
    assert (captured.err.count(note) == 1) == slow


@pytest.mark.skipif(not HAS_AMX, reason="this CPU has no AMX (no amx_tile in /proc/cpuinfo)")
@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
def test_real_amx_is_used(dtype):
    status = onednn.amx_status()
    assert status.enabled, status.describe()
    probe = onednn.isa_report(dtype)
    assert "AMX" in probe.isa, probe
    if dtype == "bfloat16":
        assert "amx" in probe.kernel.lower(), probe


@pytest.mark.skipif(not HAS_AMX, reason="this CPU has no AMX (no amx_tile in /proc/cpuinfo)")
def test_real_amx_opt_out(monkeypatch):
    monkeypatch.setenv("GLUON_RESNEST_AMX", "0")
    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
    monkeypatch.setattr(onednn, "_PROBES", {})
    assert "AMX" not in onednn.isa_report("float32").isa
