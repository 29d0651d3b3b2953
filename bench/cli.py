"""The `ssamba-bench` command line: one verb per module.

Each verb lives in its own module exposing `add_arguments(parser)` and `run(args) -> int`; the first
line of that module's docstring is the verb's help. A `UserInputError` (or any ValueError raised for
bad input before work starts) is printed as one line `error: ...` with exit status 2, never as a
traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from models.errors import UserInputError

# verb -> module implementing it
VERBS = {
    "models": "bench.model_list",
    "demo": "bench.demo",
    "sweep": "bench.sweep_cli",
    "table": "bench.table",
    "inspect": "bench.inspect_checkpoint",
    "estimate": "bench.estimate_cli",
    "claims": "bench.claims_cli",
    "plot": "bench.plot_cli",
    "compare": "bench.compare_cli",
    "baseline": "bench.baseline",
    "scanbench": "bench.scanbench",
    "data": "bench.data_cli",
    "collect": "bench.collect_cli",
    "pretrain": "bench.pretrain_cli",
    "finetune": "bench.finetune_cli",
    "accuracy": "bench.accuracy_cli",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ssamba-bench",
        description="Benchmark SSAMBA against SSAST (and any model you register): latency, memory, FLOPs, accuracy.",
    )
    sub = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    for verb, module_name in VERBS.items():
        module = importlib.import_module(module_name)
        summary = (module.__doc__ or "").strip().splitlines()[0] if module.__doc__ else ""
        verb_parser = sub.add_parser(verb, help=summary, description=module.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(verb_parser)
        verb_parser.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except UserInputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
