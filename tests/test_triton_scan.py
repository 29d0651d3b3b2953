"""The Triton scan backend: exact against the reference (through Triton's CPU interpreter) and wired
into backend selection. Its speed is a GPU matter (`ssamba-bench scanbench` on CUDA)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from models.scan.triton_common import TritonTiles
from models.scan.triton_scan import selective_scan_triton, triton_available
from models.scan.triton_scan_chunks import chunk_layout

ROOT = Path(__file__).resolve().parents[1]
needs_triton = pytest.mark.skipif(not triton_available(), reason="Triton is not installed")


@needs_triton
def test_interpreted_kernel_matches_reference():
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "triton_interpret_check.py")], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    errors = {line.split()[1]: float(line.split()[2]) for line in proc.stdout.splitlines() if line.startswith("case ")}
    # "gradients*": backward through the custom op with impl="triton" (its Triton backward kernel), every input
    problems = ("ragged_full", "ragged_bare", "grouped", "one_step")
    configs = {f"{label}_{p}" for label in ("loop", "chunks3", "loop_chunks4") for p in problems}
    assert set(errors) == {*problems, "small_state", "gradients", "gradients_full", "gradients_grouped",
                           "gradients_reverse", "gradients_one_step", *configs, "chunks7_batch3", "loop_chunks7_batch3"}
    assert max(errors.values()) < 1e-5, errors


def test_float64_stays_exact_without_triton_kernel():
    # float64 never reaches the kernel (no float64 path, as mamba-ssm): it is the chunked scan's answer.
    g = torch.Generator().manual_seed(0)
    u, delta = torch.randn(1, 4, 9, generator=g, dtype=torch.float64), torch.rand(1, 4, 9, generator=g, dtype=torch.float64)
    A = -torch.rand(4, 2, generator=g, dtype=torch.float64)
    B, C = torch.randn(1, 2, 9, generator=g, dtype=torch.float64), torch.randn(1, 2, 9, generator=g, dtype=torch.float64)
    from models.scan.reference import selective_scan_reference

    assert torch.allclose(selective_scan_triton(u, delta, A, B, C), selective_scan_reference(u, delta, A, B, C))



def test_chunk_layout():
    cpu = torch.device("cpu")
    # the interpreter check's problems really are split: 70 steps in tiles of 8 = 9 tiles, 3 chunks of 3 tiles
    assert chunk_layout(70, 8, 8, 3, cpu) == (3, 24)
    assert chunk_layout(40, 8, 8, 3, cpu) == (3, 16)  # 5 tiles: 2 + 2 + a ragged 1
    assert chunk_layout(70, 8, 8, 4, cpu) == (3, 24)  # 4 asked, 9 tiles: 3 per chunk is what 4 needs
    assert chunk_layout(1, 8, 8, 3, cpu) == (1, 8)  # shorter than one tile: one chunk whatever is asked
    assert chunk_layout(93, 8, 8, 7, cpu) == (6, 16)  # the many-chunk check: 12 tiles, 2 per chunk
    assert chunk_layout(22016, 32, 384, 1, cpu) == (1, 22016)
    assert chunk_layout(22016, 32, 384, 16, cpu) == (16, 1376)
    assert chunk_layout(22016, 32, 384, "auto", cpu) == (1, 22016)  # one "multiprocessor" on a CPU
    for length, block, chunks in ((70, 8, 3), (22016, 32, 7), (5, 4, 9), (1000, 16, 1000)):
        n, steps = chunk_layout(length, block, 1, chunks, cpu)
        assert steps % block == 0 and (n - 1) * steps < length <= n * steps  # every chunk holds a step


def test_tiles_parse():
    assert TritonTiles.parse("4,32,4") == TritonTiles(4, 32, 4, "vector", 1)
    assert TritonTiles.parse("8, 128, 4, loop, auto") == TritonTiles(8, 128, 4, "loop", "auto")
    assert TritonTiles.parse("4,32,4,vector,6").label() == "4,32,4,vector,6"
    for bad in ("4,32", "4,32,4,loop", "4,32,x", "4,32,4,diagonal,1", "4,32,4,loop,0", "0,32,4"):
        with pytest.raises(ValueError, match="BLOCK_E,BLOCK_L,NUM_WARPS"):
            TritonTiles.parse(bad)
