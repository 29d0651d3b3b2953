"""Draw the paper's figures (and log-log, ratio and predicted-memory figures) of runs into RUN_DIR/figures/."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR",
                        help="run directories written by `ssamba-bench sweep`; figures go to the first one's figures/")


def run(args) -> int:
    from bench.report.plots import make_figures

    paths = make_figures(args.run_dirs)
    for p in paths:
        if p.suffix == ".png":
            print(p)
    print(f"{len(paths)} files (PNG and SVG)")
    return 0
