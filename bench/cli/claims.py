"""Write the claims report (claims.md, claims.json) of one or more run directories into the first.

Compares every non-SSAST family with SSAST per protocol, device, dtype, batch, size, token count and
SSAST attention kernel, next to the paper's 92.7% / 95.4%; see bench/report/claims.py.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR",
                        help="run directories written by `ssamba-bench sweep`")
    parser.add_argument("--quiet", action="store_true", help="do not print the report")
    parser.add_argument("--allow-mixed-devices", action="store_true",
                        help="pair rows measured on different device models (each pairing names both)")
    parser.add_argument("--no-predictions", action="store_true",
                        help="leave out the GPU-free predictions at the paper's point (the only part that needs torch)")


def run(args) -> int:
    from bench.report.claims import write_report

    md_path, json_path, _ = write_report(args.run_dirs, args.allow_mixed_devices, predict=not args.no_predictions)
    if not args.quiet:
        print(md_path.read_text())
    print(f"wrote {md_path} and {json_path}")
    return 0
