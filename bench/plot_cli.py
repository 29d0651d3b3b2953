"""Draw the paper's figures (and log-log, ratio and predicted-memory figures) of a run into RUN_DIR/figures/."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a run directory written by `ssamba-bench sweep`")


def run(args) -> int:
    from bench.plots import make_figures

    paths = make_figures(args.run_dir)
    for p in paths:
        if p.suffix == ".png":
            print(p)
    print(f"{len(paths)} files (PNG and SVG)")
    return 0
