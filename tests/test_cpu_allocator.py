"""The sweep's `cpu_allocator`: what each mode does to glibc's malloc (seen in a fresh process, from where
blocks land: the heap below the program break, or a mapping of their own), the errors, the config key,
and the rows of a real sweep recording it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from bench import cli
from bench.harness.config import load_config
from bench.measure import allocator
from models.errors import UserInputError

ROOT = Path(__file__).resolve().parents[1]

WHERE_BLOCKS_LAND = """
import ctypes, json, sys, torch
from bench.measure.allocator import apply_cpu_allocator
apply_cpu_allocator(sys.argv[1])
libc = ctypes.CDLL("libc.so.6")
libc.sbrk.restype = ctypes.c_void_p
def on_heap(n_bytes):  # a fresh block of n_bytes: below the program break (the heap), or mapped apart
    t = torch.empty(n_bytes // 4)
    return t.data_ptr() < libc.sbrk(0)
print(json.dumps({"1MiB": on_heap(2**20), "64MiB": on_heap(2**26)}))
"""


@pytest.mark.parametrize("mode, one_mib, sixty_four_mib", [
    ("glibc", False, False),  # a fresh process: the mmap threshold starts at 128 KiB
    ("pinned", True, False),  # glibc's steady state: heap up to 32 MiB, mapped above, from the start
    ("retain", True, True),   # nothing is mapped apart
])
def test_each_mode_places_blocks_as_documented(mode, one_mib, sixty_four_mib):
    proc = subprocess.run([sys.executable, "-c", WHERE_BLOCKS_LAND, mode], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.splitlines()[-1]) == {"1MiB": one_mib, "64MiB": sixty_four_mib}


def test_modes_are_one_way_and_checked(monkeypatch):
    monkeypatch.setattr(allocator, "_applied", None)
    with pytest.raises(UserInputError, match="cpu_allocator must be one of glibc, pinned, retain"):
        allocator.apply_cpu_allocator("jemalloc")
    allocator.apply_cpu_allocator("glibc")  # no mallopt call at all
    allocator.apply_cpu_allocator("glibc")  # idempotent
    assert allocator.applied_cpu_allocator() == "glibc" and allocator.trims_between_cases()
    with pytest.raises(UserInputError, match="mallopt cannot be undone"):
        allocator.apply_cpu_allocator("retain")
    monkeypatch.setattr(allocator, "_applied", "retain")
    assert not allocator.trims_between_cases()  # a retained heap is not handed back between cases
    monkeypatch.setattr(allocator, "_applied", None)
    monkeypatch.setattr(allocator, "_libc", lambda: None)  # not glibc
    with pytest.raises(UserInputError, match="needs glibc's mallopt"):
        allocator.apply_cpu_allocator("pinned")


def test_config_key(tmp_path):
    path = tmp_path / "sweep.toml"
    path.write_text('models = ["test_ssast"]\ntokens = [64]\n')
    assert load_config(path).cpu_allocator == "glibc"
    assert load_config(path, ["cpu_allocator=pinned"]).cpu_allocator == "pinned"
    with pytest.raises(UserInputError, match="cpu_allocator must be one of glibc, pinned, retain"):
        load_config(path, ["cpu_allocator=tcmalloc"])


def test_sweep_rows_record_the_allocator(tmp_path):
    out = tmp_path / "run"
    assert cli.main(["sweep", "ci", "--out", str(out), "--quiet", "--no-table", "--set", "cpu_allocator=pinned",
                     "--set", 'models=["test_ssamba"]', "--set", "tokens=[64]", "--set", 'protocol=["steady"]']) == 0
    rows = pd.read_json(out / "results.jsonl", lines=True)
    assert len(rows) and (rows["cpu_allocator"] == "pinned").all() and (rows.loc[rows["metric"] == "status",
                                                                                    "status"] == "ok").all()
