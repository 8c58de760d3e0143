"""deploy.benchmark (the timing engine) and ``gluon-resnest bench``.

The engine is tested with fake cases on a fake clock: each call advances the clock by a known
duration, so images/s, medians, ratios and the call order are known exactly. Agreement is
checked on logits built with a known largest error and a known number of top-1 flips. The
command runs once on a tiny exported model (resnest14, 10 classes, 64 px); the rows it must
produce are derived from what this machine has installed and supports.
"""
import io
import json
import re
import sys
from contextlib import redirect_stderr, redirect_stdout

import numpy as np
import pytest

from gluon_resnest import cli
from gluon_resnest.deploy import benchmark as bm
from gluon_resnest.deploy import runtimes as rt
from gluon_resnest.deploy.bf16 import bf16_support

FP32_TOL = 1e-4     # as tests/test_runtimes.py: fp32 runtimes vs MXNet fp32, relative


def gr(*argv):
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = cli.main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


class FakeClock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def fake_case(name, clock, durations, log):
    """A case whose n-th call takes durations[n] (the last one repeats) seconds."""
    calls = []

    def run(x):
        log.append(name)
        d = durations[min(len(calls), len(durations) - 1)]
        calls.append(d)
        clock.t += d
        return np.zeros((len(x), 3))
    return bm.Case(name, run)


# -- the engine ---------------------------------------------------------------------------------
def test_interleave_order_warmup_then_round_robin():
    clock, log = FakeClock(), []
    cases = [fake_case(n, clock, [0.1], log) for n in "abc"]
    out = bm.interleave(cases, np.zeros((4, 3, 2, 2)), rounds=3, warmup=2, calls=1, clock=clock)
    assert log == list("aabbcc") + list("abc") * 3
    assert all(len(t.samples) == 3 and t.batch == 4 for t in out.values())


def test_samples_medians_and_spread_are_images_per_second():
    clock, log = FakeClock(), []
    # warm-up call 0.5 s, then the rounds' samples of 2 calls each
    a = fake_case("a", clock, [0.5, 0.1, 0.1, 0.3, 0.3, 0.2, 0.2, 0.4, 0.4], log)
    out = bm.interleave([a], np.zeros((8, 3, 2, 2)), rounds=4, warmup=1, calls=2, clock=clock)
    expected = [8 * 2 / (2 * d) for d in (0.1, 0.3, 0.2, 0.4)]
    t = out["a"]
    assert t.samples == pytest.approx(expected)
    assert t.median == pytest.approx(np.median(expected))
    assert (t.low, t.high) == pytest.approx((min(expected), max(expected)))
    assert t.to_dict()["calls_per_sample"] == 2


def test_calls_per_sample_fill_the_target_time():
    clock, log = FakeClock(), []
    fast = fake_case("fast", clock, [0.1], log)
    slow = fake_case("slow", clock, [3.0], log)
    tiny = fake_case("tiny", clock, [0.001], log)
    out = bm.interleave([fast, slow, tiny], np.zeros((1, 3, 2, 2)), rounds=1, warmup=1,
                        target_seconds=1.0, max_calls=50, clock=clock)
    assert (out["fast"].calls, out["slow"].calls, out["tiny"].calls) == (10, 1, 50)
    assert out["fast"].samples == pytest.approx([10.0])


def test_a_failing_case_keeps_its_error_and_the_others_run():
    clock, log = FakeClock(), []
    good = fake_case("good", clock, [0.1], log)
    calls = []

    def flaky(x):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("out of memory\nmore detail")
        clock.t += 0.1
    out = bm.interleave([bm.Case("flaky", flaky), good], np.zeros((2, 3, 2, 2)), rounds=4,
                        warmup=1, calls=1, clock=clock)
    assert out["flaky"].error == "RuntimeError: out of memory"
    assert len(out["flaky"].samples) == 1 and len(out["good"].samples) == 4


def test_bad_rounds_and_duplicate_names():
    case = bm.Case("a", lambda x: x)
    with pytest.raises(ValueError, match="rounds must be >= 1"):
        bm.interleave([case], np.zeros((1, 3, 2, 2)), rounds=0)
    with pytest.raises(ValueError, match="case names must be unique"):
        bm.interleave([case, case], np.zeros((1, 3, 2, 2)))


def test_agreement_known_error_and_flips():
    rng = np.random.RandomState(0)
    ref = rng.uniform(-2, 2, size=(10, 5)).astype(np.float32)
    winner = rng.randint(0, 5, 10)
    ref[np.arange(10), winner] = 4.0                         # largest |ref| is 4
    y = ref + np.float32(0.01)
    for i in (1, 2, 3):                                      # exactly three top-1 flips
        y[i, (winner[i] + 1) % 5] = 5.0
    a = bm.agreement(y, ref, "ref")
    largest = max(abs(float(y[i, j]) - float(ref[i, j])) for i in range(10) for j in range(5))
    assert a.max_rel == pytest.approx(largest / 4.0)
    assert a.top1 == pytest.approx(0.7) and a.n == 10 and a.reference == "ref"
    assert bm.agreement(ref, ref).max_rel == 0.0
    with pytest.raises(ValueError, match="cannot be compared"):
        bm.agreement(y[:, :4], ref)


