"""The CI performance gate: this checkout's ci sweep against the committed baseline (results/baseline/ci).

Gated, per bench/policies/ci.toml: deterministic metrics (parameters, FLOPs, predicted and live
tensor bytes), implementation columns, case statuses, and within-run ratios (SSAMBA over SSAST,
measured side by side). Raw latency and RSS are printed, not gated: shared runners are too noisy.
A deliberate change regenerates the baseline: `ssamba-bench baseline update`, then commit it.
"""

from pathlib import Path

from bench.report.compare import compare, load_policy, load_table, render

BASELINE = Path(__file__).resolve().parent.parent / "results" / "baseline" / "ci"


def test_ci_sweep_matches_the_committed_baseline(ci_run_dir):
    assert (BASELINE / "results.jsonl").exists(), f"no committed baseline at {BASELINE}: run `ssamba-bench baseline update`"
    verdicts = compare(load_table(BASELINE), load_table(ci_run_dir), load_policy("ci"))
    report = render(verdicts)
    print(report)
    gated = [v for v in verdicts if v.gated]
    assert not gated, report
    assert not [v for v in verdicts if v.verdict in ("MISSING", "NEW")], report
