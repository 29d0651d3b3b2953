"""The Triton scan backend: exact against the reference (through Triton's CPU interpreter) and wired
into backend selection. Its speed is a GPU matter (`ssamba-bench scanbench` on CUDA)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from models.scan.triton_scan import selective_scan_triton, triton_available

ROOT = Path(__file__).resolve().parents[1]
needs_triton = pytest.mark.skipif(not triton_available(), reason="Triton is not installed")


@needs_triton
def test_interpreted_kernel_matches_reference():
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "triton_interpret_check.py")], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    errors = {line.split()[1]: float(line.split()[2]) for line in proc.stdout.splitlines() if line.startswith("case ")}
    # "gradients*": backward through the custom op with impl="triton" (its Triton backward kernel), every input
    assert set(errors) == {"ragged_full", "ragged_bare", "small_state", "grouped", "one_step", "gradients",
                           "gradients_full", "gradients_grouped", "gradients_reverse", "gradients_one_step"}
    assert max(errors.values()) < 1e-5, errors


def test_float64_stays_exact_without_triton_kernel():
    # float64 never reaches the kernel (no float64 path, as mamba-ssm): it is the chunked scan's answer.
    g = torch.Generator().manual_seed(0)
    u, delta = torch.randn(1, 4, 9, generator=g, dtype=torch.float64), torch.rand(1, 4, 9, generator=g, dtype=torch.float64)
    A = -torch.rand(4, 2, generator=g, dtype=torch.float64)
    B, C = torch.randn(1, 2, 9, generator=g, dtype=torch.float64), torch.randn(1, 2, 9, generator=g, dtype=torch.float64)
    from models.scan.reference import selective_scan_reference

    assert torch.allclose(selective_scan_triton(u, delta, A, B, C), selective_scan_reference(u, delta, A, B, C))

