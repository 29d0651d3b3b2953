"""The accuracy section of the claims report, from rows in the result schema (protocol "finetune"),
alone and next to benchmark rows; the accuracy pipeline itself is tested in test_accuracy.py."""

from __future__ import annotations

import json
import shutil
from types import SimpleNamespace

import pytest

from bench.cli import main
from bench.report import claims_accuracy
from bench.store.jsonl import append_jsonl
from bench.store.schema import Metric, case_rows


def finetune_rows(model, family, task, init, scores, steps=40, train_time=12.5, **columns):
    case = SimpleNamespace(case_id=f"{abs(hash((model, task, init, steps))) % 16**16:016x}", model=model, family=family,
                           size="tiny", n_tokens=108, frames=98, batch=16, dtype="float32", device="cpu",
                           attn_impl=None, scan_impl=None, protocol="finetune")
    metrics = [Metric(name, "value", value, "fraction", n_samples=120, split=split)
               for split, (acc, f1) in scores.items() for name, value in (("accuracy", acc), ("macro_f1", f1))]
    metrics.append(Metric("train_time_s", "value", train_time, "s"))
    rows = case_rows(case, run_id="acc", env={}, status="ok", metrics=metrics)
    for row in rows:
        row.update(task=task, init=init, train_steps=steps, **columns)
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


# --- chance-level numbers are never results; a pipeline check is labelled, with the reference beside it


def _accuracy_table_lines(text: str) -> list[tuple[str, list[str]]]:
    """(heading, cells) of every table row of the report's accuracy section and reference section whose
    cells hold an accuracy, with the task heading above it."""
    out, heading = [], ""
    for line in text[text.index("## Accuracy"):].splitlines():
        if line.startswith("#"):
            heading = line
        elif line.startswith("| ") and not line.startswith(("| model", "| task")):
            out.append((heading, [c.strip() for c in line.strip("|").split("|")]))
    return out


def _assert_no_chance_level_result(text: str) -> int:
    """Every accuracy in a table of the report that is below 3x chance is marked as not a result; returns
    how many such rows there were. The bar is read from the row (reference tables) or its task heading."""
    marked = 0
    for heading, cells in _accuracy_table_lines(text):
        if cells[0].split(" (")[0] in claims_accuracy.TASK_CLASSES and "(" in cells[0]:  # reference: task (chance)
            bar, acc = 3 * float(cells[0].split("(")[1].rstrip(")")), float(cells[3])
        else:  # "### task (chance 0.100, 3x chance 0.300)"
            bar, acc = float(heading.split("3x chance ")[1].rstrip(")")), float(cells[3])
        if acc < bar:
            assert "not a result" in cells[-1] or "not evidence of learning" in cells[-1], (heading, cells)
            marked += 1
        else:
            assert "not" not in cells[-1], (heading, cells)
    return marked


def write_pipeline_check_run(path, ssamba_test=0.11):
    """The main job's accuracy_ci shape: kws10 (10 classes), both models pretrained and scratch, 30 steps."""
    rows = []
    for family in ("ssast", "ssamba"):
        for init in ("pretrained", "scratch"):
            test = ssamba_test if family == "ssamba" else 0.10
            rows += finetune_rows(f"{family}_tiny", family, "kws10", init, {"val": (0.10, 0.02), "test": (test, 0.03)},
                                  steps=30, train_time=15.0, purpose="pipeline_check", n_classes=10)
    path.mkdir()
    append_jsonl(path / "results.jsonl", rows)
    config = {"name": "accuracy_ci", "models": ["ssast", "ssamba"], "size": "tiny", "tasks": ["kws10"],
              "inits": ["pretrained", "scratch"], "purpose": "pipeline_check", "pretrain": {"steps": 20, "batch": 16},
              "finetune": {"steps": 30, "batch": 16}}
    (path / "run.json").write_text(json.dumps({"run_id": "acc", "config_name": "accuracy_ci", "config": config}))
    return path


def test_pipeline_check_is_labelled_and_shown_beside_the_committed_reference(tmp_path):
    run = write_pipeline_check_run(tmp_path / "acc")
    assert main(["claims", str(run), "--quiet"]) == 0
    report = json.loads((run / "claims.json").read_text())["accuracy"]
    assert report["pipeline_check"] is True
    assert {r["purpose"] for r in report["results"]} == {"pipeline_check"}
    assert report["pairs"] == []  # differences between chance-level numbers are never reported
    assert all(r["learned"] is False and abs(r["chance"] - 0.1) < 1e-12 for r in report["results"])
    # the committed reference runs, read from results/reference/ with their machine and budget
    ref = {b["title"]: b for b in report["reference"]}
    assert all(not b.get("missing") for b in ref.values())
    table = next(b for b in ref.values() if "results/reference/accuracy-table-cpu-2core" in b["dirs"])
    assert table["machine"] == "AMD EPYC" and table["threads"] == [2] and table["measured"].startswith("2026-")
    assert {(r["model"], r["task"], r["init"]) for r in table["results"]} >= {("ssamba_tiny", "kws", "pretrained"),
                                                                          ("ssast_tiny", "events", "scratch")}
    assert {r["split"] for r in table["results"]} == {"test"}
    equal_time = next(b for b in ref.values() if "results/reference/accuracy-kws-equal-time-cpu-2core" in b["dirs"])
    assert sorted((r["model"], r["train_steps"]) for r in equal_time["results"]) == [("ssamba_tiny", 1000),
                                                                                      ("ssast_tiny", 3000)]

    text = (run / "claims.md").read_text()
    assert "**The accuracy run here is a pipeline check, not a result.**" in text
    assert "kws10: fine-tuning 30 steps x 16 clips per case, 4 cases, 60 s of fine-tuning in all" in text
    assert ("Config `accuracy_ci` (its run.json): ssast, ssamba tiny on kws10, pretrained and scratch, masked-patch "
            "pretraining 20 steps x 16 clips, fine-tuning 30 steps x 16 clips.") in text  # its budget, plainly
    assert "No model reached 3x chance on test within this budget." in text
    assert "### kws10 (chance 0.100, 3x chance 0.300)" in text
    assert "Against SSAST" not in text
    assert "## Reference accuracy (committed results, not measured by this run)" in text
    assert "Source: `results/reference/accuracy-table-cpu-2core/`" in text and "Machine: AMD EPYC CPU, 2 threads" in text
    assert text.index("pipeline check, not a result") < text.index("## Reference accuracy")
    assert "| kws (0.029) | ssamba_tiny | pretrained | 0.543 | 0.542 | 1000 x 32 | 2770 s | 19.0x |" in text
    # every pipeline-check row says so, and no chance-level number anywhere reads as a result
    check_rows = [cells for heading, cells in _accuracy_table_lines(text) if heading.startswith("### kws10")]
    assert len(check_rows) == 8 and all(cells[-1].endswith("pipeline check, not a result") for cells in check_rows)
    assert _assert_no_chance_level_result(text) >= 8 + 4  # the check's rows, SSAST's 600-step kws rows and more


