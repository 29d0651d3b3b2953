"""The `--executor slurm` path against a real Slurm controller, through the real CLI.

Runs by default wherever a controller answers (`sinfo` shows an idle node): on a cluster's login
node, or on one machine after `sudo scripts/slurm_local.sh start` (`./run_all.sh test` starts it
when run as root). Elsewhere the whole module skips, saying why. Checked here: the ci sweep through
Slurm gives the in-process run's statuses; a job cancelled with `scancel` leaves its unrun cases
(and the one in flight) missing, and a rerun runs them; a job killed with kill -9 is reported by
`collect` with its logs; a waiting sweep whose job died, with accounting (sacct) off, ends with the
missing-cases report instead of waiting forever. A few minutes on 2 cores.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench import cli
from bench.store.jsonl import read_jsonl
from bench.store.run_store import case_statuses, load

pytestmark = pytest.mark.slurm

REPO = Path(__file__).resolve().parent.parent
LOCAL_CONF = Path(os.environ.get("SSAMBA_SLURM_DIR", "/tmp/ssamba-slurm")) / "etc" / "slurm.conf"
UNIT = "test_ssamba-cpu"
# One unit (one job) of 3 steady cases, each at least 2 s: long enough to cancel or kill mid-way.
SLOW = ["--set", 'models=["test_ssamba"]', "--set", 'protocol=["steady"]', "--set", "steady.min_time_s=2",
        "--set", "steady.max_time_s=3", "--set", "steady.max_repeats=100000"]
WAIT_S = 180  # the longest any one step may take on a busy 2-core machine; nothing waits unbounded
_SWEEPS: list[subprocess.Popen] = []  # sweeps started by the running test, killed if it fails midway


def _sinfo_problem() -> str | None:
    """Why `sinfo` shows no node that takes jobs, or None when it does."""
    try:
        out = subprocess.run(["sinfo", "--noheader", "--responding", "--format=%T"], capture_output=True,
                             text=True, timeout=20)
    except subprocess.TimeoutExpired:
        return "sinfo did not answer within 20 s"
    if out.returncode != 0:
        return f"sinfo failed: {(out.stderr.strip().splitlines() or ['exit ' + str(out.returncode)])[-1]}"
    if not any(state.startswith(("idle", "mixed")) for state in out.stdout.split()):
        return f"no idle node (sinfo: {' '.join(out.stdout.split()) or 'no responding node'})"
    return None


def _controller_problem() -> str | None:
    """Why no Slurm controller can run jobs here, or None when one answers with an idle node."""
    if shutil.which("sinfo") is None or shutil.which("sbatch") is None:
        return "sinfo/sbatch not on PATH"
    problem = _sinfo_problem()
    if problem and "SLURM_CONF" not in os.environ and LOCAL_CONF.exists():
        os.environ["SLURM_CONF"] = str(LOCAL_CONF)  # scripts/slurm_local.sh's cluster, beside another config
        if _sinfo_problem() is None:
            return None
        del os.environ["SLURM_CONF"]
    return problem


_PROBLEM = _controller_problem()
if _PROBLEM:
    pytest.skip(f"no Slurm controller answers ({_PROBLEM}); "
                + (os.environ.get("SSAMBA_SLURM_SKIP_REASON") or "as root, scripts/slurm_local.sh start runs one"),
                allow_module_level=True)


# --- helpers ---------------------------------------------------------------------------------------

def wait_for(predicate, what: str, timeout: float = WAIT_S, proc: subprocess.Popen | None = None):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"the sweep ended (exit {proc.returncode}) while waiting for {what}:\n{proc.stdout.read()}")
        if time.monotonic() > deadline:
            pytest.fail(f"gave up after {timeout:.0f} s waiting for {what}")
        time.sleep(0.2)


def sweep_cmd(run_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "bench", "sweep", "ci", "--out", str(run_dir), "--executor", "slurm",
            "--quiet", "--no-table", *extra]


def start_sweep(run_dir: Path, *extra: str, env: dict | None = None) -> subprocess.Popen:
    proc = subprocess.Popen(sweep_cmd(run_dir, *extra), cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    _SWEEPS.append(proc)
    return proc


def events(run_dir: Path) -> list[dict]:
    return read_jsonl(run_dir / "shards" / f"{UNIT}.events.jsonl")


def job_record(run_dir: Path) -> dict:
    return wait_for(lambda: (read_jsonl(run_dir / "shards" / "jobs.jsonl") or [None])[-1], "the job's record")


def in_queue(job_id: str) -> bool:
    out = subprocess.run(["squeue", "--noheader", "--array", "--format=%i"], capture_output=True, text=True,
                         timeout=20)
    assert out.returncode == 0, out.stderr
    return job_id in out.stdout.split()


def wait_mid_unit(run_dir: Path, proc: subprocess.Popen | None = None) -> dict:
    """Wait until one case is recorded and the next is being measured; returns the job_start event."""
    def mid():
        seen = events(run_dir)
        ends = [i for i, e in enumerate(seen) if e["event"] == "case_end"]
        return ends and any(e["event"] == "case_start" for e in seen[ends[0]:])
    wait_for(mid, "one case recorded and the next in flight", proc=proc)
    return [e for e in events(run_dir) if e["event"] == "job_start"][-1]


def named_paths(report: str) -> list[Path]:
    return [Path(p) for p in re.findall(r"(/\S+\.(?:out|err|log))\b", report)]


@pytest.fixture()
def cancel_jobs(tmp_path):
    """Ends, after a test, its sweeps and every job its run directories recorded (a failed test leaves none)."""
    yield
    while _SWEEPS:
        proc = _SWEEPS.pop()
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    ids = {j["job_id"].split("_")[0] for path in tmp_path.rglob("jobs.jsonl") for j in read_jsonl(path)}
    if ids:
        subprocess.run(["scancel", *sorted(ids)], capture_output=True, timeout=30)


@pytest.fixture()
def no_sacct(tmp_path):
    """The environment of a sweep whose cluster has no accounting: `sacct` fails, as on clusters without slurmdbd."""
    bin_dir = tmp_path / "no-sacct"
    bin_dir.mkdir()
    (bin_dir / "sacct").write_text('#!/bin/sh\necho "sacct: error: Slurm accounting storage is disabled" >&2\nexit 1\n')
    (bin_dir / "sacct").chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}


def statuses(run_dir: Path) -> dict[str, str]:
    df = load(run_dir)
    return dict(df.loc[df["metric"] == "status", ["case_id", "status"]].itertuples(index=False))


# --- tests -----------------------------------------------------------------------------------------

def test_ci_sweep_through_slurm_matches_the_in_process_run(ci_run_dir, tmp_path, cancel_jobs, capsys):
    run_dir = tmp_path / "run"
    proc = start_sweep(run_dir)
    output, _ = proc.communicate(timeout=WAIT_S * 2)
    assert proc.returncode == 0, output
    assert statuses(run_dir) == statuses(ci_run_dir)  # same cases, same statuses (values differ)
    jobs = read_jsonl(run_dir / "shards" / "jobs.jsonl")
    assert {j["executor"] for j in jobs} == {"slurm"} and len(jobs) == 2  # one array task per unit
    assert all(Path(j["stdout"]).is_file() for j in jobs)
    assert cli.main(["collect", str(run_dir)]) == 0
    assert "27/27 cases have a final status: complete" in capsys.readouterr().out


def test_scancel_leaves_the_unrun_cases_missing_and_a_rerun_runs_them(tmp_path, cancel_jobs, no_sacct, capsys):
    run_dir = tmp_path / "run"
    proc = start_sweep(run_dir, *SLOW, env=no_sacct)
    job = job_record(run_dir)
    start = wait_mid_unit(run_dir, proc)
    subprocess.run(["scancel", job["job_id"]], check=True, timeout=30)
    cancelled = time.monotonic()
    # It stops at once: well before Slurm's KillWait (30 s) would SIGKILL a job that kept measuring.
    wait_for(lambda: not in_queue(job["job_id"]), "the cancelled job to leave the queue", timeout=20)
    assert time.monotonic() - cancelled < 20
    output, _ = proc.communicate(timeout=WAIT_S)  # the waiting sweep ends by itself
    assert proc.returncode == 1, output
    assert f"incomplete: {UNIT}" in output

    shard_rows = read_jsonl(run_dir / "shards" / f"{UNIT}.jsonl")
    done = case_statuses(shard_rows)
    assert 1 <= len(done) < 3, done
    assert set(done.values()) == {"ok"}, done  # no `error` rows for what the cancel interrupted
    assert not [e for e in events(run_dir) if e["event"] == "case_end" and e.get("by") == "parent"]
    for pid in [e["pid"] for e in events(run_dir) if e["event"] == "child_start"] + [start["pid"]]:
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]

    capsys.readouterr()
    assert cli.main(["collect", str(run_dir)]) == 1
    report = capsys.readouterr().out
    assert f"{len(done)}/3 cases have a final status" in report, report
    assert f"incomplete: {UNIT}: {3 - len(done)} case(s) missing" in report, report
    assert job["stdout"] in report and job["stderr"] in report, report
    assert named_paths(report) and all(p.exists() for p in named_paths(report)), report

    rerun = subprocess.run(sweep_cmd(run_dir, *SLOW), cwd=REPO, env=no_sacct, capture_output=True, text=True,
                           timeout=WAIT_S * 2)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert f"{len(done)} already recorded, {3 - len(done)} to run" in rerun.stderr
    assert set(statuses(run_dir).values()) == {"ok"} and len(statuses(run_dir)) == 3
    assert cli.main(["collect", str(run_dir)]) == 0


def test_a_job_killed_with_kill_9_is_reported_with_its_logs(tmp_path, cancel_jobs, capsys):
    run_dir = tmp_path / "run"
    submitted = subprocess.run(sweep_cmd(run_dir, *SLOW, "--no-wait"), cwd=REPO, capture_output=True, text=True,
                               timeout=WAIT_S)
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    job = job_record(run_dir)
    start = wait_mid_unit(run_dir)
    os.kill(start["pid"], signal.SIGKILL)  # the job's own process, as a node failure or the OOM killer would
    wait_for(lambda: not in_queue(job["job_id"]), "the killed job to leave the queue", timeout=60)

    assert cli.main(["collect", str(run_dir)]) == 1
    report = capsys.readouterr().out
    assert f"incomplete: {UNIT}" in report and "its job did not finish" in report, report
    assert job["stdout"] in report and job["stderr"] in report, report
    assert named_paths(report) and all(p.exists() for p in named_paths(report)), report


def test_a_waiting_sweep_ends_when_its_job_dies_without_accounting(tmp_path, cancel_jobs, no_sacct):
    run_dir = tmp_path / "run"
    proc = start_sweep(run_dir, *SLOW, env=no_sacct)
    start = wait_mid_unit(run_dir, proc)
    os.kill(start["pid"], signal.SIGKILL)
    killed = time.monotonic()
    try:
        output, _ = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f"the sweep still waits 120 s after its job died:\n{proc.communicate()[0]}")
    assert time.monotonic() - killed < 120
    assert proc.returncode == 1, output
    assert "left the Slurm queue without a result" in output, output  # noticed by squeue, not sacct
    assert f"incomplete: {UNIT}" in output and "cases have a final status" in output, output
    assert "sacct" not in output, output
