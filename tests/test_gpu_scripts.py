"""The time-boxed GPU session scripts, on CPU: the stage runner keeps to its budget (a stage cut at what
is left, later stages skipped), and both scripts run their stages in order and pack what they wrote."""

from __future__ import annotations

import os
import subprocess
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def bash(script: str, tmp_path: Path, **env) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "LOG": str(tmp_path / "log.txt"), **env})


def test_run_stage_keeps_to_the_budget(tmp_path):
    proc = bash('T0=$(date +%s); BUDGET_S=12; . scripts/gpu_stages.sh; '
                'run_stage slow 100 sleep 60; echo "slow rc=$?"; run_stage late 100 true; echo "late rc=$?"', tmp_path)
    log = (tmp_path / "log.txt").read_text()
    assert "=== slow: start (limit 12s)" in log and "=== slow: reached its 12s limit, interrupting" in log, log
    assert "slow rc=0" not in proc.stdout  # interrupted, not finished
    assert "=== late: skipped" in log and "late rc=124" in proc.stdout, proc.stdout


def test_run_stage_without_budget_runs_to_the_end(tmp_path):
    proc = bash('T0=$(date +%s); . scripts/gpu_stages.sh; run_stage quick 30 bash -c "echo hello; exit 3"; '
                'echo "rc=$?"', tmp_path)
    log = (tmp_path / "log.txt").read_text()
    assert "hello" in log and "=== quick: exit 3 after" in log and "rc=3" in proc.stdout, log


def test_gpu_scripts_skip_every_stage_with_no_budget_left(tmp_path):
    for script, stages in (("gpu_reference.sh", ["env", "paper_tiny", "steady_tiny", "paper_aum_tiny", "paper_small"]),
                           ("gpu_train_precision.sh", ["env", "scan_backward", "train_profile", "sweep", "claims"])):
        out = tmp_path / script
        proc = subprocess.run(["bash", f"scripts/{script}"], cwd=ROOT, capture_output=True, text=True, timeout=120,
                              env={**os.environ, "OUT": str(out), "BUDGET_S": "0", "SIMULATE_CPU": "1"})
        assert proc.returncode == 0, proc.stderr
        log = (out / "gpu_log.txt").read_text()
        skipped = [line.split()[1].rstrip(":") for line in log.splitlines() if line.endswith("s budget left")]
        assert skipped[:len(stages)] == stages, log
        assert "=== done in" in log and tarfile.open(out / "runs.tar.gz").getnames()[0] == "runs"
