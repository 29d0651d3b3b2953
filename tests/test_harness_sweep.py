"""End to end through the real CLI: the ci sweep and its tables, failures as rows, resume.

Child processes are spawned and re-import torch (seconds each), so the sweeps here are few and
shared: the session's ci sweep (tests/conftest.py, 2 children), one failure sweep (2 children), one
resume (1 child).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from bench import cli
from bench.harness.cases import run_order
from bench.harness.config import load_config
from bench.harness.expand import expand
from bench.report.table import short_table
from bench.store.jsonl import read_jsonl
from bench.store.run_store import RunStore, latest_attempts, load
from bench.store.schema import COLUMNS, validate

REPO = Path(__file__).resolve().parent.parent
PLUGIN = REPO / "tests" / "harness_models.py"

FAST_STEADY = """
[steady]
warmup_min = 2
warmup_max = 4
min_repeats = 3
max_repeats = 5
min_time_s = 0.0
max_time_s = 1.0
"""


def status_rows(path) -> pd.DataFrame:
    df = load(path)
    return df[df["metric"] == "status"].set_index("n_tokens")


def events(run_dir: Path) -> list[dict]:
    return read_jsonl(run_dir / "events.jsonl")


def sessions(run_dir: Path) -> list[list[dict]]:
    """events.jsonl split at each session_start."""
    out = []
    for e in events(run_dir):
        if e["event"] == "session_start":
            out.append([])
        out[-1].append(e)
    return out


@pytest.fixture()
def ci_run(ci_run_dir):
    """The session's ci sweep (tests/conftest.py); read-only here."""
    return ci_run_dir


def test_ci_sweep_writes_a_valid_table(ci_run, capsys):
    for name in ("results.jsonl", "results.csv", "results.parquet", "samples.jsonl", "env.json", "events.jsonl",
                 "run.json"):
        assert (ci_run / name).is_file(), name
    df = pd.read_parquet(ci_run / "results.parquet")
    assert list(df.columns) == list(COLUMNS)
    assert validate(df) == []
    assert validate(load(ci_run / "results.csv")) == []
    cases = expand(load_config("ci"))
    assert set(df["case_id"]) == {c.case_id for c in cases}
    assert (df[df["metric"] == "status"]["status"] == "ok").all()
    env = json.loads((ci_run / "env.json").read_text())
    for key in ("git_sha", "git_dirty", "torch_version", "timm_version", "cpu_model", "threads", "tf32_matmul",
                "tf32_cudnn", "driver_version", "cuda_version", "host"):
        assert key in env
    assert (df["threads"] == 1).all() and df["torch_version"].notna().all()
    assert set(df.loc[df["family"] == "ssamba", "scan_impl"]) - {"auto"}  # the concrete backend is recorded
    assert (df.loc[df["family"] == "ssamba", "scan_impl_requested"] == "auto").all()


def test_ci_sweep_has_both_protocols_metrics(ci_run):
    df = pd.read_parquet(ci_run / "results.parquet")
    steady, paper = df[df["protocol"] == "steady"], df[df["protocol"] == "paper"]
    for part, stats in ((steady, {"median", "iqr", "p10", "p90"}), (paper, {"mean"})):
        for case_id, rows in part.groupby("case_id"):
            lat = rows[rows["metric"] == "latency_s"]
            assert stats <= set(lat["stat"]), case_id
            assert {"cpu_rss", "tensor_bytes"} <= set(rows.loc[rows["metric"] == "peak_mem_bytes", "stat"])
            assert len(rows[rows["metric"] == "latency_cold_s"]) == 1
            head = "median" if part is steady else "mean"
            (tput,) = rows.loc[(rows["metric"] == "throughput_tokens_per_s"), "value"]
            (lat_head,) = lat.loc[lat["stat"] == head, "value"]
            assert tput == pytest.approx(rows["batch"].iloc[0] * rows["n_tokens"].iloc[0] / lat_head)
    assert (paper.loc[(paper["metric"] == "latency_s") & (paper["stat"] == "mean"), "n_samples"] == 2).all()
    assert (steady.loc[(steady["metric"] == "latency_s") & (steady["stat"] == "median"), "n_samples"] >= 3).all()
    # Same model, same tokens: the deterministic tensor count agrees between the two protocols.
    mem = df[(df["metric"] == "peak_mem_bytes") & (df["stat"] == "tensor_bytes") & df["protocol"].isin(["steady", "paper"])]
    assert (mem.groupby(["model", "attn_impl", "n_tokens"], dropna=False)["value"].nunique() == 1).all()
    samples = read_jsonl(ci_run / "samples.jsonl")
    assert {"cold_s", "warmup_s", "samples_s"} <= set(next(s for s in samples if s["protocol"] == "steady"))
    assert {"runs_s", "build_s"} <= set(next(s for s in samples if s["protocol"] == "paper"))


def test_short_table(ci_run, capsys):
    text = short_table(load(ci_run))
    assert "test_ssast eager" in text and "test_ssast sdpa paper" in text and "tensor_bytes" in text
    assert cli.main(["table", str(ci_run)]) == 0
    assert capsys.readouterr().out.strip() == text


def test_rerun_into_the_same_dir_runs_nothing(ci_run, tmp_path, capsys):
    ci_run = shutil.copytree(ci_run, tmp_path / "again")
    before = len(read_jsonl(ci_run / "results.jsonl"))
    assert cli.main(["sweep", "ci", "--out", str(ci_run), "--quiet", "--no-table"]) == 0
    assert "27 already recorded, 0 to run" in capsys.readouterr().err
    assert len(read_jsonl(ci_run / "results.jsonl")) == before
    assert not [e for e in sessions(ci_run)[-1] if e["event"] in ("child_start", "case_start")]


