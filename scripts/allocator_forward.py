"""One model's forward in a fresh process under a `cpu_allocator` mode: time, page faults and RSS per call.

    python scripts/allocator_forward.py retain ssamba_tiny 44032            # 22,016 tokens
    python scripts/allocator_forward.py glibc ssast_tiny 16384 --attn eager  # 8192 tokens

Four forwards (the first, then three warm), batch 1, fp32, 2 threads; prints one line: the times, the
minor page faults of each forward (getrusage), VmRSS after each and the process's VmHWM. Run each mode
in its own process (mallopt cannot be undone). The measurements behind docs/protocols.md, "CPU: the
allocator is part of the measurement" (results/reference/cpu-2core-amd-epyc-allocator/).
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.measure.allocator import CPU_ALLOCATORS, apply_cpu_allocator  # noqa: E402


def status_mib(key: str) -> int:
    line = next(line for line in open("/proc/self/status") if line.startswith(key))
    return int(line.split()[1]) // 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("mode", choices=CPU_ALLOCATORS)
    parser.add_argument("model")
    parser.add_argument("frames", type=int)
    parser.add_argument("--attn", default=None, help="attn_impl for SSAST (eager, sdpa)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    apply_cpu_allocator(args.mode)  # before torch allocates anything for the model
    import torch

    from models import create_model

    torch.set_num_threads(args.threads)
    options = {"attn_impl": args.attn} if args.attn else {}
    model = create_model(args.model, input_frames=args.frames, **options).eval()
    x = torch.randn(1, args.frames, 128)
    times, faults, rss = [], [], []
    with torch.inference_mode():
        for _ in range(4):
            before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            start = time.perf_counter()
            model(x)
            times.append(round(time.perf_counter() - start, 2))
            faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
            rss.append(status_mib("VmRSS"))
    print(f"{args.mode:7s} {args.model} {options} {args.frames}: times {times} faults {faults} rss MiB {rss} "
          f"hwm {status_mib('VmHWM')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