def _two_case_result():
    clock, log = FakeClock(), []
    slow = fake_case("onnxruntime fp32", clock, [0.5], log)
    fast = fake_case("openvino fp32", clock, [0.25], log)
    other = fake_case("another network", clock, [0.1], log)    # no runtime: not in verdicts
    slow.runtime, fast.runtime = "onnxruntime", "openvino"
    slow.precision = fast.precision = other.precision = "fp32"
    inputs = {1: np.zeros((1, 3, 2, 2)), 16: np.zeros((16, 3, 2, 2))}
    return bm.run_benchmark([slow, fast, other], inputs, rounds=2, warmup=1, calls=1,
                            agree_x=np.zeros((4, 3, 2, 2)), reference="onnxruntime fp32",
                            clock=clock)


def test_table_ratios_fastest_and_json():
    res = _two_case_result()
    assert bm.fastest(res, 16) == "another network"
    assert bm.fastest(res, 16, among=["onnxruntime fp32", "openvino fp32"]) == "openvino fp32"
    text = bm.table(res, baseline="onnxruntime fp32")
    assert text.splitlines()[0] == ("| case | bs1 img/s (min-max) | bs1 vs onnxruntime fp32 | "
                                    "bs16 img/s (min-max) | bs16 vs onnxruntime fp32 | max rel."
                                    " error vs onnxruntime fp32 | top-1 agreement |")
    rows = {r.split("|")[1].strip(): r for r in text.splitlines()[2:]}
    # 0.25 s vs 0.5 s a call: twice the images/s (bs16: 64 vs 32)
    assert "| 64.00 (64.00-64.00) | 2.00x |" in rows["openvino fp32"]
    assert "| 32.00 (32.00-32.00) | 1.00x |" in rows["onnxruntime fp32"]
    assert rows["openvino fp32"].rstrip().endswith("| 0.0e+00 | 100.0% |")
    d = json.loads(json.dumps(res.to_dict()))
    assert [c["name"] for c in d["cases"]] == ["onnxruntime fp32", "openvino fp32",
                                               "another network"]
    assert d["cases"][1]["timing"]["16"]["median"] == 64.0


def test_verdict_says_what_auto_picks(monkeypatch):
    res = _two_case_result()
    # auto measures its candidates at batch 1: here OpenVINO, which is also faster at bs16
    monkeypatch.setattr(rt, "auto_candidates", lambda precision, **kw: ["onnxruntime", "openvino"])
    assert bm.verdict(res)[-1] == ('runtime="auto" picks openvino fp32 for fp32: the fastest '
                                   'fp32 runtime measured here')
    # the fixed rule may pick a slower one: said with the numbers
    monkeypatch.setenv("GLUON_RESNEST_AUTO", "rule")
    monkeypatch.setattr(rt, "auto_runtime", lambda precision, **kw: "onnxruntime")
    lines = bm.verdict(res, baseline="onnxruntime fp32")
    assert lines[0] == "fastest at bs1: openvino fp32 (4.00 img/s, 2.00x onnxruntime fp32)"
    assert lines[-1] == ('runtime="auto" picks onnxruntime fp32 for fp32: at bs1 openvino fp32 '
                         'is faster: 4.00 vs 2.00 img/s, 2.00x; at bs16 openvino fp32 is faster:'
                         ' 64.00 vs 32.00 img/s, 2.00x')
    monkeypatch.setattr(rt, "auto_runtime", lambda precision, **kw: "openvino")
    assert bm.verdict(res)[-1].endswith("the fastest fp32 runtime measured here")


def test_bench_inputs_rejects_bad_batch_sizes():
    from gluon_resnest.deploy.artifact import ModelMeta
    meta = ModelMeta.for_variant("resnest14").updated(input_size=32)
    inputs, agree = bm.bench_inputs(meta, [1, 3], agree_n=4)
    assert inputs[3].shape == (3, 3, 32, 32) and agree.shape == (4, 3, 32, 32)
    np.testing.assert_array_equal(inputs[1], agree[:1])      # one pool: the same images
    with pytest.raises(ValueError, match=r"positive ints, got \[0\]"):
        bm.bench_inputs(meta, [0])


