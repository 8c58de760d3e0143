"""``gluon-resnest summary`` / ``list`` print the paper's Table 3 rows at its precision.

Table 3 of the ResNeSt paper prints params to 0.1M and "GFLOPs" (multiply-adds at 224x224) to
3 significant digits: ResNeSt-50 27.5M / 5.39, ResNeSt-50-fast 27.5M / 4.34, ResNeSt-101
48.3M / 10.2, ResNeSt-101-fast 48.2M / 8.07. The printed params must round to the paper's
0.1M and the printed multiply-adds must be within 2% of its number.
"""
import re

import pytest

from gluon_resnest.cli import main

TABLE3 = {  # paper row -> (our name, params in M, GMACs at 224)
    "ResNeSt-50": ("resnest50", 27.5, 5.39),
    "ResNeSt-50-fast": ("resnest50_fast", 27.5, 4.34),
    "ResNeSt-101": ("resnest101", 48.3, 10.2),
    "ResNeSt-101-fast": ("resnest101_fast", 48.2, 8.07),
}


@pytest.mark.parametrize("row", sorted(TABLE3))
def test_summary_total_matches_table3(row, capsys):
    name, params, gmacs = TABLE3[row]
    assert main(["summary", name, "--size", "224"]) == 0
    out = capsys.readouterr().out
    assert "224x224" in out
    total = re.search(r"^total\s+([\d.]+)M\s+([\d.]+)\s*$", out, re.M)
    assert total, out
    printed_params, printed_gmacs = float(total.group(1)), float(total.group(2))
    assert round(printed_params, 1) == params, (row, printed_params)
    assert abs(printed_gmacs - gmacs) / gmacs < 0.02, (row, printed_gmacs)
    stages = re.findall(r"^(stem|layer[1-4]|head)\s", out, re.M)
    assert stages == ["stem", "layer1", "layer2", "layer3", "layer4", "head"]


def test_list_marks_the_paper_rows(capsys):
    assert main(["list", "--size", "224"]) == 0
    lines = capsys.readouterr().out.splitlines()
    for row, (_, params, gmacs) in TABLE3.items():
        hits = [ln for ln in lines if re.search(rf"paper: {re.escape(row)}(,|$)", ln)]
        assert len(hits) == 1, row
        p, m = re.search(r"\s([\d.]+)M\s+([\d.]+)\s+224\s", hits[0]).groups()
        assert round(float(p), 1) == params and abs(float(m) - gmacs) / gmacs < 0.02, hits[0]


def test_stage_macs_of_the_stem_and_head_by_hand():
    """Per-stage counts (graphs cut after the stem and after each stage) against hand counts:
    resnest14's stem at 224 is three 3x3 convs on 112x112 (3->32, 32->32, 32->64), its head
    one 2048x1000 matrix; the stages sum to the whole-network count."""
    from gluon_resnest.model import profile
    from gluon_resnest.model.resnest import build
    net = build("resnest14")
    macs = profile.count_macs(net, 224, by_stage=True)
    assert macs["stem"] == 112 * 112 * (32 * 3 * 9 + 32 * 32 * 9 + 64 * 32 * 9)
    assert macs["head"] == 2048 * 1000
    assert sum(macs.values()) == profile.count_macs(net, 224)
    assert all(macs[f"layer{i}"] > 0 for i in range(1, 5))
