"""The `ssamba-bench` command line: a static table of verbs, one module per verb in bench/cli/.

Each verb module exposes `add_arguments(parser)` and `run(args) -> int`, and keeps its heavy imports
(torch, models, pandas) inside `run`. The root parser is built from the table below without importing
any verb module (asv and lm-evaluation-harness do the same), so `ssamba-bench --help` is instant;
only the verb being run is imported. A `UserInputError` (any ValueError raised for bad input before
work starts) is printed as one line `error: ...` with exit status 2, never as a traceback; so is an
OSError of a path the user gave (an output directory that cannot be written, a full disk).
"""

from __future__ import annotations

import argparse
import importlib
import sys

from models.errors import UserInputError

# verb -> (module implementing it, one-line help). tests/test_architecture.py checks that each help line is the
# first line of its module's docstring.
VERBS = {
    "models": ("bench.cli.models", "List the registered models with their parameter counts and default configuration."),
    "demo": ("bench.cli.demo", "Run each tiny model once on the fbank of a generated waveform: a smoke test of the "
                               "whole front end."),
    "sweep": ("bench.cli.sweep", "Run a benchmark sweep: every model/size x token count of a config, isolated, "
                                 "resumable, into tidy tables."),
    "table": ("bench.cli.table", "Print the short table of a run: models as rows, token counts as columns, latency "
                                 "and peak memory."),
    "inspect": ("bench.cli.inspect", "Show what a checkpoint holds: family, size, parameters, pretraining input "
                                     "geometry, unexpected keys."),
    "estimate": ("bench.cli.estimate", "Predict FLOPs, bytes moved, peak device memory and (with --device) latency "
                                       "of one forward, without a GPU."),
    "claims": ("bench.cli.claims", "Write the claims report (claims.md, claims.json) of one or more run directories "
                                   "into the first."),
    "plot": ("bench.cli.plot", "Draw the paper's figures (and log-log, ratio and predicted-memory figures) of runs "
                               "into RUN_DIR/figures/."),
    "compare": ("bench.cli.compare", "Compare a results table against a baseline case by case; exit 1 when a gated "
                                     "metric regressed."),
    "baseline": ("bench.cli.baseline", "Regenerate the committed CI baseline deliberately: `ssamba-bench baseline "
                                       "update`."),
    "scanbench": ("bench.cli.scanbench", "Time every selective-scan backend side by side: ms, speed-up over the "
                                         "reference, GFLOP/s, bandwidth, peak memory."),
    "mixerbench": ("bench.cli.mixerbench", "Measure SSAMBA's CPU path, fused vs the authors' op-by-op mixer: profile "
                                           "shares, FLOP floor, training step."),
    "data": ("bench.cli.data", "Build and list the offline accuracy datasets (keyword spotting, speaker ID, sound "
                               "events, real digits)."),
    "collect": ("bench.cli.collect", "Merge a run's per-job shards into results.jsonl/csv/parquet and report missing "
                                     "or failed cases."),
    "pretrain": ("bench.cli.pretrain", "Masked-patch pretraining of one model on the unlabelled training audio of the "
                                       "accuracy tasks."),
    "finetune": ("bench.cli.finetune", "Fine-tune one model on one accuracy task and record accuracy / macro-F1 rows "
                                       "in a run directory."),
    "accuracy": ("bench.cli.accuracy", "Run an accuracy config: pretrain each model once, fine-tune every (task, "
                                       "model, init), print the table."),
}


def build_parser(verb: str | None = None) -> argparse.ArgumentParser:
    """The root parser; only `verb`'s module is imported, to give its subparser its arguments."""
    parser = argparse.ArgumentParser(
        prog="ssamba-bench",
        description="Benchmark SSAMBA against SSAST (and any model you register): latency, memory, FLOPs, accuracy.",
    )
    sub = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    for name, (module_name, summary) in VERBS.items():
        if name != verb:
            sub.add_parser(name, help=summary, add_help=False)
            continue
        module = importlib.import_module(module_name)
        verb_parser = sub.add_parser(name, help=summary, description=module.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(verb_parser)
        verb_parser.set_defaults(_run=module.run)
    return parser


def _verb_of(argv: list[str]) -> str | None:
    """The verb the command line names (the root has no options but --help, so it comes first)."""
    return argv[0] if argv and argv[0] in VERBS else None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(_verb_of(argv)).parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except UserInputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # a path that cannot be read or written: the user's to fix, not a bug to trace
        where = f": {err.filename}" if err.filename else ""
        print(f"error: {err.strerror or err}{where} ({type(err).__name__}); check the path and free space, "
              f"then rerun (finished results are kept)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