# -- the command --------------------------------------------------------------------------------
@pytest.mark.parametrize("argv,match", [
    (["--runtimes", "mxnet,tensorrt"], "unknown --runtimes value(s) 'tensorrt': valid are "
                                       "mxnet, onnxruntime, openvino"),
    (["--precisions", "fp16"], "unknown --precisions value(s) 'fp16': valid are fp32, bf16, "
                               "int8"),
    (["--batch-sizes", "1,0"], "--batch-sizes takes positive ints separated by commas"),
    (["--batch-sizes", "x"], "--batch-sizes takes positive ints"),
    (["--rounds", "0"], "--rounds must be >= 1"),
    (["--runtimes", "onnxruntime", "--precisions", "int8"], "runtime 'onnxruntime' has no int8"),
    (["--precisions", "fp32", "--calib", "."], "--calib applies to int8"),
])
def test_bad_options_are_clear_errors_before_loading(argv, match):
    code, out, err = gr("bench", "no-such-model", *argv)
    assert code == 2 and match in err, (code, err)
    assert "no-such-model" not in err                      # nothing was loaded


@pytest.mark.parametrize("runtime,extra", [("onnxruntime", "gluon_resnest[onnx]"),
                                           ("openvino", "gluon_resnest[openvino]")])
def test_a_named_runtime_that_is_missing_names_the_extra(monkeypatch, runtime, extra):
    monkeypatch.setitem(sys.modules, runtime, None)        # import fails as if not installed
    code, _, err = gr("bench", "no-such-model", "--runtimes", f"mxnet,{runtime}")
    assert code == 2 and extra in err, err


def test_calib_folder_without_images_is_an_error_before_loading(tmp_path):
    (tmp_path / "notes.txt").write_text("not an image")
    code, _, err = gr("bench", "no-such-model", "--calib", tmp_path)
    assert code == 2 and f"--calib folder '{tmp_path}' holds no images" in err, err


def test_a_variant_needs_its_weights_named():
    code, _, err = gr("bench", "resnest14", "--precisions", "fp32")
    assert code == 2 and "give the weights of resnest14" in err, err


def _expected_rows():
    rows = {"mxnet fp32", "mxnet int8"}
    if bf16_support()[0]:
        rows.add("mxnet bf16")
    if rt.installed("onnxruntime"):
        rows.add("onnxruntime fp32")
    if rt.installed("openvino"):
        rows.add("openvino fp32")
        if rt.openvino_bf16()[0]:
            rows.add("openvino bf16")
    return rows


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    code, _, err = gr("export", "resnest14", "--random", "--classes", "10", "--size", "64",
                      "--out", root / "tiny")
    assert code == 0, err
    return root


def test_bench_an_exported_model(exported):
    out_json = exported / "bench.json"
    code, text, err = gr("bench", exported / "tiny", "--rounds", "1", "--warmup", "1",
                         "--batch-sizes", "1,4", "--sample-seconds", "0.05", "--json", out_json)
    assert code == 0, err
    d = json.loads(out_json.read_text())
    rows = _expected_rows()
    assert {c["name"] for c in d["cases"]} == rows
    assert set(d["skipped"]) == {f"{r} {p}" for r in rt.RUNTIMES for p in rt.SUPPORTED[r]} - rows
    assert d["reference"] == d["baseline"] == "mxnet fp32" and d["input_size"] == 64
    for case in d["cases"]:
        assert set(case["timing"]) == {"1", "4"}
        assert all(len(t["samples"]) == 1 and t["median"] > 0 for t in case["timing"].values())
        a = case["agreement"]
        assert a["n"] == 16
        if case["precision"] == "fp32":
            assert a["max_rel_error"] <= FP32_TOL and a["top1_agreement"] == 1.0, case
    lines = text.splitlines()
    table = [r for r in lines if r.startswith("| ")]
    assert table[0].startswith("| case | bs1 img/s (min-max) | bs1 vs mxnet fp32 |")
    assert {r.split("|")[1].strip() for r in table[1:]} == rows
    assert re.search(r"^fastest at bs4: (\w+ \w+) \(", text, re.M).group(1) == d["fastest"]["4"]
    assert any(ln.startswith("cpu: ") for ln in lines) and " isa: " in text
    assert "INT8 is calibrated on generated images" in text


@pytest.mark.skipif(not (rt.installed("onnxruntime") or rt.installed("openvino")),
                    reason="neither onnxruntime nor openvino is installed")
def test_bench_an_onnx_file(exported):
    code, _, err = gr("export", exported / "tiny", "--format", "onnx")
    assert code == 0, err
    code, text, err = gr("bench", exported / "tiny.onnx", "--rounds", "1", "--batch-sizes", "2",
                         "--sample-seconds", "0.05", "--precisions", "fp32")
    assert code == 0, err
    names = [r.split("|")[1].strip() for r in text.splitlines() if r.startswith("| ")][1:]
    expected = [r for r in ("onnxruntime", "openvino") if rt.installed(r)]
    assert names == [f"{r} fp32" for r in expected]
    assert "skipped mxnet fp32: an .onnx model runs in onnxruntime or openvino" in text
    assert f"max rel. error vs {expected[0]} fp32" in text
