"""run_all.sh's set-up: a disk too full for torch is refused up front with one clear line (pip
itself reports it mid-download as a dropped connection), before anything is created."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_run_all_is_valid_bash():
    subprocess.run(["bash", "-n", str(ROOT / "run_all.sh")], check=True)


def test_setup_refuses_a_full_disk_before_creating_the_venv(tmp_path):
    for name in ("run_all.sh", "pyproject.toml"):
        shutil.copy(ROOT / name, tmp_path / name)
    env = {**os.environ, "HOME": str(tmp_path), "SSAMBA_BENCH_SETUP_NEED_GB": "1000000000"}
    proc = subprocess.run(["bash", "run_all.sh", "test"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 1
    assert "GB free on the disk" in proc.stderr and "Free some space" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / ".venv").exists()
