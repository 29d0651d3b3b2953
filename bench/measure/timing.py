"""Timing: a synchronised timer per device, the steady protocol's call sequence, and sample summaries.

CUDA events around each call on CUDA (synchronised before and after), `time.perf_counter` on CPU.
The steady protocol's warm-up rule and stopping rules are in `time_steady` (docs/protocols.md).
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from bench.measure.protocol_settings import SteadyConfig


def make_timer(device: str) -> tuple[Callable[[Callable], float], str]:
    """A function timing one call in seconds (synchronised), and its name for the `method` column."""
    if device.startswith("cuda"):
        dev = torch.device(device)

        def cuda_timed(call):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize(dev)
            start.record()
            call()
            end.record()
            end.synchronize()
            return start.elapsed_time(end) / 1e3

        return cuda_timed, "cuda_events"

    def cpu_timed(call):
        start = time.perf_counter()
        call()
        return time.perf_counter() - start

    return cpu_timed, "perf_counter"


@dataclass
class SteadySamples:
    """Raw samples of the steady protocol (seconds)."""

    cold_s: float
    warmup_s: list[float] = field(default_factory=list)
    samples_s: list[float] = field(default_factory=list)
    warmup_calls: int = 0  # including the untimed memory call
    warmup_stop: str = ""  # stable | warmup_max | max_time_s
    timed_stop: str = ""  # min_repeats_and_time | max_repeats | max_time_s


def _running_median(values: list[float], window: int = 5) -> float:
    return statistics.median(values[-window:])


def time_steady(call: Callable, cfg: SteadyConfig, timer: Callable[[Callable], float], *,
                memory_call: Callable | None = None,
                timed_window: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
                ) -> SteadySamples:
    """The steady protocol's call sequence on an already built model (see module docstring)."""
    out = SteadySamples(cold_s=timer(call))
    start = time.perf_counter()
    if memory_call is not None:
        memory_call()
        out.warmup_calls += 1
    medians: list[float] = []
    while True:
        elapsed = time.perf_counter() - start
        last = out.warmup_s[-1] if out.warmup_s else out.cold_s
        if len(out.warmup_s) >= cfg.warmup_max:
            out.warmup_stop = "warmup_max"
            break
        if out.warmup_calls >= 1 and elapsed + last > cfg.max_time_s:
            out.warmup_stop = "max_time_s"
            break
        out.warmup_s.append(timer(call))
        out.warmup_calls += 1
        medians.append(_running_median(out.warmup_s))
        if (len(out.warmup_s) >= cfg.warmup_min and len(medians) >= 2
                and abs(medians[-1] - medians[-2]) <= cfg.warmup_rtol * medians[-2]):
            out.warmup_stop = "stable"
            break
    with timed_window():
        start = time.perf_counter()
        while True:
            out.samples_s.append(timer(call))
            n, elapsed = len(out.samples_s), time.perf_counter() - start
            if n >= cfg.max_repeats:
                out.timed_stop = "max_repeats"
                break
            if n >= cfg.min_repeats and elapsed >= cfg.min_time_s:
                out.timed_stop = "min_repeats_and_time"
                break
            if elapsed + statistics.median(out.samples_s) > cfg.max_time_s:
                out.timed_stop = "max_time_s"  # the next call would overrun the case's time cap
                break
    return out


def summarize(samples: list[float]) -> dict[str, float]:
    a = np.asarray(samples, dtype=np.float64)
    p10, p25, p75, p90 = np.percentile(a, [10, 25, 75, 90])
    return {"median": float(np.median(a)), "iqr": float(p75 - p25), "p10": float(p10), "p90": float(p90),
            "mean": float(a.mean()), "min": float(a.min()), "max": float(a.max()),
            "std": float(a.std(ddof=1)) if a.size > 1 else 0.0}


