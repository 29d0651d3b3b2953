"""The cluster executors (bench/harness/executors/) and `ssamba-bench collect`, through the real CLI.

submitit-local runs real jobs (subprocesses that re-import torch, seconds each); the Slurm path runs
submitit's real SlurmExecutor against a stand-in `sbatch` that only answers a job id, and the test
reads what would have been submitted: the sbatch script and the pickled job of each array task.
Against a real Slurm controller: tests/test_slurm.py.
"""

from __future__ import annotations

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
from bench.harness.cases import group_units
from bench.harness.config import load_config
from bench.harness.executors import submitit as cluster_executor
from bench.harness.executors.options import parse_time_min
from bench.harness.expand import expand
from bench.store.jsonl import read_jsonl
from bench.store.run_store import RunStore, case_statuses, latest_attempts, load
from bench.store.schema import COLUMNS, validate
from bench.store.shards import merge_shards

REPO = Path(__file__).resolve().parent.parent
PLUGIN = REPO / "tests" / "harness_models.py"


def statuses(run_dir: Path) -> dict[str, str]:
    df = load(run_dir)
    return dict(df.loc[df["metric"] == "status", ["case_id", "status"]].itertuples(index=False))


def test_submitit_local_matches_the_in_process_runner(ci_run_dir, tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert cli.main(["sweep", "ci", "--out", str(run_dir), "--executor", "submitit-local", "--max-parallel", "2",
                     "--quiet", "--no-table"]) == 0
    assert statuses(run_dir) == statuses(ci_run_dir)  # same cases, same statuses (values differ)
    df = pd.read_parquet(run_dir / "results.parquet")
    assert list(df.columns) == list(COLUMNS) and validate(df) == []
    assert df["host"].notna().all() and df["device_name"].notna().all()
    units = {u[0].unit_name for u in group_units(expand(load_config("ci")))}
    for unit in units:  # one shard per job, with the environment of the node it ran on
        assert (run_dir / "shards" / f"{unit}.jsonl").is_file()
        assert "host" in (run_dir / "shards" / f"{unit}.env.json").read_text()
    assert len(read_jsonl(run_dir / "samples.jsonl")) == len(statuses(run_dir))
    jobs = read_jsonl(run_dir / "shards" / "jobs.jsonl")
    assert {j["unit"] for j in jobs} == units and all(j["executor"] == "submitit-local" for j in jobs)
    capsys.readouterr()
    assert cli.main(["collect", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert "merged 0 new row(s)" in out and "27/27 cases have a final status: complete" in out
    # Resume across executors: the in-process runner finds everything recorded.
    assert cli.main(["sweep", "ci", "--out", str(run_dir), "--quiet", "--no-table"]) == 0
    assert "27 already recorded, 0 to run" in capsys.readouterr().err


def sleepy_config(tmp_path: Path) -> Path:
    """8 cases of one unit (one job), a second or so each."""
    config = tmp_path / "sleepy.toml"
    config.write_text(f"""
name = "sleepy"
models = ["test_sleep"]
tokens = [64, 128, 192, 256, 320, 384, 448, 512]
threads = 1
extra_metrics = []
plugins = ["{PLUGIN}"]
[steady]
warmup_min = 2
warmup_max = 4
min_repeats = 3
max_repeats = 8
min_time_s = 0.3
max_time_s = 1.0
""")
    return config


def start_sleepy_sweep(tmp_path: Path) -> tuple[subprocess.Popen, Path, Path]:
    """The sleepy sweep as a submitit-local job in a child process (to be killed mid-run), its run
    directory and its config."""
    config = sleepy_config(tmp_path)
    run_dir = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "bench", "sweep", str(config), "--out", str(run_dir),
                             "--executor", "submitit-local", "--quiet", "--no-table"],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return proc, run_dir, config


def test_a_killed_job_is_incomplete_and_the_rerun_runs_only_the_rest(tmp_path, capsys):
    proc, run_dir, config = start_sleepy_sweep(tmp_path)
    shard = run_dir / "shards" / "test_sleep-cpu.jsonl"
    deadline = time.monotonic() + 90
    while len(case_statuses(read_jsonl(shard))) < 2:
        assert time.monotonic() < deadline and proc.poll() is None, proc.stdout.read() if proc.poll() else ""
        time.sleep(0.05)
    (start,) = [e for e in read_jsonl(run_dir / "shards" / "test_sleep-cpu.events.jsonl") if e["event"] == "job_start"]
    os.kill(start["pid"], signal.SIGKILL)  # the job's own process, as a node failure or scancel would
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 1, output
    assert "failed" in output and "incomplete: test_sleep-cpu" in output
    done_before = set(case_statuses(read_jsonl(shard)))
    assert 2 <= len(done_before) < 8
    events = read_jsonl(run_dir / "shards" / "test_sleep-cpu.events.jsonl")
    for pid in [e["pid"] for e in events if e["event"] == "child_start"]:  # the measuring child died with its job
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]

    capsys.readouterr()
    assert cli.main(["collect", str(run_dir)]) == 1
    report = capsys.readouterr().out
    assert f"{len(done_before)}/8 cases have a final status" in report
    assert "its job did not finish" in report and "_log.out" in report and "test_sleep-cpu.log" in report

    assert cli.main(["sweep", str(config), "--out", str(run_dir), "--executor", "submitit-local",
                     "--quiet", "--no-table"]) == 0
    all_ids = {c.case_id for c in expand(load_config(config))}
    assert f"{len(done_before)} already recorded, {8 - len(done_before)} to run" in capsys.readouterr().err
    rerun = read_jsonl(run_dir / "shards" / "jobs.jsonl")[-1]
    assert set(rerun["cases"]) == all_ids - done_before
    latest = latest_attempts(read_jsonl(run_dir / "results.jsonl"))
    assert {r["case_id"] for r in latest if r["metric"] == "status"} == all_ids
    assert validate(load(run_dir)) == []
    assert cli.main(["collect", str(run_dir)]) == 0


def test_local_executor_a_child_killed_by_sigterm_is_still_an_error_row(tmp_path):
    """Only a cluster job stops on SIGTERM: in the local executor, a measuring child killed by a signal
    (the parent is not being stopped) is an `error` row, and the sweep goes on with the rest."""
    config = sleepy_config(tmp_path)
    run_dir = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "bench", "sweep", str(config), "--out", str(run_dir),
                             "--quiet", "--no-table"],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 90
    while not [e for e in read_jsonl(run_dir / "events.jsonl") if e["event"] == "case_start"]:
        assert time.monotonic() < deadline and proc.poll() is None, proc.stdout.read() if proc.poll() else ""
        time.sleep(0.05)
    (start,) = [e for e in read_jsonl(run_dir / "events.jsonl") if e["event"] == "case_start"][:1]
    os.kill(start["pid"], signal.SIGTERM)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, output
    rows = [r for r in latest_attempts(read_jsonl(run_dir / "results.jsonl")) if r["metric"] == "status"]
    errors = [r for r in rows if r["status"] == "error"]
    assert len(rows) == 8 and len(errors) == 1, rows  # the case the child was measuring when it was killed
    assert "killed by SIGTERM" in errors[0]["error"]


