"""Calibrate "this CPU" for the roofline model: a timed fp32 GEMM and a timed copy, at the current threads.

The roofline needs a peak FLOP rate and a memory bandwidth. For a GPU they come from its datasheet
(bench/estimate/devices.toml); a CPU's depend on its cores, vector units, thread count and memory
channels, so they are measured: the best of a few square fp32 matmuls (the rate the linear layers
can reach) and the best of a few copies of a buffer far larger than any cache (read + write bytes
per second, what a streaming elementwise kernel can reach). Best, not median: the rate the
hardware can do; a busy machine lowers it, and then the prediction (calibrated slower) moves with it.
About a second.
"""

from __future__ import annotations

import time

import torch


def _best_seconds(call, repeats: int) -> float:
    call()  # warm-up: first-touch page faults, thread pool start, clocks ramping up
    call()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - start)
    return best


def calibrate_cpu(gemm_size: int = 1024, copy_mib: int = 256, repeats: int = 10) -> dict:
    """{gemm_flops_per_s, copy_bytes_per_s, threads, ...} of this CPU, fp32."""
    a = torch.randn(gemm_size, gemm_size)
    b = torch.randn(gemm_size, gemm_size)
    out = torch.empty(gemm_size, gemm_size)
    gemm_s = _best_seconds(lambda: torch.mm(a, b, out=out), repeats)
    src = torch.ones(copy_mib * 2**20 // 4)
    dst = torch.empty_like(src)
    copy_s = _best_seconds(lambda: dst.copy_(src), repeats)
    return {
        "gemm_flops_per_s": 2 * gemm_size**3 / gemm_s,
        "copy_bytes_per_s": 2 * src.numel() * src.element_size() / copy_s,  # read + write
        "threads": torch.get_num_threads(),
        "method": f"best of {repeats}: fp32 {gemm_size}^3 GEMM, copy of {copy_mib} MiB (read + write bytes)",
    }
