"""The Mamba mixer's CPU path against its targets, measured side by side in one process.

Three measurements, each run for the fused path (`fused_mixer=True`: models/scan/causal_conv.py,
the reverse scan and its combining epilogue) and the authors' op-by-op path (`fused_mixer=False`):

- `profile_forward`: one profiled inference forward (torch.profiler, after a warm-up call), its
  self CPU time split into matrix multiplies, the selective scan, the causal conv, and everything
  else: "outside" = 1 - (mm + scan) / total, the share the fused path exists to shrink;
- `time_forward`: the median wall time of inference forwards, set against the FLOP floor, the time
  the model's FLOPs take at the fp32 GEMM rate measured in the same run (`gemm_floor_ratio`);
- `time_train_step`: the median wall time of a training step (forward, cross-entropy, backward,
  Adam), the first step kept apart (one-off costs), as the fine-tuning recipe runs it.

What the verb prints and its targets: bench/cli/mixerbench.py (`ssamba-bench mixerbench`).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

from bench.measure.timing import summarize

# Self-time categories of a profiled forward, by operator name (the custom ops' wrappers count as
# their kernels: ssamba_bench::selective_scan's own time is argument handling around the C++ call).
MATMUL_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm")
SCAN_PREFIXES = ("ssamba_scan_cpu::fwd", "ssamba_scan_cpu::bwd", "ssamba_bench::selective_scan")
CONV_PREFIXES = ("ssamba_scan_cpu::conv", "ssamba_bench::causal_conv1d", "aten::mkldnn_convolution",
                 "aten::convolution", "aten::_convolution", "aten::conv1d")


def _category(name: str) -> str:
    if name in MATMUL_OPS:
        return "mm"
    if name.startswith(SCAN_PREFIXES):
        return "scan"
    if name.startswith(CONV_PREFIXES):
        return "conv"
    return "other"


def profile_forward(model: torch.nn.Module, x: torch.Tensor) -> dict:
    """Self CPU seconds of one inference forward by category, their total, and the top operators."""
    with torch.inference_mode():
        model(x)  # warm-up: first-call costs are not the forward's
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            model(x)
    by_category = {"mm": 0.0, "scan": 0.0, "conv": 0.0, "other": 0.0}
    ops = []
    for event in prof.key_averages():
        seconds = event.self_cpu_time_total / 1e6
        by_category[_category(event.key)] += seconds
        ops.append((event.key, seconds, event.count))
    total = sum(by_category.values())
    ops.sort(key=lambda op: -op[1])
    return {
        "total_s": total,
        **{f"{k}_s": v for k, v in by_category.items()},
        "outside_mm_scan_share": 1 - (by_category["mm"] + by_category["scan"]) / total if total else float("nan"),
        "top_ops": [{"op": name, "self_s": s, "calls": n} for name, s, n in ops[:8]],
    }


def _median_seconds(call: Callable[[], object], repeats: int) -> dict:
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        samples.append(time.perf_counter() - start)
    return summarize(samples)


def time_forward(model: torch.nn.Module, x: torch.Tensor, repeats: int) -> dict:
    """Median (and spread) of `repeats` inference forwards after one warm-up call, in seconds."""
    with torch.inference_mode():
        model(x)
        return _median_seconds(lambda: model(x), repeats)


def time_train_step(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, repeats: int, lr: float = 1e-3) -> dict:
    """Training steps as the fine-tuning recipe runs them (Adam, betas 0.95/0.999): the first step's
    seconds, then the median of `repeats` more."""
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=lr, betas=(0.95, 0.999))

    def step():
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    start = time.perf_counter()
    step()
    first = time.perf_counter() - start
    return {"first_s": first, **_median_seconds(step, repeats)}