def test_a_sigterm_to_a_job_leaves_its_unrun_cases_missing(tmp_path, capsys):
    """What Slurm's scancel (or preemption) does: SIGTERM to every process of the job at once. The job
    stops at once; the case in flight and the rest stay missing (no `error` rows); a rerun runs them."""
    proc, run_dir, config = start_sleepy_sweep(tmp_path)
    events_path = run_dir / "shards" / "test_sleep-cpu.events.jsonl"
    deadline = time.monotonic() + 90
    while True:  # two cases recorded and the next one in flight
        events = read_jsonl(events_path)
        ends = [i for i, e in enumerate(events) if e["event"] == "case_end"]
        if len(ends) >= 2 and any(e["event"] == "case_start" for e in events[ends[1]:]):
            break
        assert time.monotonic() < deadline and proc.poll() is None, proc.stdout.read() if proc.poll() else ""
        time.sleep(0.05)
    job_pid = [e for e in events if e["event"] == "job_start"][-1]["pid"]
    child_pid = [e for e in events if e["event"] == "child_start"][-1]["pid"]
    for pid in (child_pid, job_pid):  # the child first: the job's own signal comes a moment later
        os.kill(pid, signal.SIGTERM)
    signalled = time.monotonic()
    output, _ = proc.communicate(timeout=60)
    assert time.monotonic() - signalled < 20, output  # at once, not after measuring the rest
    assert proc.returncode == 1, output
    assert "stopped by SIGTERM" in output and "incomplete: test_sleep-cpu" in output, output
    events = read_jsonl(events_path)
    assert [e["signal"] for e in events if e["event"] == "job_stopped"] == ["SIGTERM"]
    assert not [e for e in events if e["event"] in ("job_end",) or e.get("by") == "parent"], events
    done = case_statuses(read_jsonl(run_dir / "shards" / "test_sleep-cpu.jsonl"))
    assert 2 <= len(done) < 8 and set(done.values()) == {"ok"}, done

    capsys.readouterr()
    assert cli.main(["collect", str(run_dir)]) == 1
    report = capsys.readouterr().out
    assert f"{len(done)}/8 cases have a final status" in report
    assert "its job was stopped by SIGTERM" in report and "_log.out" in report and "_log.err" in report, report
    assert cli.main(["sweep", str(config), "--out", str(run_dir), "--executor", "submitit-local",
                     "--quiet", "--no-table"]) == 0
    assert f"{len(done)} already recorded, {8 - len(done)} to run" in capsys.readouterr().err
    assert cli.main(["collect", str(run_dir)]) == 0


