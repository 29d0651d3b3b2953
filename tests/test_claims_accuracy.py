"""The accuracy section of the claims report, from rows in the result schema (protocol "finetune"),
alone and next to benchmark rows; the accuracy pipeline itself is tested in test_accuracy.py."""

from __future__ import annotations

import json
import shutil
from types import SimpleNamespace

from bench.cli import main
from bench.store.jsonl import append_jsonl
from bench.store.schema import Metric, case_rows


def finetune_rows(model, family, task, init, scores, steps=40, train_time=12.5):
    case = SimpleNamespace(case_id=f"{abs(hash((model, task, init, steps))) % 16**16:016x}", model=model, family=family,
                           size="tiny", n_tokens=108, frames=98, batch=16, dtype="float32", device="cpu",
                           attn_impl=None, scan_impl=None, protocol="finetune")
    metrics = [Metric(name, "value", value, "fraction", n_samples=120, split=split)
               for split, (acc, f1) in scores.items() for name, value in (("accuracy", acc), ("macro_f1", f1))]
    metrics.append(Metric("train_time_s", "value", train_time, "s"))
    rows = case_rows(case, run_id="acc", env={}, status="ok", metrics=metrics)
    for row in rows:
        row.update(task=task, init=init, train_steps=steps)
    return rows


def write_accuracy_run(path):
    rows = []
    rows += finetune_rows("ssast_tiny", "ssast", "kws", "pretrained", {"val": (0.50, 0.45), "test": (0.40, 0.38),
                                                                       "digits-real": (0.20, 0.10)})
    rows += finetune_rows("ssamba_tiny", "ssamba", "kws", "pretrained", {"val": (0.55, 0.50), "test": (0.47, 0.44),
                                                                         "digits-real": (0.30, 0.20)})
    rows += finetune_rows("ssast_tiny", "ssast", "kws", "scratch", {"val": (0.30, 0.25), "test": (0.25, 0.20)})
    failed = SimpleNamespace(case_id="f" * 16, model="aum_tiny", family="aum", size="tiny", n_tokens=108, frames=98,
                             batch=16, dtype="float32", device="cpu", attn_impl=None, scan_impl=None,
                             protocol="finetune")
    failed_rows = case_rows(failed, run_id="acc", env={}, status="error", error="RuntimeError: boom")
    for row in failed_rows:
        row.update(task="kws", init="pretrained", train_steps=40)
    rows += failed_rows
    path.mkdir()
    append_jsonl(path / "results.jsonl", rows)
    return path


def test_accuracy_only_report(tmp_path, capsys):
    run = write_accuracy_run(tmp_path / "acc")
    assert main(["claims", str(run), "--quiet"]) == 0
    report = json.loads((run / "claims.json").read_text())
    assert "comparisons" not in report  # no benchmark rows: the efficiency sections are left out
    results = report["accuracy"]["results"]
    assert {(r["model"], r["init"], r["split"]) for r in results} >= {("ssamba_tiny", "pretrained", "digits-real")}
    pairs = {(p["init"], p["split"]): p for p in report["accuracy"]["pairs"]}
    assert set(pairs) == {("pretrained", "val"), ("pretrained", "test"), ("pretrained", "digits-real")}
    assert abs(pairs[("pretrained", "test")]["difference_points"] - 7.0) < 1e-9
    text = (run / "claims.md").read_text()
    assert "## Accuracy" in text and "| ssamba_tiny | pretrained | test | 0.470 | 0.440 | 120 | 40 x 16 | 12 s |" in text
    assert "+7.0 points" in text
    assert "- aum_tiny kws pretrained: RuntimeError: boom" in text  # a failed case is listed, not dropped


def test_accuracy_beside_benchmark_rows(ci_run_dir, tmp_path):
    bench_run = tmp_path / "bench"
    shutil.copytree(ci_run_dir, bench_run)
    acc = write_accuracy_run(tmp_path / "acc")
    assert main(["claims", str(bench_run), str(acc), "--quiet"]) == 0
    report = json.loads((bench_run / "claims.json").read_text())
    assert report["comparisons"] and report["accuracy"]["pairs"]
    # accuracy cases never enter the latency/memory comparisons
    assert not {c["case_id"] for c in report["comparisons"]} & {r["case_id"] for r in report["accuracy"]["results"]}
    text = (bench_run / "claims.md").read_text()
    assert text.index("## Every comparison") < text.index("## Accuracy")


def test_pairs_prefer_equal_steps_and_state_unequal_budgets(tmp_path):
    """SSAST at 600 and 3000 steps, SSAMBA at 600 and 1000: the 600-step SSAMBA case pairs only with
    the 600-step SSAST one; the 1000-step case (an equal-time run) pairs with each SSAST budget, and the
    report states both sides' steps and training time."""
    rows = []
    for family, steps, acc, secs in (("ssast", 600, 0.06, 550.0), ("ssast", 3000, 0.20, 2893.0),
                                     ("ssamba", 600, 0.33, 1658.0), ("ssamba", 1000, 0.40, 2800.0)):
        rows += finetune_rows(f"{family}_tiny", family, "kws", "pretrained", {"test": (acc, acc)}, steps=steps,
                              train_time=secs)
    run = tmp_path / "acc"
    run.mkdir()
    append_jsonl(run / "results.jsonl", rows)
    assert main(["claims", str(run), "--quiet"]) == 0
    pairs = json.loads((run / "claims.json").read_text())["accuracy"]["pairs"]
    assert sorted((p["train_steps"], p["train_steps_ref"]) for p in pairs) == [(600, 600), (1000, 600), (1000, 3000)]
    text = (run / "claims.md").read_text()
    assert "0.330 vs 0.060 (+27.0 points)" in text  # equal steps: no budget note
    assert "0.400 vs 0.200 (+20.0 points; 1000 vs 3000 steps, 2800 s vs 2893 s of training)" in text
