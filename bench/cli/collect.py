"""Merge a run's per-job shards into results.jsonl/csv/parquet and report missing or failed cases.

    ssamba-bench collect results/runs/20250101T000000Z-paper

A sweep run with `--executor submitit-local` or `--executor slurm` writes one shard per job under
RUN_DIR/shards/ (bench/store/shards.py). This verb appends the shard rows not yet in results.jsonl, exports
results.csv and results.parquet, and checks that every case of the sweep (RUN_DIR/cases.json, else the
config in run.json) has a final status. Missing cases are listed by unit with why (job killed, stopped
by scancel or preemption, never started), the job id and its logs (the submitit job's stdout/stderr,
the measuring child's log: only those that exist; for a job's logs not written yet, where they will
be); failed cases (oom, timeout, error) with their message. Exit status 0 when complete, 1 when cases
are missing. To run the missing cases, run the sweep again with `--out RUN_DIR` (any executor).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from bench.harness.completeness import check_run, describe
from bench.store.run_lock import RunLock
from bench.store.run_store import RunStore
from bench.store.shards import merge_shards
from models.errors import UserInputError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a run directory (holds run.json)")


def run(args) -> int:
    run_dir = Path(args.run_dir)
    if not (run_dir / "run.json").exists():
        raise UserInputError(f"{run_dir} is not a run directory (no run.json)")
    store = RunStore(run_dir)
    with RunLock(run_dir):  # not while a sweep session (e.g. one waiting for its jobs) writes into it
        added = merge_shards(store)
        store.export()
    report = check_run(store)
    print(f"merged {added} new row(s) from {run_dir / 'shards'}; wrote {store.parquet} (also .csv, .jsonl)")
    print(describe(report, run_dir))
    if report.missing:
        print(f"to run the missing cases: run the same sweep command again with --out {run_dir} (any executor)")
    return 0 if report.complete else 1