@pytest.fixture()
def fake_slurm(tmp_path, monkeypatch):
    """`sbatch` that answers like Slurm and keeps nothing else; `srun` so submitit sees a cluster."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text('#!/bin/sh\necho "Submitted batch job 4242"\n')
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 1\n")
    for tool in ("sbatch", "srun"):
        (bin_dir / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return bin_dir


def test_slurm_submission_script_and_pickled_jobs(fake_slurm, tmp_path, capsys):
    from submitit.core.utils import DelayedSubmission

    run_dir = tmp_path / "run"
    assert cli.main(["sweep", "ci", "--out", str(run_dir), "--executor", "slurm", "--slurm-partition", "gpu",
                     "--slurm-gpus-per-job", "1", "--slurm-time", "02:00:00", "--slurm-cpus-per-task", "8",
                     "--slurm-constraint", "h100",
                     "--max-parallel", "1", "--no-wait", "--quiet", "--no-table"]) == 0
    assert f"ssamba-bench collect {run_dir}" in capsys.readouterr().err
    folder = run_dir / "submitit"
    script = (folder / "4242_submission.sh").read_text()
    units = group_units(expand(load_config("ci")))
    assert len(units) == 2
    for line in ("#SBATCH --array=0-1%1", "#SBATCH --partition=gpu", "#SBATCH --gpus-per-node=1",
                 "#SBATCH --time=120", "#SBATCH --cpus-per-task=8", "#SBATCH --nodes=1",
                 "#SBATCH --ntasks-per-node=1", "#SBATCH --job-name=ssamba-bench-ci", "#SBATCH --constraint=h100"):
        assert line in script.splitlines(), line
    assert f"{sys.executable} -u -m submitit.core._submit {folder.resolve()}" in script
    assert f"--output={folder.resolve()}/%A_%a_0_log.out" in script
    for index, unit in enumerate(units):  # each array task runs bench.harness.executors.submitit.run_job on its unit
        job = DelayedSubmission.load(folder / f"4242_{index}_submitted.pkl")
        assert job.function is cluster_executor.run_job
        job_run_dir, cases, settings, budget_s = job.args
        assert Path(job_run_dir) == run_dir.resolve() and cases == unit
        assert settings.run_id == "run" and settings.threads == 1 and settings.budget_deadline is None
    jobs = read_jsonl(run_dir / "shards" / "jobs.jsonl")
    assert [j["job_id"] for j in jobs] == ["4242_0", "4242_1"]
    assert cli.main(["collect", str(run_dir)]) == 1  # nothing ran: every case is missing, with its job's logs
    report = capsys.readouterr().out
    assert "0/27 cases have a final status" in report and "its job never started" in report
    # the job's logs are not written yet: said so, with where they will be; no child log is named
    assert "logs: none yet" in report and f"(not written: {folder.resolve()}/4242_0_0_log.out" in report
    assert "measuring child's log" not in report and "test_ssast-cpu.log" not in report


def test_a_waiting_slurm_sweep_ends_when_its_job_is_gone(fake_slurm, tmp_path):
    """Without accounting (sacct fails), a job that left the queue without a result is dead: the sweep
    ends with the missing-cases report instead of waiting forever."""
    (fake_slurm / "squeue").write_text("#!/bin/sh\nexit 0\n")  # the queue is empty: the job is gone
    (fake_slurm / "sacct").write_text('#!/bin/sh\necho "Slurm accounting storage is disabled" >&2\nexit 1\n')
    for tool in ("squeue", "sacct"):
        (fake_slurm / tool).chmod(0o755)
    run_dir = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "bench", "sweep", "ci", "--out", str(run_dir),
                             "--executor", "slurm", "--quiet", "--no-table"],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        output, _ = proc.communicate(timeout=90)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f"the sweep still waits for a job that is gone:\n{proc.communicate()[0]}")
    assert proc.returncode == 1, output
    assert "left the Slurm queue without starting" in output, output
    assert "0/27 cases have a final status" in output and "incomplete: test_ssast-cpu" in output, output
    assert "sacct" not in output  # the wait never asks accounting


def test_slurm_local_script_usage_and_root():
    script = REPO / "scripts" / "slurm_local.sh"
    usage = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=30)
    assert usage.returncode == 2 and "usage:" in usage.stderr
    as_user = ["runuser", "-u", "nobody", "--"] if os.geteuid() == 0 else []
    if as_user and shutil.which("runuser") is None:
        pytest.skip("runuser not found: cannot run the script as a non-root user")
    for verb in ("start", "stop"):
        out = subprocess.run([*as_user, "bash", str(script), verb], capture_output=True, text=True, timeout=30,
                             env={**os.environ, "SSAMBA_SLURM_DIR": "/nonexistent/ssamba-slurm"})
        assert out.returncode != 0 and out.stdout == ""
        assert out.stderr.strip().count("\n") == 0 and "needs root" in out.stderr and "sudo" in out.stderr, out




def test_slurm_options_need_the_slurm_executor(tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert cli.main(["sweep", "ci", "--out", str(run_dir), "--slurm-partition", "gpu"]) == 2
    assert "--slurm-partition only apply with --executor slurm" in capsys.readouterr().err
    assert cli.main(["sweep", "ci", "--out", str(run_dir), "--executor", "submitit-local",
                     "--slurm-time", "10"]) == 2
    assert not run_dir.exists()


def test_slurm_executor_without_sbatch_is_an_error(tmp_path, monkeypatch, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    run_dir = tmp_path / "run"
    assert cli.main(["sweep", "ci", "--out", str(run_dir), "--executor", "slurm"]) == 2
    assert "sbatch, srun and squeue not found on PATH" in capsys.readouterr().err
    assert cli.main(["sweep", "ci", "--out", str(run_dir), "--executor", "slurm", "--no-wait"]) == 2
    assert "sbatch and srun not found on PATH" in capsys.readouterr().err  # --no-wait does not ask the queue
    assert not run_dir.exists()


@pytest.mark.parametrize(("text", "minutes"), [("90", 90), ("02:00:00", 120), ("1-00:00:00", 1440),
                                               ("30:30", 31), ("00:10:01", 11), ("1-2", 1560)])
def test_slurm_time(text, minutes):
    assert parse_time_min(text) == minutes


def test_collect_needs_a_run_dir(tmp_path, capsys):
    assert cli.main(["collect", str(tmp_path)]) == 2
    assert "not a run directory" in capsys.readouterr().err


def test_merge_is_idempotent(tmp_path):
    from bench.harness.cases import Case
    from bench.store.jsonl import append_jsonl
    from bench.store.schema import case_rows

    store = RunStore(tmp_path)
    case = Case(model="test_ssast", family="ssast", size="test", n_tokens=64, frames=128, batch=1, dtype="float32",
                device="cpu", attn_impl="eager", scan_impl=None, protocol="steady")
    rows = case_rows(case, run_id="r", env={}, status="error", error="x")
    append_jsonl(tmp_path / "shards" / "u-cpu.jsonl", [*rows, {"not": "a row"}])  # only rows travel
    assert merge_shards(store) == 1
    assert merge_shards(store) == 0
    assert read_jsonl(store.results) == rows


def test_claims_refuse_to_pair_rows_of_different_device_models(ci_run_dir, tmp_path):
    """Jobs of the two families landed on different GPU models: no pairing, and the error says why."""
    from bench.report.claims import build_report
    from bench.store.jsonl import append_jsonl
    from models.errors import UserInputError

    rows = read_jsonl(ci_run_dir / "results.jsonl")
    for row in rows:
        if row["family"] != "ssast":
            row["device_name"] = "Other CPU"
    append_jsonl(tmp_path / "results.jsonl", rows)
    assert build_report([ci_run_dir])["comparisons"]  # the untouched run pairs
    with pytest.raises(UserInputError, match="different device models"):
        build_report([tmp_path])
    mixed = build_report([tmp_path], allow_mixed_devices=True)  # told to: pairs, naming both devices
    assert mixed["comparisons"] and mixed["mixed_devices"]
    assert all(c["device_name"] == "Other CPU" and c["device_name_ref"] != "Other CPU" for c in mixed["comparisons"])
