"""List the registered models with their parameter counts and default configuration.

Parameter counts are at each model's default geometry (1024 frames, 16x16 patches, stride 16: the
pretraining grid of 512 patches), backbone only (no classification head) and with the head.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json

import torch

from models.registry import create_model, list_models


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("pattern", nargs="?", default="*", help="shell-style filter, e.g. 'ssamba*'")
    parser.add_argument("--json", action="store_true", help="print one JSON object per model")


def describe_model(name: str) -> dict:
    with torch.device("meta"):  # counts need shapes only: no memory, no init cost
        model = create_model(name)
    config = dataclasses.asdict(model.config) if dataclasses.is_dataclass(getattr(model, "config", None)) else {}
    return {
        "name": name,
        "family": model.family,
        "size": model.size,
        "backbone_params": model.num_parameters(include_head=False),
        "params": model.num_parameters(include_head=True),
        "n_tokens": model.n_tokens,
        "attn_impl": model.attn_impl,
        "scan_impl": getattr(model, "requested_scan_impl", model.scan_impl),
        "config": config,
        "module": inspect.getmodule(type(model)).__name__,
    }


def run(args) -> int:
    rows = [describe_model(name) for name in list_models(args.pattern)]
    if args.json:
        for row in rows:
            print(json.dumps(row))
        return 0
    print(f"{'model':<14} {'family':<8} {'size':<6} {'backbone':>12} {'with head':>12} {'tokens':>7}  attn/scan   config")
    for r in rows:
        impl = r["attn_impl"] or r["scan_impl"] or "-"
        cfg = " ".join(f"{k}={v}" for k, v in r["config"].items())
        print(f"{r['name']:<14} {r['family']:<8} {r['size']:<6} {r['backbone_params']:>12,} {r['params']:>12,} "
              f"{r['n_tokens']:>7}  {impl:<10}  {cfg}")
    return 0
