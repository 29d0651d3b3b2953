"""Compare a results table against a baseline case by case; exit 1 when a gated metric regressed.

BASELINE and NEW are run directories or results .csv/.parquet/.jsonl files. The policy (default:
bench/policies/default.toml; `--policy ci` for shared CI runners) says what is gated and how.
Exit status: 0 pass; 1 a gated regression, or nothing was comparable; 2 an input that is not a
results table or a policy (one `error:` line).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from models.errors import UserInputError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("baseline", metavar="BASELINE")
    parser.add_argument("new", metavar="NEW")
    parser.add_argument("--policy", help="policy TOML file, or the name of a built-in one (default, ci)")
    parser.add_argument("--all", action="store_true", help="also list SAME rows")
    parser.add_argument("--json", metavar="FILE", help="write every verdict as JSON to FILE")


def run(args) -> int:
    from bench.report.compare import compare, load_policy, load_table, render, verdicts_json

    verdicts = compare(load_table(args.baseline), load_table(args.new), load_policy(args.policy))
    print(render(verdicts, show_same=args.all))
    if args.json:
        try:
            Path(args.json).write_text(verdicts_json(verdicts))
        except OSError as err:
            raise UserInputError(f"--json {args.json}: cannot write it ({err.strerror or err})") from None
    # exit 1 also when nothing was comparable: the EMPTY verdict is gated
    return 1 if any(v.gated for v in verdicts) else 0