def test_resume_after_a_kill_runs_only_the_missing_cases(ci_run, tmp_path, capsys):
    """The on-disk state a kill -9 leaves (the last cases absent, a torn last line) is resumed by
    running exactly the missing cases. The real kill is in test_real_kill_and_resume (slow)."""
    run_dir = tmp_path / "killed"
    shutil.copytree(ci_run, run_dir)
    cases = sorted(expand(load_config("ci")), key=run_order)
    missing = {c.case_id for c in cases if c.model == "test_ssast"}
    missing = {cid for cid in missing if cid in {c.case_id for c in cases[-2:]}}
    rows = [r for r in read_jsonl(run_dir / "results.jsonl") if r["case_id"] not in missing]
    text = "".join(json.dumps(r) + "\n" for r in rows) + '{"schema_version": 1, "run_id": "torn'
    (run_dir / "results.jsonl").write_text(text)

    assert cli.main(["sweep", "ci", "--out", str(run_dir), "--quiet", "--no-table"]) == 0
    last = sessions(run_dir)[-1]
    assert {e["case_id"] for e in last if e["event"] == "case_start"} == missing
    assert len([e for e in last if e["event"] == "child_start"]) == 1
    all_rows = read_jsonl(run_dir / "results.jsonl")
    status = [r for r in all_rows if r["metric"] == "status"]
    assert len(status) == len(cases) and len({r["case_id"] for r in status}) == len(cases)
    assert validate(pd.read_parquet(run_dir / "results.parquet")) == []
    assert len({r["run_id"] for r in all_rows}) == 1  # the resumed run keeps its id


def test_failures_become_rows_and_the_sweep_goes_on(tmp_path):
    """test_faulty (tests/harness_models.py) under a 48 MiB memory cap, two series in one unit:
    batch 1: 64..256 ok except 128 (raises: error), 2048 out of memory for real, 4096 skipped;
    batch 2: 192 kills its child (error), 256 hangs past the timeout, 2048/4096 skipped after it."""
    config = tmp_path / "faults.toml"
    config.write_text(f"""
name = "faults"
models = ["test_faulty"]
tokens = [64, 128, 192, 256, 2048, 4096]
batch = [1, 2]
protocol = "steady"
threads = 1
timeout_s = 4
memory_cap = "48MiB"
plugins = ["{PLUGIN}"]
{FAST_STEADY}""")
    run_dir = tmp_path / "run"
    assert cli.main(["sweep", str(config), "--out", str(run_dir), "--quiet", "--no-table"]) == 0
    df = load(run_dir)
    assert validate(df) == []
    st = df[df["metric"] == "status"].set_index(["batch", "n_tokens"])
    assert dict(st.loc[1, "status"]) == {64: "ok", 128: "error", 192: "ok", 256: "ok", 2048: "oom",
                                         4096: "skipped_after_oom"}
    assert dict(st.loc[2, "status"]) == {64: "ok", 128: "ok", 192: "error", 256: "timeout",
                                         2048: "skipped_after_timeout", 4096: "skipped_after_timeout"}
    assert "injected failure at 128 tokens" in st.loc[(1, 128), "error"]
    assert "can't allocate memory" in st.loc[(1, 2048), "error"]
    assert "2048 tokens out of memory" in st.loc[(1, 4096), "error"]
    assert "killed by SIGKILL" in st.loc[(2, 192), "error"]
    assert "per-case limit of 4 s" in st.loc[(2, 256), "error"]
    assert "256 tokens timed out" in st.loc[(2, 2048), "error"]
    assert (df["memory_cap_bytes"] == 48 * 2**20).all()
    ok_ids = set(st.loc[st["status"] == "ok", "case_id"])
    assert df.loc[df["case_id"].isin(ok_ids) & (df["metric"] == "latency_s"), "value"].notna().all()
    assert df.loc[~df["case_id"].isin(ok_ids), "metric"].eq("status").all()  # failed cases: the status row only
    # The child died at (2, 192); its successor was killed at the timeout (2, 256): two children.
    assert len([e for e in events(run_dir) if e["event"] == "child_start"]) == 2
    assert "injected failure" in (run_dir / "logs" / "test_faulty-cpu.log").read_text()


@pytest.mark.slow
def test_real_kill_and_resume(tmp_path):
    """kill -9 of the whole sweep (parent and child) mid-run; the resume runs only the rest."""
    config = tmp_path / "sleepy.toml"
    config.write_text(f"""
name = "sleepy"
models = ["test_sleep"]
tokens = [64, 128, 192, 256, 320, 384]
threads = 1
plugins = ["{PLUGIN}"]
{FAST_STEADY}""")
    run_dir = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "bench", "sweep", str(config), "--out", str(run_dir), "--quiet"],
                            cwd=REPO, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    store = RunStore(run_dir)
    deadline = time.monotonic() + 120
    while len(store.statuses()) < 2:
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = set(store.statuses())
    assert 2 <= len(done_before) < 6
    children = [e["pid"] for e in events(run_dir) if e["event"] == "child_start"]
    time.sleep(0.5)
    for pid in children:  # the child died with its parent
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]

    assert cli.main(["sweep", str(config), "--out", str(run_dir), "--quiet", "--no-table"]) == 0
    ran = {e["case_id"] for e in sessions(run_dir)[-1] if e["event"] == "case_start"}
    all_ids = {c.case_id for c in expand(load_config(config))}
    assert ran == all_ids - done_before
    latest = latest_attempts(read_jsonl(run_dir / "results.jsonl"))
    assert len([r for r in latest if r["metric"] == "status"]) == 6
    assert validate(load(run_dir)) == []
