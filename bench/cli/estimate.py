"""Predict FLOPs and peak device memory of one forward, for any token count, without a GPU.

Runs the model on meta tensors (see bench/estimate/trace.py for the method and its assumptions), e.g. the
paper's point: `ssamba-bench estimate --model ssast --size tiny --tokens 22000 --batch 4 --attn-impl eager`.
"""

from __future__ import annotations

import argparse
import json

from bench.cli.arg_types import positive_int
from bench.common.vocabulary import ESTIMATE_DTYPES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True,
                        help="a family (ssast, ssamba) with --size, or a full name (ssast_tiny)")
    parser.add_argument("--size", help="tiny, small or base (omit when --model is a full name)")
    parser.add_argument("--tokens", type=positive_int, required=True,
                        help="patch tokens N (frames are derived from it)")
    parser.add_argument("--batch", type=positive_int, default=1)
    parser.add_argument("--dtype", default="float32", choices=sorted(ESTIMATE_DTYPES))
    parser.add_argument("--attn-impl", help="SSAST attention: eager (explicit scores) or sdpa (fused)")
    parser.add_argument("--scan-impl", help="SSAMBA scan backend (predicted as a fused scan)")
    parser.add_argument("--fstride", type=positive_int, default=16)
    parser.add_argument("--tstride", type=positive_int, default=16)
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def model_name(model: str, size: str | None) -> str:
    """`--model ssast --size tiny` -> ssast_tiny; a full registered name passes through."""
    from models.registry import list_models

    if size is None or model in list_models():
        return model
    return f"{model}_{size}"


def run(args) -> int:
    from bench.estimate import estimate

    result = estimate(model_name(args.model, args.size), args.tokens, args.batch, args.dtype,
                      attn_impl=args.attn_impl, scan_impl=args.scan_impl,
                      fstride=args.fstride, tstride=args.tstride)
    if args.json:
        print(json.dumps(result))
        return 0
    impl = f"attn_impl={result['attn_impl']}" if result["attn_impl"] else f"scan={result['scan_impl']}"
    print(f"{result['model']} ({impl}), {result['n_tokens']} tokens ({result['frames']} frames), "
          f"batch {result['batch']}, {result['dtype']}")
    print(f"  FLOPs            {result['flops'] / 1e12:10.3f} TFLOP")
    for key, label in (("peak_mem_bytes", "peak memory"), ("weights_bytes", "  weights"),
                       ("input_bytes", "  input"), ("activation_peak_bytes", "  activations")):
        print(f"  {label:<16} {result[key] / 1e9:10.3f} GB ({result[key] / 2**30:.3f} GiB)")
    print(f"  method: {result['method']}")
    return 0