def test_pipeline_check_with_one_model_learning_shows_the_mixed_outcome(tmp_path):
    run = write_pipeline_check_run(tmp_path / "acc", ssamba_test=0.45)
    assert main(["claims", str(run), "--quiet"]) == 0
    results = json.loads((run / "claims.json").read_text())["accuracy"]["results"]
    assert {(r["family"], r["learned"]) for r in results if r["split"] == "test"} == {("ssast", False),
                                                                                      ("ssamba", True)}
    text = (run / "claims.md").read_text()
    assert "ssamba_tiny pretrained, ssamba_tiny scratch still reached >= 3x chance on test" in text
    assert "No model reached" not in text
    assert "| ssamba_tiny | scratch | test | 0.450 | 0.030 | 120 | 30 x 16 | 15 s | 4.5x (>= 3x chance within the " \
           "pipeline check's budget) |" in text
    assert "| ssast_tiny | scratch | test | 0.100 | 0.030 | 120 | 30 x 16 | 15 s | 1.0x: pipeline check, not a result |" \
           in text
    _assert_no_chance_level_result(text)


def test_result_rows_below_3x_chance_are_marked_and_their_pairs_say_so(tmp_path):
    """A real result run (no purpose column: rows written before it existed) with SSAST at 2.1x chance on
    kws: its row and its pair are marked; no reference table is added to a result run."""
    rows = finetune_rows("ssast_tiny", "ssast", "kws", "pretrained", {"test": (0.06, 0.05)}, steps=600)
    rows += finetune_rows("ssamba_tiny", "ssamba", "kws", "pretrained", {"test": (0.33, 0.30)}, steps=600)
    run = tmp_path / "acc"
    run.mkdir()
    append_jsonl(run / "results.jsonl", rows)
    assert main(["claims", str(run), "--quiet"]) == 0
    section = json.loads((run / "claims.json").read_text())["accuracy"]
    assert section["pipeline_check"] is False and "reference" not in section
    text = (run / "claims.md").read_text()
    assert "| ssast_tiny | pretrained | test | 0.060 | 0.050 | 120 | 600 x 16 | 12 s | 2.1x: below 3x chance, not " \
           "evidence of learning |" in text
    assert "| ssamba_tiny | pretrained | test | 0.330 | 0.300 | 120 | 600 x 16 | 12 s | 11.6x |" in text
    assert ("0.330 vs 0.060 (+27.0 points); ssast_tiny below 3x chance at this budget, not evidence of learning"
            in text)
    assert "Reference accuracy" not in text and "pipeline check" not in text
    assert _assert_no_chance_level_result(text) == 1


def test_chance_comes_from_the_rows_classes_before_the_task_table(tmp_path):
    """A --small kws10 build has fewer classes than the full task: the row's n_classes decides chance."""
    rows = finetune_rows("ssast_tiny", "ssast", "kws10", "scratch", {"test": (0.60, 0.5)}, n_classes=4)
    run = tmp_path / "acc"
    run.mkdir()
    append_jsonl(run / "results.jsonl", rows)
    assert main(["claims", str(run), "--quiet"]) == 0
    (r,) = json.loads((run / "claims.json").read_text())["accuracy"]["results"]
    assert r["chance"] == 0.25 and r["learned"] is False  # 2.4x chance of 4 classes, not 6x of 10
    assert "### kws10 (chance 0.250, 3x chance 0.750)" in (run / "claims.md").read_text()


def test_missing_reference_runs_are_named_not_raised(tmp_path):
    blocks = claims_accuracy.reference_accuracy(root=tmp_path)
    assert len(blocks) == len(claims_accuracy.REFERENCE_ACCURACY) and all(b["missing"] for b in blocks)
    text = "\n".join(claims_accuracy.render_reference(blocks))
    assert "Not found in this checkout: `results/reference/accuracy-table-cpu-2core/results.jsonl`" in text


@pytest.mark.parametrize("src", claims_accuracy.REFERENCE_ACCURACY, ids=lambda s: s["title"])
def test_reference_sources_are_committed_runs(src):
    for d in src["dirs"]:
        assert (claims_accuracy.REPO_ROOT / d / "results.jsonl").is_file()
        assert (claims_accuracy.REPO_ROOT / d / "config.toml").is_file()
