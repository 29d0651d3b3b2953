"""Print the short table of a run: models as rows, token counts as columns, latency and peak memory.

    ssamba-bench table results/runs/DIR [--memory cpu_rss]

The table and what its cells mean: bench/report/table.py. Reads stored rows only (no torch).
"""

from __future__ import annotations

import argparse

from bench.common.vocabulary import MEMORY_KINDS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help="a run directory, or a results .parquet/.csv/.jsonl file")
    parser.add_argument("--memory", choices=MEMORY_KINDS, help="which memory to show (default: the device's allocated)")


def run(args) -> int:
    from bench.report.table import short_table
    from bench.store.run_store import load

    # load: a missing, unreadable or foreign file is one UserInputError; lines that are not rows, or
    # cases whose rows were cut short, are left out with one warning each
    print(short_table(load(args.run), args.memory))
    return 0
