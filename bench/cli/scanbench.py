"""Time every selective-scan backend side by side: ms, speed-up over the reference, GFLOP/s, bandwidth, peak memory.

One process, one machine: for each sequence length L the backends run on the same inputs, shaped
and laid out as in one direction of an SSAMBA-tiny block (B=1, E=384, N=16; u row-major as the conv
gives it, delta and z channel-contiguous as the transposed Linears give them, B and C strided views
of x_proj's output). Calls go through `models.scan.selective_scan`, custom op included, in
inference mode. Timed calls are interleaved across backends (round robin), after one warm-up call
per backend that also measures memory; the median is reported. A backend whose call takes longer
than --slow-seconds (the reference at long L) gets only --slow-repeats timed calls.

Columns: median ms and IQR; speed-up = reference median / backend median; GFLOP/s from the
9 * B * L * E * N FLOPs of a scan (docs/models.md); "% mm" = that rate over the fp32 matrix-multiply
GFLOP/s measured in the same process (the yardstick); peak MB = peak resident memory during the
warm-up call above the resident memory before it (CPU: VmHWM after a /proc/self/clear_refs reset,
which only sees memory newly made resident, so an allocation the allocator serves from memory it
already holds shows as 0; CUDA: max_memory_allocated above the allocated memory before); max |err| =
largest absolute difference from the reference's output on the same inputs.

Memory bandwidth (the scan is memory-bound on a GPU, so "% mm" says little there): MB moved = the
call's compulsory memory traffic in 10^6 bytes, from the inputs' shapes and dtypes, each tensor
counted once as if each byte crossed memory once: the forward reads u, delta, z (B*E*L each), B and C
(B*N*L each), A (E*N), D and delta_bias (E each) and writes y (B*E*L); with --backward add the
backward's reads of dout and of every input again and its writes of one gradient per input, i.e.
3 x inputs + 2 x y (`scan_bytes_moved` in bench/measure/scan_kernels.py). Re-reads, intermediates
and recomputation are not counted, so it is a floor. GB/s = MB moved / median, in 10^9 bytes/s;
"% copy" = that rate over the copy yardstick: `dst.copy_(src)` of --copy-mib MiB of fp32 on the
device, measured in the same process like the matmul (warm-up, then the median of 5), at 2 x nbytes
(read + write) per copy. The JSON rows carry bytes_moved, gb_per_s and pct_of_copy; the payload
carries copy_bytes_per_s next to matmul_gflops.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bench.cli.arg_types import nonnegative_float, positive_int, positive_int_list
from models.errors import UserInputError

DEFAULT_LENGTHS = (512, 2048, 8192, 22000)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--lengths", type=positive_int_list, default=list(DEFAULT_LENGTHS),
                        help="comma-separated sequence lengths L (default: %(default)s)")
    parser.add_argument("--impls", default=None,
                        help="comma-separated backends (default: reference,chunked and the device's fast one)")
    parser.add_argument("--batch", type=positive_int, default=1, help="batch B (default: %(default)s)")
    parser.add_argument("--dim", type=positive_int, default=384, help="channels E (default: %(default)s, SSAMBA-tiny)")
    parser.add_argument("--state", type=positive_int, default=16, help="state size N (default: %(default)s)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:i] (default: %(default)s)")
    parser.add_argument("--threads", type=positive_int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--repeats", type=positive_int, default=5,
                        help="timed calls per backend (default: %(default)s)")
    parser.add_argument("--slow-seconds", type=nonnegative_float, default=1.0,
                        help="a backend whose warm-up call took longer gets --slow-repeats timed calls "
                             "(default: %(default)s)")
    parser.add_argument("--slow-repeats", type=positive_int, default=2, help="(default: %(default)s)")
    parser.add_argument("--contiguous", action="store_true",
                        help="contiguous (B, E, L) inputs instead of the model's layouts")
    parser.add_argument("--backward", action="store_true",
                        help="time forward + backward (autograd) instead of the no-grad forward")
    parser.add_argument("--matmul-size", type=positive_int, default=2048,
                        help="n of the n x n x n fp32 matmul timed as the yardstick (default: %(default)s)")
    parser.add_argument("--copy-mib", type=positive_int, default=None,
                        help="MiB of fp32 copied device to device as the bandwidth yardstick "
                             "(default: 256 on CUDA, 64 on CPU)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="also write rows and environment to this file")


def run(args) -> int:
    import torch

    from bench.measure.env import collect_env, cpu_model
    from bench.measure.env import load_average_text as _load
    from bench.measure.scan_kernels import (
        ScanBenchConfig,
        bench_length,
        copy_bytes_per_s,
        format_table,
        matmul_gflops,
        resolve_impls,
    )
    from bench.measure.timing import make_timer
    from models.scan.cpu import cpu_ext_available, cpu_ext_error

    lengths = args.lengths
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device != "cpu" and not torch.cuda.is_available():
        raise UserInputError(f"device {args.device!r} is not available")
    impls = resolve_impls(args.impls, args.device)
    cfg = ScanBenchConfig(batch=args.batch, dim=args.dim, state=args.state, device=args.device, repeats=args.repeats,
                          slow_seconds=args.slow_seconds, slow_repeats=args.slow_repeats, contiguous=args.contiguous,
                          backward=args.backward, seed=args.seed)
    timer, timer_name = make_timer(args.device)
    mm = matmul_gflops(args.device, timer, args.matmul_size)
    copy_mib = args.copy_mib or (64 if args.device == "cpu" else 256)  # CPU: moderate, so CI stays fast
    copy_rate = copy_bytes_per_s(args.device, timer, copy_mib)
    cpp = "built" if cpu_ext_available() else f"unavailable ({cpu_ext_error()})"
    mode = "forward+backward" if args.backward else "forward, no grad"
    layout = "contiguous inputs" if args.contiguous else "SSAMBA layouts"
    device_name = cpu_model() if args.device == "cpu" else torch.cuda.get_device_name(args.device)
    print(f"selective scan, B={args.batch} E={args.dim} N={args.state}, {mode}, {layout}")
    print(f"device {args.device} ({device_name}), torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"cpu_cpp {cpp}")
    print(f"yardstick: fp32 matmul {args.matmul_size}^3 = {mm:.1f} GFLOP/s, fp32 copy {copy_mib} MiB = "
          f"{copy_rate / 1e9:.1f} GB/s (read + write); scan FLOPs = 9*B*L*E*N{' x3' if args.backward else ''}, "
          f"bytes = each tensor once{' (3 x inputs + 2 x y)' if args.backward else ''}; timer {timer_name}; "
          f"load average {_load()} (other processes on this machine share its cores)")
    rows = []
    for length in lengths:
        new = bench_length(length, impls, cfg, timer, copy_rate)
        table = format_table(new, mm)
        print(table if not rows else table.split("\n", 2)[2], flush=True)  # the header once
        rows += new
    print(f"load average at the end {_load()}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if not k.startswith("_")}
        payload = {"config": config, "matmul_gflops": mm, "copy_bytes_per_s": copy_rate, "rows": rows,
                   "env": collect_env(torch.get_num_threads())}
        args.json.write_text(json.dumps(payload, indent=1, default=str))
        print(f"wrote {args.json}")
    return 0
