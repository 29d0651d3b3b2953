"""Regenerate the committed CI baseline deliberately: `ssamba-bench baseline update`.

Runs the CI sweep (bench/configs/ci.toml) into a fresh directory, prints how it compares with the
baseline it replaces (so the change a commit makes to the baseline is visible), then replaces
results/baseline/ci/ with the new run's small, text-only files: results.jsonl (the rows), samples.jsonl
(the raw timings the latency test needs), env.json and run.json (where and how it was measured), and
results.csv for reading.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

BASELINE_DIR = Path("results/baseline/ci")
KEPT_FILES = ("results.jsonl", "samples.jsonl", "env.json", "run.json", "results.csv")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["update", "show"], help="update: rerun and replace; show: print where it is")
    parser.add_argument("--config", default="ci", help="sweep config the baseline is made from (default: ci)")
    parser.add_argument("--dir", default=str(BASELINE_DIR), help=f"baseline directory (default: {BASELINE_DIR})")


def run(args) -> int:
    from bench.cli import main as cli_main
    from bench.report.compare import compare, load_policy, load_table, render

    target = Path(args.dir)
    if args.action == "show":
        print(f"{target}: {'present' if (target / 'results.jsonl').exists() else 'missing'}")
        return 0
    with tempfile.TemporaryDirectory(prefix="ssamba-baseline-") as tmp:
        fresh = Path(tmp) / "run"
        code = cli_main(["sweep", args.config, "--out", str(fresh), "--quiet", "--no-table"])
        if code != 0:
            print(f"the {args.config} sweep failed (exit {code}); the baseline is unchanged")
            return code
        if (target / "results.jsonl").exists():
            print(f"change from the current baseline ({target}):")
            print(render(compare(load_table(target), load_table(fresh), load_policy("ci"))))
        target.mkdir(parents=True, exist_ok=True)
        for name in KEPT_FILES:
            if (fresh / name).exists():
                shutil.copyfile(fresh / name, target / name)
    print(f"baseline written to {target}/ ({', '.join(KEPT_FILES)}); review and commit it")
    return 0
