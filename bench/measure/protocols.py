"""The measurement protocols on CPU and CUDA: the `steady` and `paper` protocols.

Timing: CUDA events around each call on CUDA (synchronised), `time.perf_counter` on CPU with the
torch thread count fixed by the caller and recorded. A measurement returns its raw samples with the
summary (optimum-benchmark's Latency/Memory records; torch.utils.benchmark's median and IQR).

  steady  model built outside the timed region, eval() + inference_mode; one cold call (recorded as
          latency_cold_s); one untimed memory call (counts as warm-up); warm-up calls, at least
          `warmup_min` and until two consecutive running medians agree (or a cap); then timed calls
          until n >= min_repeats and min_time_s is spent, at most max_repeats, and no longer than
          max_time_s (slow cases stop early, n_samples says so). Reports median, IQR, p10, p90, ...
  paper   the authors' protocol (SSAMBA's efficiency script): `runs` runs, each on a freshly built
          model under no_grad, one forward, no warm-up; the mean including the cold first run.

Memory is bench/measure/memory.py's (the probes and the live-tensor counter); timing is
bench/measure/timing.py's. What each number means: docs/protocols.md.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from bench.measure.memory import measure_tensor_bytes, memory_probe, model_tensors, release_memory
from bench.measure.protocol_settings import PaperConfig, SteadyConfig
from bench.measure.timing import make_timer, summarize, time_steady
from bench.store.schema import Metric


@dataclass
class Measurement:
    """What a protocol returns: metric records, the raw samples, and the last model and input (for
    extra metric producers)."""

    metrics: list[Metric]
    samples: dict
    model: torch.nn.Module
    inputs: torch.Tensor


def _latency_metrics(stats: dict, keys, n: int, method: str, batch: int, n_tokens: int, headline: str) -> list[Metric]:
    rows = [Metric("latency_s", k, stats[k], "s", n, method) for k in keys]
    rows.append(Metric("throughput_tokens_per_s", headline, batch * n_tokens / stats[headline], "tokens/s", n,
                       f"batch * n_tokens / {headline} latency"))
    return rows


def measure_steady(build: Callable[[], torch.nn.Module], make_input: Callable[[], torch.Tensor], *, device: str,
                   batch: int, n_tokens: int, cfg: SteadyConfig, track_tensor_bytes: bool = True) -> Measurement:
    start = time.perf_counter()
    model = build()
    x = make_input()
    if device.startswith("cuda"):
        torch.cuda.synchronize(torch.device(device))
    build_s = time.perf_counter() - start
    timer, timer_name = make_timer(device)
    probe = memory_probe(device)
    memory: list[Metric] = []
    call = lambda: model(x)  # noqa: E731 (a name, for the protocol and the memory call)
    memory_call = None
    if track_tensor_bytes and not device.startswith("cuda"):
        def memory_call():
            base, peak = measure_tensor_bytes(call, model_tensors(model, x))
            memory.append(Metric("base_mem_bytes", "tensor_bytes", base, "bytes", 1, "weights + buffers + input"))
            memory.append(Metric("peak_mem_bytes", "tensor_bytes", peak, "bytes", 1,
                                 "TorchDispatchMode live storages, weights and input included"))
    with torch.inference_mode():
        s = time_steady(call, cfg, timer, memory_call=memory_call, timed_window=lambda: probe.window(memory))
    stats = summarize(s.samples_s)
    metrics = _latency_metrics(stats, ("median", "iqr", "p10", "p90", "mean", "min", "max"), len(s.samples_s),
                               timer_name, batch, n_tokens, "median")
    metrics += [
        Metric("latency_cold_s", "value", s.cold_s, "s", 1, f"{timer_name}, first call after build"),
        Metric("warmup_calls", "value", s.warmup_calls, "count", 1, f"stopped: {s.warmup_stop}"),
        Metric("build_time_s", "value", build_s, "s", 1, "model build + input, untimed region"),
        *memory,
    ]
    samples = {"cold_s": s.cold_s, "warmup_s": s.warmup_s, "samples_s": s.samples_s,
               "warmup_calls": s.warmup_calls, "warmup_stop": s.warmup_stop, "timed_stop": s.timed_stop}
    return Measurement(metrics, samples, model, x)


def measure_paper(build: Callable[[], torch.nn.Module], make_input: Callable[[], torch.Tensor], *, device: str,
                  batch: int, n_tokens: int, cfg: PaperConfig, track_tensor_bytes: bool = True) -> Measurement:
    timer, timer_name = make_timer(device)
    probe = memory_probe(device)
    runs, builds, windows = [], [], []
    model = x = None
    for _ in range(cfg.runs):
        model = x = None  # the previous run's model is gone before the next is built
        release_memory(device)
        start = time.perf_counter()
        model = build()
        x = make_input()
        builds.append(time.perf_counter() - start)
        window: list[Metric] = []
        with torch.no_grad(), probe.window(window):
            runs.append(timer(lambda: model(x)))
        windows.append(window)
    stats = summarize(runs)
    method = f"{timer_name}, fresh model per run, no warm-up"
    metrics = _latency_metrics(stats, ("mean", "median", "min", "max", "std"), len(runs), method, batch, n_tokens,
                               "mean")
    metrics += [
        Metric("latency_cold_s", "value", runs[0], "s", 1, f"{timer_name}, first run"),
        Metric("build_time_s", "mean", float(np.mean(builds)), "s", len(builds), "model build + input, untimed"),
    ]
    # Memory: the largest of the runs' peaks (they agree up to allocator noise).
    best: dict[tuple, Metric] = {}
    for window in windows:
        for m in window:
            key = (m.name, m.stat)
            if key not in best or m.value > best[key].value:
                best[key] = dataclasses.replace(m, n_samples=len(windows))
    metrics += list(best.values())
    if track_tensor_bytes and not device.startswith("cuda"):
        with torch.no_grad():
            base, peak = measure_tensor_bytes(lambda: model(x), model_tensors(model, x))
        metrics += [Metric("base_mem_bytes", "tensor_bytes", base, "bytes", 1, "weights + buffers + input"),
                    Metric("peak_mem_bytes", "tensor_bytes", peak, "bytes", 1,
                           "TorchDispatchMode live storages, weights and input included (extra untimed forward)")]
    samples = {"runs_s": runs, "build_s": builds}
    return Measurement(metrics, samples, model, x)
