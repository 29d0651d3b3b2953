"""Reading results back from hostile or damaged files: the short table of a run where nothing
succeeded, lines that are JSON but not rows, and cases whose rows were only partly written.

What a row is: bench/store/schema.py `row_problem`; the reader: bench/store/run_store.py `read_rows`.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from bench import cli
from bench.harness.cases import Case
from bench.report.table import short_table
from bench.store.jsonl import append_jsonl, read_jsonl
from bench.store.run_store import RunStore, load
from bench.store.schema import Metric, case_rows, to_frame, validate

REPO = Path(__file__).resolve().parent.parent
BASELINE = REPO / "results" / "baseline" / "ci"


def make_case(n_tokens: int, batch: int = 1, protocol: str = "steady", attn_impl: str | None = "eager") -> Case:
    return Case(model="test_ssast", family="ssast", size="test", n_tokens=n_tokens, frames=2 * n_tokens, batch=batch,
                dtype="float32", device="cpu", attn_impl=attn_impl, scan_impl=None, protocol=protocol)


def ok_rows(case: Case, latency: float = 0.01) -> list[dict]:
    metrics = [Metric("latency_s", stat, latency, "s", 5) for stat in ("median", "iqr", "mean", "min")]
    metrics += [Metric("peak_mem_bytes", "tensor_bytes", 1e6, "bytes"), Metric("flops", "value", 1e9, "flop")]
    return case_rows(case, run_id="r", env={}, status="ok", metrics=metrics)


def failed_rows(case: Case, status: str) -> list[dict]:
    return case_rows(case, run_id="r", env={}, status=status, error=f"{status} at {case.n_tokens} tokens")


def write_run(run_dir: Path, row_sets: list[list[dict]]) -> Path:
    for rows in row_sets:
        append_jsonl(run_dir / "results.jsonl", rows)  # one write per case, as the harness does
    return run_dir


def stderr_lines(captured) -> list[str]:
    return [ln for ln in captured.err.splitlines() if ln.strip()]


# --- 1. the short table of a run in which no case succeeded ---------------------------------------

FAILED_STATUSES = {"oom": "OOM", "timeout": "T/O", "error": "ERR", "skipped_after_oom": "skip",
                   "skipped_after_timeout": "skip"}


def test_short_table_of_a_run_where_nothing_succeeded(tmp_path, capsys):
    sets = [failed_rows(make_case(64 * (i + 1)), status) for i, status in enumerate(FAILED_STATUSES)]
    text = short_table(to_frame([r for rows in sets for r in rows]))
    lines = text.splitlines()
    body = next(ln for ln in lines if ln.startswith("test_ssast eager"))
    assert body.split()[2:] == list(FAILED_STATUSES.values())
    assert "none recorded" in text  # no memory measured: the memory block says so
    run = write_run(tmp_path / "run", sets)
    assert cli.main(["table", str(run)]) == 0
    assert capsys.readouterr().out.strip() == text


def test_short_table_with_some_ok_and_duplicated_labels(tmp_path):
    """Two series that print the same label (scan_impl_requested differs, scan_impl is the same) and a
    paper case: every cell is filled, nothing raises."""
    a, b = make_case(64), make_case(128, protocol="paper")
    rows = ok_rows(a) + failed_rows(b, "oom") + ok_rows(make_case(64, attn_impl="sdpa"))
    dup = [dict(r, case_id="f" * 16, attempt_id="x") for r in ok_rows(a, latency=0.02)]
    text = short_table(to_frame(rows + dup))
    assert "OOM" in text and "0.01" in text


@pytest.mark.slow
def test_sweep_where_every_case_runs_out_of_memory(tmp_path, capsys):
    """The ci sweep under a 1 MiB cap: no case succeeds (oom, or error where a library fails to load
    under the cap); the sweep still ends with exit 0 and prints its table, every cell a status."""
    run = tmp_path / "run"
    code = cli.main(["sweep", "ci", "--set", "memory_cap=1MiB", "--out", str(run), "--quiet"])
    out = capsys.readouterr().out
    assert code == 0
    statuses = set(load(run).query("metric == 'status'")["status"])
    assert statuses and "ok" not in statuses
    cells = [ln.split()[-3:] for ln in out.splitlines() if ln.startswith("test_")]
    assert len(cells) == 12 and all(set(c) <= set(FAILED_STATUSES.values()) for c in cells), out


# --- 2. lines that are JSON but not rows ------------------------------------------------------------

NOT_ROWS = ["42", "null", "[]", '{"case_id": "zz"}', '"text"', "{not json", '{"metric": "status"}']


def test_lines_that_are_not_rows_are_skipped_with_one_warning(tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(BASELINE, run)
    clean = load(run)
    n_lines = len((run / "results.jsonl").read_text().splitlines())
    with open(run / "results.jsonl", "ab") as f:
        f.write(("\n".join(NOT_ROWS) + "\n").encode() + b"\xff\xfe binary \x00\n")
    capsys.readouterr()
    got = load(run)
    err = stderr_lines(capsys.readouterr())
    assert len(err) == 1 and err[0].startswith("warning: ") and str(run / "results.jsonl") in err[0], err
    bad = range(n_lines + 1, n_lines + len(NOT_ROWS) + 2)
    assert all(str(n) in err[0] for n in bad), err
    pd.testing.assert_frame_equal(got.reset_index(drop=True), clean.reset_index(drop=True))
    assert cli.main(["table", str(run)]) == 0
    assert len(stderr_lines(capsys.readouterr())) <= 1


def test_rows_with_values_of_the_wrong_type_are_not_rows(tmp_path, capsys):
    good = ok_rows(make_case(64))
    bad_values = [{"value": "fast"}, {"n_tokens": 2**70}, {"n_tokens": 1.5}, {"batch": True}, {"value": 10**400},
                  {"git_dirty": "yes"}, {"status": "great"}, {"model": None}, {"case_id": 7},
                  {"attempt_rows": 0}, {"attempt_rows": -3}]
    path = tmp_path / "results.jsonl"
    append_jsonl(path, good)
    lines = [json.dumps(dict(good[0], attempt_id=f"bad{i}", **change)) for i, change in enumerate(bad_values)]
    with open(path, "a") as f:
        f.write("\n".join(lines) + "\n")
    df = load(path)
    assert validate(df) == []
    assert set(df["attempt_id"]) == {good[0]["attempt_id"]}
    err = stderr_lines(capsys.readouterr())
    assert len(err) == 1 and f"{len(bad_values)} line(s)" in err[0], err


def test_a_torn_last_line_is_skipped_quietly(tmp_path, capsys):
    path = tmp_path / "results.jsonl"
    append_jsonl(path, ok_rows(make_case(64)))
    with open(path, "a") as f:
        f.write('{"schema_version": 1, "run_id": "to')  # a write in flight, or cut short by a kill
    assert len(load(path)) == len(ok_rows(make_case(64)))
    assert capsys.readouterr().err == ""
    append_jsonl(path, ok_rows(make_case(128)))  # the next write starts on a fresh line
    assert len(load(path)) == 2 * len(ok_rows(make_case(64)))


def test_sweep_resumes_over_lines_that_are_not_rows(tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(BASELINE, run)
    with open(run / "results.jsonl", "a") as f:
        f.write("\n".join(NOT_ROWS) + "\n")
    assert cli.main(["sweep", "ci", "--out", str(run), "--quiet", "--no-table"]) == 0
    err = capsys.readouterr().err
    assert "0 to run" in err
    assert len([ln for ln in err.splitlines() if ln.startswith("warning:") and "results.jsonl" in ln]) == 1


def test_every_reader_of_record_files_skips_non_objects(tmp_path, capsys):
    path = tmp_path / "events.jsonl"
    path.write_bytes(b'{"event": "a"}\n42\n[1]\n\xff\n{"event": "b"}\n')
    assert read_jsonl(path) == [{"event": "a"}, {"event": "b"}]
    err = stderr_lines(capsys.readouterr())
    assert len(err) == 1 and "lines 2, 3, 4 (" in err[0] and str(path) in err[0], err


# --- 3. cases whose rows were only partly written --------------------------------------------------

def test_case_with_only_some_rows_is_not_finished(tmp_path, capsys):
    a, b, c = make_case(64), make_case(128), make_case(192)
    rows_a, rows_b, rows_c = ok_rows(a), ok_rows(b), failed_rows(c, "oom")
    assert {r["attempt_rows"] for r in rows_a} == {len(rows_a)}
    assert {r["attempt_rows"] for r in rows_c} == {1}
    path = tmp_path / "run" / "results.jsonl"
    append_jsonl(path, rows_a)
    append_jsonl(path, rows_b[:1])  # only the status row of b survived
    append_jsonl(path, rows_c)
    store = RunStore(path.parent)
    capsys.readouterr()
    assert store.statuses() == {a.case_id: "ok", c.case_id: "oom"}
    err = stderr_lines(capsys.readouterr())
    assert len(err) == 1 and b.case_id in err[0] and "1 of" in err[0], err
    assert set(load(path.parent)["case_id"]) == {a.case_id, c.case_id}


def test_an_unfinished_retry_falls_back_to_the_finished_attempt(tmp_path):
    a = make_case(64)
    first, retry = failed_rows(a, "error"), ok_rows(a)
    path = tmp_path / "results.jsonl"
    append_jsonl(path, first)
    append_jsonl(path, retry[:3])  # the retry was cut short
    df = load(path)
    assert set(df["attempt_id"]) == {first[0]["attempt_id"]} and list(df["status"]) == ["error"]


def test_rows_without_attempt_rows_count_as_complete(tmp_path):
    """Rows written before the column existed (the committed reference and baseline runs)."""
    rows = [{k: v for k, v in r.items() if k != "attempt_rows"} for r in ok_rows(make_case(64))]
    path = tmp_path / "results.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows[:2]))
    assert len(load(path)) == 2
    assert validate(load(BASELINE)) == []


def test_resume_reruns_a_case_with_missing_rows(ci_run_dir, tmp_path, capsys):
    """A crash that kept only the status row of a case (and a later case complete): the resume runs
    that case again and only it."""
    run = tmp_path / "partial"
    shutil.copytree(ci_run_dir, run)
    rows = read_jsonl(run / "results.jsonl")
    victim = rows[-1]["case_id"]
    kept = [r for r in rows if r["case_id"] != victim or r["metric"] == "status"]
    (run / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in kept))
    assert cli.main(["sweep", "ci", "--out", str(run), "--quiet", "--no-table"]) == 0
    err = capsys.readouterr().err
    assert "26 already recorded, 1 to run" in err
    assert any(ln.startswith("warning:") and victim in ln for ln in err.splitlines()), err
    events = read_jsonl(run / "events.jsonl")
    last_session = max(i for i, e in enumerate(events) if e["event"] == "session_start")
    assert [e["case_id"] for e in events[last_session:] if e["event"] == "case_start"] == [victim]
    assert validate(load(run)) == []
