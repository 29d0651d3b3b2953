"""Time every selective-scan backend side by side: ms, speed-up over the reference, GFLOP/s, peak memory.

One process, one machine: for each sequence length L the backends run on the same inputs, shaped
and laid out as in one direction of an SSAMBA-tiny block (B=1, E=384, N=16; u row-major as the conv
gives it, delta and z channel-contiguous as the transposed Linears give them, B and C strided views
of x_proj's output). Calls go through `models.scan.selective_scan`, custom op included, in
inference mode. Timed calls are interleaved across backends (round robin), after one warm-up call
per backend that also measures memory; the median is reported. A backend whose call takes longer
than --slow-seconds (the reference at long L) gets only --slow-repeats timed calls.

Columns: median ms and IQR; speed-up = reference median / backend median; GFLOP/s from the
9 * B * L * E * N FLOPs of a scan (MODELS.md); "% mm" = that rate over the fp32 matrix-multiply
GFLOP/s measured in the same process (the yardstick); peak MB = peak resident memory during the
warm-up call above the resident memory before it (CPU: VmHWM after a /proc/self/clear_refs reset,
which only sees memory newly made resident, so an allocation the allocator serves from memory it
already holds shows as 0; CUDA: max_memory_allocated above the allocated memory before); max |err| =
largest absolute difference from the reference's output on the same inputs.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

import torch

from bench.measure import make_timer, memory_probe, summarize
from models.errors import UserInputError
from models.scan import SCAN_IMPLS, resolve_scan_impl, scan_flops, selective_scan
from models.scan.cpu import cpu_ext_available, cpu_ext_error

DEFAULT_LENGTHS = (512, 2048, 8192, 22000)
DEFAULT_IMPLS = {"cpu": ("reference", "chunked", "cpu_cpp"), "cuda": ("reference", "chunked", "mamba_ssm")}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--lengths", default=",".join(map(str, DEFAULT_LENGTHS)),
                        help="comma-separated sequence lengths L (default: %(default)s)")
    parser.add_argument("--impls", default=None,
                        help="comma-separated backends (default: reference,chunked and the device's fast one)")
    parser.add_argument("--batch", type=int, default=1, help="batch B (default: %(default)s)")
    parser.add_argument("--dim", type=int, default=384, help="channels E (default: %(default)s, SSAMBA-tiny)")
    parser.add_argument("--state", type=int, default=16, help="state size N (default: %(default)s)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:i] (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per backend (default: %(default)s)")
    parser.add_argument("--slow-seconds", type=float, default=1.0,
                        help="a backend whose warm-up call took longer gets --slow-repeats timed calls "
                             "(default: %(default)s)")
    parser.add_argument("--slow-repeats", type=int, default=2, help="(default: %(default)s)")
    parser.add_argument("--contiguous", action="store_true",
                        help="contiguous (B, E, L) inputs instead of the model's layouts")
    parser.add_argument("--backward", action="store_true",
                        help="time forward + backward (autograd) instead of the no-grad forward")
    parser.add_argument("--matmul-size", type=int, default=2048,
                        help="n of the n x n x n fp32 matmul timed as the yardstick (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="also write rows and environment to this file")


def make_inputs(batch: int, dim: int, nstate: int, length: int, *, device: str, seed: int, contiguous: bool):
    """Scan arguments as SSAMBA-tiny's mixer passes them (S4D-real A, D = 1, Mamba's dt init)."""
    gen = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=gen).to(device)

    rank = math.ceil(dim / 2 / 16)  # dt_rank of the model whose E is `dim`
    u = randn(batch, dim, length)  # (B, E, L): the causal conv's output, row-major
    z = randn(batch, length, dim).transpose(1, 2)  # (B, E, L) view of in_proj's (B, L, E) output
    delta = (0.1 * randn(batch, length, dim)).transpose(1, 2)  # dt_proj output, before its bias
    x_dbl = randn(batch, length, rank + 2 * nstate)  # x_proj output: dt, B, C side by side
    B = x_dbl[..., rank:rank + nstate].transpose(1, 2)  # (B, N, L), strided view
    C = x_dbl[..., rank + nstate:].transpose(1, 2)  # (B, N, L), strided view
    if contiguous:
        z, delta, B, C = (t.contiguous() for t in (z, delta, B, C))
    A = -torch.arange(1, nstate + 1, dtype=torch.float32, device=device).repeat(dim, 1)  # (E, N)
    D = torch.ones(dim, device=device)
    dt = torch.exp(torch.rand(dim, generator=gen) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3))
    delta_bias = (dt + torch.log(-torch.expm1(-dt))).to(device)  # inverse softplus of dt in [1e-3, 0.1]
    return dict(u=u, delta=delta, A=A, B=B, C=C, D=D, z=z, delta_bias=delta_bias)


def matmul_gflops(device: str, timer, size: int = 2048, repeats: int = 5) -> float:
    """fp32 matrix-multiply rate on this device and thread count: the yardstick for the scans."""
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    timer(lambda: a @ b)  # warm-up
    seconds = summarize([timer(lambda: a @ b) for _ in range(repeats)])["median"]
    return 2 * size**3 / seconds / 1e9


def _call(impl: str, inputs: dict, backward: bool):
    if not backward:
        def forward():
            with torch.inference_mode():
                return selective_scan(**inputs, delta_softplus=True, impl=impl)
        return forward
    leaves = {k: v.detach().clone().requires_grad_(True) for k, v in inputs.items()}
    grad = torch.ones_like(leaves["u"])

    def forward_backward():
        y = selective_scan(**leaves, delta_softplus=True, impl=impl)
        y.backward(grad)
        return y.detach()
    return forward_backward


def _peak_extra_bytes(sink: list[dict]) -> int | None:
    base = next((r["value"] for r in sink if r["metric"] == "base_mem_bytes"), None)
    peak = next((r["value"] for r in sink if r["metric"] == "peak_mem_bytes"), None)
    return None if base is None or peak is None else int(peak - base)


def bench_length(length: int, impls: list[str], args, timer) -> list[dict]:
    inputs = make_inputs(args.batch, args.dim, args.state, length, device=args.device, seed=args.seed,
                         contiguous=args.contiguous)
    calls = {impl: _call(impl, inputs, args.backward) for impl in impls}
    rows, outputs, samples, repeats = {}, {}, {}, {}
    probe = memory_probe(args.device)
    for impl in impls:
        sink: list[dict] = []
        start = time.perf_counter()
        with probe.window(sink):
            outputs[impl] = calls[impl]()
        warm_s = time.perf_counter() - start
        repeats[impl] = args.slow_repeats if warm_s > args.slow_seconds else args.repeats
        samples[impl] = []
        rows[impl] = {"L": length, "impl": impl, "peak_extra_bytes": _peak_extra_bytes(sink),
                      "memory_method": probe.method if hasattr(probe, "method") else "cuda max_memory_allocated"}
    reference = outputs.get("reference")
    for impl in impls:
        err = None if reference is None else float((outputs[impl].float() - reference.float()).abs().max())
        rows[impl]["max_abs_err_vs_reference"] = err
    outputs.clear()
    for r in range(max(repeats.values())):  # round robin: drift hits every backend alike
        for impl in impls:
            if r < repeats[impl]:
                samples[impl].append(timer(calls[impl]))
    flops = scan_flops(args.batch, length, args.dim, args.state) * (3 if args.backward else 1)
    ref_median = summarize(samples["reference"])["median"] if "reference" in samples else None
    for impl in impls:
        stats = summarize(samples[impl])
        rows[impl].update(
            median_s=stats["median"], iqr_s=stats["iqr"], n_samples=len(samples[impl]), samples_s=samples[impl],
            speedup_vs_reference=None if ref_median is None else ref_median / stats["median"],
            gflops=flops / stats["median"] / 1e9,
        )
    return [rows[impl] for impl in impls]


def _resolve_impls(args) -> list[str]:
    device_type = torch.device(args.device).type
    names = args.impls.split(",") if args.impls else list(DEFAULT_IMPLS.get(device_type, ("reference", "chunked")))
    chosen = []
    for name in names:
        if name not in SCAN_IMPLS:
            raise UserInputError(f"unknown backend {name!r}; choose from {', '.join(SCAN_IMPLS)}")
        concrete = resolve_scan_impl(name, args.device)
        if concrete != name and name != "auto":
            print(f"note: {name} is unavailable on {args.device}; skipped (it would run {concrete})")
            continue
        if concrete not in chosen:
            chosen.append(concrete)
    return chosen


def format_table(rows: list[dict], mm_gflops: float) -> str:
    header = f"{'L':>6} {'backend':<10} {'median ms':>10} {'IQR ms':>8} {'n':>2} {'speed-up':>9} " \
             f"{'GFLOP/s':>8} {'% mm':>6} {'peak MB':>8} {'max |err|':>9}"
    lines = [header, "-" * len(header)]
    for row in rows:
        speedup = "" if row["speedup_vs_reference"] is None else f"{row['speedup_vs_reference']:.1f}x"
        peak = "" if row["peak_extra_bytes"] is None else f"{row['peak_extra_bytes'] / 2**20:.0f}"
        err = "" if row["max_abs_err_vs_reference"] is None else f"{row['max_abs_err_vs_reference']:.1e}"
        lines.append(
            f"{row['L']:>6} {row['impl']:<10} {row['median_s'] * 1e3:>10.2f} {row['iqr_s'] * 1e3:>8.2f} "
            f"{row['n_samples']:>2} {speedup:>9} {row['gflops']:>8.2f} {100 * row['gflops'] / mm_gflops:>5.1f}% "
            f"{peak:>8} {err:>9}"
        )
    return "\n".join(lines)


def _load() -> str:
    try:
        return "%.1f" % os.getloadavg()[0]
    except OSError:
        return "n/a"


def run(args) -> int:
    lengths = [int(x) for x in str(args.lengths).split(",") if x.strip()]
    if not lengths or min(lengths) < 1:
        raise UserInputError("--lengths needs positive integers")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device != "cpu" and not torch.cuda.is_available():
        raise UserInputError(f"device {args.device!r} is not available")
    impls = _resolve_impls(args)
    timer, timer_name = make_timer(args.device)
    mm = matmul_gflops(args.device, timer, args.matmul_size)
    from bench.env import cpu_model

    cpp = "built" if cpu_ext_available() else f"unavailable ({cpu_ext_error()})"
    mode = "forward+backward" if args.backward else "forward, no grad"
    layout = "contiguous inputs" if args.contiguous else "SSAMBA layouts"
    device_name = cpu_model() if args.device == "cpu" else torch.cuda.get_device_name(args.device)
    print(f"selective scan, B={args.batch} E={args.dim} N={args.state}, {mode}, {layout}")
    print(f"device {args.device} ({device_name}), torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"cpu_cpp {cpp}")
    print(f"yardstick: fp32 matmul {args.matmul_size}^3 = {mm:.1f} GFLOP/s; "
          f"scan FLOPs = 9*B*L*E*N{' x3' if args.backward else ''}; timer {timer_name}; "
          f"load average {_load()} (other processes on this machine share its cores)")
    rows = []
    for length in lengths:
        new = bench_length(length, impls, args, timer)
        table = format_table(new, mm)
        print(table if not rows else table.split("\n", 2)[2], flush=True)  # the header once
        rows += new
    print(f"load average at the end {_load()}")
    if args.json:
        from bench.env import collect_env

        args.json.parent.mkdir(parents=True, exist_ok=True)
        config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if not k.startswith("_")}
        payload = {"config": config, "matmul_gflops": mm, "rows": rows, "env": collect_env(torch.get_num_threads())}
        args.json.write_text(json.dumps(payload, indent=1, default=str))
        print(f"wrote {args.json}")
    return 0
