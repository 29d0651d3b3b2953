"""Predict FLOPs, bytes moved, peak device memory and (with --device) latency of one forward, without a GPU.

Runs the model on meta tensors (see bench/estimate/trace.py for the method and its assumptions), e.g. the
paper's point: `ssamba-bench estimate --model ssast --size tiny --tokens 22000 --batch 4 --attn-impl eager`.
`--device l40` adds the predicted latency on that card, with its breakdown by kernel category and what
bounds each (bench/estimate/roofline.py: a per-kernel roofline over the device table's datasheet peaks,
bench/estimate/devices.toml, with efficiencies fitted on measured runs); `--device cpu` calibrates this
CPU first (a timed GEMM and copy). `--json` prints every kernel (FLOPs, bytes read and written).
`--train cuda|cpu` predicts one training step instead (forward, backward, Adam: weights, gradients,
Adam's moments and the saved activations; bench/estimate/train_trace.py), with the kernels that run on
that target: `--train cuda` the authors' op sequence, `--train cpu` the CPU's fused mixer path.
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
    parser.add_argument("--device", help="predict latency on this device: a card of bench/estimate/devices.toml "
                                         "(l40, h100-sxm, a100-80gb, ...) or cpu (calibrated now); "
                                         "--device list shows the table")
    parser.add_argument("--tf32", action="store_true", help="float32 matmuls on TF32 tensor cores (default: off, "
                                                            "as in PyTorch and the measured runs)")
    parser.add_argument("--train", choices=["cuda", "cpu"], help="predict one training step (Adam) as it runs on "
                                                                  "this target instead of one forward")
    parser.add_argument("--json", action="store_true", help="print one JSON object (with every kernel)")


def model_name(model: str, size: str | None) -> str:
    """`--model ssast --size tiny` -> ssast_tiny; a full registered name passes through."""
    from models.registry import list_models

    if size is None or model in list_models():
        return model
    return f"{model}_{size}"


def run(args) -> int:
    from bench.estimate import estimate

    if args.device == "list":
        return _list_devices()
    if args.train:
        return _train(args)
    dev = _device(args.device) if args.device else None  # an unknown name fails before the trace
    result = estimate(model_name(args.model, args.size), args.tokens, args.batch, args.dtype,
                      attn_impl=args.attn_impl, scan_impl=args.scan_impl,
                      fstride=args.fstride, tstride=args.tstride, ops=True)
    if dev is not None:
        result["latency"] = _predict(result, dev, args)
    del result["op_records"]  # objects for the roofline; `ops` holds them as JSON
    if args.json:
        print(json.dumps(result))
        return 0
    _print_prediction(result, f"{result['n_tokens']} tokens ({result['frames']} frames)", "",
                      (("peak_mem_bytes", "peak memory"), ("weights_bytes", "  weights"),
                       ("input_bytes", "  input"), ("activation_peak_bytes", "  activations")), width=16)
    print(f"  bytes moved      {result['bytes_moved'] / 1e9:10.1f} GB in {result['kernels']} kernels "
          f"(read + written; --json lists them)")
    print(f"  method: {result['method']}")
    if "latency" in result:
        _print_latency(result["latency"])
    return 0


def _train(args) -> int:
    from bench.estimate import estimate_train
    from models.errors import UserInputError

    if args.device:
        raise UserInputError("--device predicts the latency of one forward; it does not combine with --train")
    result = estimate_train(model_name(args.model, args.size), args.tokens, args.batch, args.dtype,
                            attn_impl=args.attn_impl, scan_impl=args.scan_impl, target=args.train,
                            fstride=args.fstride, tstride=args.tstride)
    if args.json:
        print(json.dumps(result))
        return 0
    _print_prediction(result, f"one training step on {args.train}, {result['n_tokens']} tokens",
                      " (forward + backward)",
                      (("peak_mem_bytes", "peak memory"), ("resident_bytes", "  weights, grads, Adam, batch"),
                       ("activation_peak_bytes", "  the step's peak on top")), width=30)
    print(f"  method: {result['method']}")
    return 0


def _print_prediction(result: dict, what: str, flops_note: str, memory_rows, width: int) -> None:
    impl = f"attn_impl={result['attn_impl']}" if result["attn_impl"] else f"scan={result['scan_impl']}"
    print(f"{result['model']} ({impl}), {what}, batch {result['batch']}, {result['dtype']}")
    print(f"  {'FLOPs':<{width}} {result['flops'] / 1e12:10.3f} TFLOP{flops_note}")
    for key, label in memory_rows:
        print(f"  {label:<{width}} {result[key] / 1e9:10.3f} GB ({result[key] / 2**30:.3f} GiB)")


def _device(name: str):
    from bench.estimate.devices import device

    return device(name)


def _predict(result: dict, dev, args) -> dict:
    from bench.estimate.fit import fitted
    from bench.estimate.roofline import Workload, predict

    params = fitted()[dev.kind]["params"]
    work = Workload.from_records(result["op_records"])
    pred = predict(work, dev, params, args.dtype, args.tf32)
    fits = dev.memory_bytes is None or result["peak_mem_bytes"] <= dev.memory_bytes
    pred.update({"fits_in_memory": fits, "device_memory_bytes": dev.memory_bytes, "params": params,
                 "fitted_on": fitted()[dev.kind].get("fitted_on", "cpu reference"), "device_source": dev.source})
    if dev.kind == "gpu" and result["by_category"]["scan"]["kernels"]:
        # the GPU fit's scan is the suite's Triton scan; a fused bandwidth-bound scan (mamba-ssm) is faster
        what_if = {**params, "scan": params["other_bandwidth"]}
        pred["latency_efficient_scan_s"] = predict(work, dev, what_if, args.dtype, args.tf32)["latency_s"]
    return pred


def _t(seconds: float) -> str:
    return f"{seconds:.3f} s" if seconds >= 1 else f"{seconds * 1e3:.2f} ms"


def _print_latency(pred: dict) -> None:
    print(f"\npredicted latency on {pred['device_name']}: {_t(pred['latency_s'])} ({pred['bound']}-bound; "
          f"roofline fitted on {pred['fitted_on']} rows, bench/estimate/fitted.json)")
    if not pred["fits_in_memory"]:
        print(f"  warning: the predicted peak memory exceeds the card's {pred['device_memory_bytes'] / 1e9:.0f} GB: "
              f"it would run out of memory")
    print(f"  {'category':<12} {'time':>10} {'share':>6} {'kernels':>8}  bound   (compute / bandwidth / launch-bound time)")
    for cat, row in pred["by_category"].items():
        if not row["kernels"]:
            continue
        print(f"  {cat:<12} {_t(row['time_s']):>10} {row['time_s'] / pred['latency_s']:>6.1%} {row['kernels']:>8}  "
              f"{row['bound']:<9} ({_t(row['compute_bound_s'])} / {_t(row['bandwidth_bound_s'])} / "
              f"{_t(row['overhead_s'])})")
    if "latency_efficient_scan_s" in pred:
        print(f"  the scan is predicted as the suite's Triton scan ran on the H100 (~5% of bandwidth); as efficient as "
              f"the elementwise kernels (a fused scan such as mamba-ssm's, what-if): {_t(pred['latency_efficient_scan_s'])}")


def _list_devices() -> int:
    from bench.estimate.devices import device, gpu_names

    print(f"{'device':<10} {'name':<32} {'fp32':>7} {'tf32':>7} {'bf16':>7} {'bandwidth':>10}  (TFLOP/s, TB/s)")
    for key in gpu_names():
        d = device(key)
        print(f"{key:<10} {d.name:<32} {d.fp32_flops / 1e12:>7.1f} {d.tf32_flops / 1e12:>7.1f} "
              f"{d.bf16_flops / 1e12:>7.1f} {d.bandwidth / 1e12:>10.3f}")
    print("cpu        this CPU, calibrated at run time (a timed GEMM and copy)")
    print("sources: bench/estimate/devices.toml")
    return 0
