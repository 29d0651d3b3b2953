"""`ssamba-bench mixerbench` (bench/cli/mixerbench.py, bench/measure/mixer_bench.py): the profile's
categories add up, the FLOP floor is FLOPs over the measured GEMM rate, and targets are judged from
the numbers measured in the run (tiny shapes here: a smoke test, not a measurement)."""

from __future__ import annotations

import json

import pytest

from bench.cli import main
from bench.measure.mixer_bench import _category
from models.scan.cpu import cpu_ext_available


def test_operator_categories():
    assert _category("aten::mm") == "mm" and _category("aten::addmm") == "mm"
    assert _category("ssamba_scan_cpu::fwd") == "scan" and _category("ssamba_bench::selective_scan") == "scan"
    assert _category("ssamba_scan_cpu::conv_fwd") == "conv" and _category("aten::mkldnn_convolution") == "conv"
    assert _category("aten::add") == "other" and _category("aten::flip") == "other"


@pytest.mark.skipif(not cpu_ext_available(), reason="the C++ CPU kernels did not build here")
def test_mixerbench_runs_and_reports_consistent_numbers(tmp_path, capsys):
    out = tmp_path / "mixer.json"
    assert main(["mixerbench", "--profile-tokens", "64", "--floor-tokens", "64", "--train-batch", "2",
                 "--repeats", "1", "--matmul-size", "64", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "outside mm+scan" in printed and "targets (fused path)" in printed
    result = json.loads(out.read_text())
    for path in ("fused", "unfused"):
        p = result["profile"][path]
        assert p["total_s"] == pytest.approx(p["mm_s"] + p["scan_s"] + p["conv_s"] + p["other_s"])
        assert 0 <= p["outside_mm_scan_share"] <= 1
        floor = result["floor"][path]
        assert floor["floor_s"] == pytest.approx(floor["flops"] / (result["gemm_gflops"] * 1e9))
        assert floor["gemm_floor_ratio"] == pytest.approx(floor["median"] / floor["floor_s"])
    # the unfused path runs mkldnn's conv and flips; the fused one its own conv kernel, no flip
    assert any(o["op"].startswith("aten::flip") for o in result["profile"]["unfused"]["top_ops"]) or \
        result["profile"]["unfused"]["conv_s"] > 0
    ratio = result["train"]["ssamba fused"]["median"] / result["train"]["ssast_tiny"]["median"]
    assert result["train"]["ssamba fused"]["ratio_to_ssast"] == pytest.approx(ratio)
    targets = result["targets"]
    assert set(targets) == {"outside_mm_scan_share", "gemm_floor_ratio", "train_step_ratio"}
    assert all(t["met"] == (t["value"] <= t["target"]) for t in targets.values())
