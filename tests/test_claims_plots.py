"""The claims report and the figures, from a real (seconds-long) ci sweep."""

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from bench.cli import main

BASELINE = Path(__file__).resolve().parents[1] / "results" / "baseline" / "ci"  # a committed real ci run


@pytest.fixture()
def run_dir(ci_run_dir, tmp_path):
    target = tmp_path / "run"
    shutil.copytree(ci_run_dir, target)
    return target


def test_claims_report_numbers_trace_back_to_results_csv(run_dir, capsys):
    assert main(["claims", str(run_dir), "--quiet"]) == 0
    report = json.loads((run_dir / "claims.json").read_text())
    md = (run_dir / "claims.md").read_text()
    assert "92.7%" in md and "95.4%" in md
    assert "**Predictions** at 22,000 tokens" in md  # a CPU run never reaches 22k: predictions, labelled
    protocols = {c["protocol"] for c in report["comparisons"]}
    assert protocols == {"steady", "paper"}
    assert {c["attn_impl_ref"] for c in report["comparisons"]} == {"eager", "sdpa"}
    # Recompute one comparison from results.csv by hand.
    df = pd.read_csv(run_dir / "results.csv")
    comp = next(c for c in report["comparisons"] if c["protocol"] == "steady" and c["attn_impl_ref"] == "sdpa")

    def latency(case_id):
        rows = df[(df["case_id"] == case_id) & (df["metric"] == "latency_s") & (df["stat"] == "median")]
        return float(rows["value"].iloc[0])

    def memory(case_id):
        rows = df[(df["case_id"] == case_id) & (df["metric"] == "peak_mem_bytes") & (df["stat"] == comp["memory_kind"])]
        return float(rows["value"].iloc[0])

    ssamba, ssast = comp["case_id"], comp["case_id_ref"]
    assert comp["latency_reduction"] == pytest.approx(1 - latency(ssamba) / latency(ssast))
    assert comp["speedup"] == pytest.approx(latency(ssast) / latency(ssamba))
    assert comp["memory_reduction"] == pytest.approx(1 - memory(ssamba) / memory(ssast))
    preds = {(p["model"], p["attn_impl"]): p for p in report["predictions_at_paper_point"]}
    assert 40e9 <= preds[("ssast_tiny", "eager")]["peak_mem_bytes"] <= 50e9


def test_claims_needs_both_families(tmp_path, run_dir, capsys):
    only_ssast = tmp_path / "only_ssast"
    only_ssast.mkdir()
    lines = [ln for ln in (run_dir / "results.jsonl").read_text().splitlines() if '"family": "ssast"' in ln]
    (only_ssast / "results.jsonl").write_text("\n".join(lines) + "\n")
    assert main(["claims", str(only_ssast)]) == 2
    err = capsys.readouterr().err
    assert "no ok cases of another family" in err and "test_ssast" in err
    assert main(["claims", str(tmp_path / "missing")]) == 2
    assert "no results.jsonl" in capsys.readouterr().err


def test_plots_written(run_dir, capsys):
    assert main(["plot", str(run_dir)]) == 0
    names = {p.name for p in (run_dir / "figures").iterdir()}
    for stem in ("latency_vs_tokens_steady", "memory_vs_tokens_steady", "latency_loglog_steady",
                 "memory_loglog_steady", "ratios_vs_tokens_steady", "latency_vs_tokens_paper"):
        assert f"{stem}.png" in names and f"{stem}.svg" in names
    assert all((run_dir / "figures" / n).stat().st_size > 5000 for n in names if n.endswith(".png"))


def test_reference_copy_with_only_results_csv(run_dir, tmp_path, capsys):
    # results/reference/ keeps a run's results.csv, not its results.jsonl: claims and figures still work
    main(["claims", str(run_dir), "--quiet"])
    copy = tmp_path / "reference"
    copy.mkdir()
    shutil.copy(run_dir / "results.csv", copy / "results.csv")
    assert main(["claims", str(copy), "--quiet"]) == 0
    original = json.loads((run_dir / "claims.json").read_text())
    assert json.loads((copy / "claims.json").read_text())["comparisons"] == original["comparisons"]
    assert main(["plot", str(copy)]) == 0


def test_series_keep_their_colour_across_panels():
    from bench.report.plots import series_colors

    colors = series_colors(["ssast (eager)", "ssamba (triton)", "ssast (eager)", "aum (triton)"])
    assert list(colors) == ["aum (triton)", "ssamba (triton)", "ssast (eager)"]
    assert len(set(colors.values())) == 3
    assert series_colors(["ssamba (triton)", "ssast (eager)", "aum (triton)"]) == colors


def test_each_scan_backend_is_its_own_comparison(tmp_path, capsys):
    """SSAMBA measured with two scan kernels in one run (triton and mamba_ssm on a GPU): every report keeps
    them apart (claims tables, crossovers, compare's ratio verdicts, the ratio figure), never averaged."""
    from bench.report.claims import build_report
    from bench.report.compare import _ratio_verdicts
    from bench.report.plots import _ratio_plot

    rows = [json.loads(line) for line in (BASELINE / "results.jsonl").read_text().splitlines()]
    twins = []
    for row in rows:
        if row["family"] == "ssamba":
            twin = {**row, "case_id": row["case_id"] + "_t", "attempt_id": row["attempt_id"] + "_t", "scan_impl": "triton"}
            if twin["metric"] == "latency_s" and twin["value"] is not None:
                twin["value"] *= 3  # a slower kernel: 3x the latency
            twins.append(twin)
    run = tmp_path / "two_scans"
    run.mkdir()
    (run / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows + twins))
    report = build_report([run], predict=False)
    by_scan = {}
    for c in report["comparisons"]:
        by_scan.setdefault(c["scan_impl"], {})[(c["protocol"], c["attn_impl_ref"], c["n_tokens"])] = c["speedup"]
    assert set(by_scan) == {"cpu_cpp", "triton"}
    for key, speedup in by_scan["cpu_cpp"].items():
        assert by_scan["triton"][key] == pytest.approx(speedup / 3)
    assert len({(c["scan_impl"], c["attn_impl_ref"], c["protocol"]) for c in report["crossovers"]}) == 8
    assert main(["claims", str(run), "--no-predictions", "--quiet"]) == 0
    md = (run / "claims.md").read_text()
    for scan in ("cpu_cpp", "triton"):
        assert f"### ssamba (scan `{scan}`) vs SSAST (`eager`)" in md
    df = pd.read_json(run / "results.jsonl", lines=True)
    verdicts = _ratio_verdicts(df, df, {"tolerance": 1.25})
    assert {v.case.split(" / ")[0] for v in verdicts} == {"ssamba_test [cpu_cpp]", "ssamba_test [triton]"}
    fig = _ratio_plot(pd.DataFrame(report["comparisons"]), "two scans")
    labels = {line.get_label() for line in fig.axes[0].get_lines() if not line.get_label().startswith("_")}
    assert "test: ssamba (triton) / ssast (eager)" in labels and "test: ssamba (cpu_cpp) / ssast (eager)" in labels


def test_a_case_in_two_runs_is_one_clear_error(capsys):
    """The same config swept twice (here under two cpu_allocator settings) gives the same case ids: one
    report per run, not a deep pandas error."""
    runs = [str(BASELINE.parents[1] / "reference" / "cpu-2core-amd-epyc-allocator" / m) for m in ("glibc", "retain")]
    assert main(["claims", *runs, "--no-predictions", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "is in both" in err and "make one report per run" in err and "Traceback" not in err
