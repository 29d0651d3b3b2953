"""The measurement protocols on CPU and CUDA: `steady`, `paper` and `train`.

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
  train   training steps (bench/measure/train_step.py: forward, cross-entropy, backward, Adam) under
          the steady protocol's rules: the first step on its own (latency_cold_s: it allocates Adam's
          state and the first gradients), warm-up, timed steps; memory over the timed steps, gradients
          and optimiser state included (on CPU: tensor_bytes of one extra untimed step after them).

Energy per timed call (steady, train) comes from NVML or RAPL where readable (bench/measure/energy.py),
else it is absent. Each protocol runs its calls under autocast when the case's `amp` asks (bench/measure/precision.py).
Memory is bench/measure/memory.py's (the probes and the live-tensor counter); timing is
bench/measure/timing.py's. What each number means: docs/protocols.md.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from bench.measure.energy import energy_meter
from bench.measure.memory import measure_tensor_bytes, memory_probe, model_tensors, release_memory
from bench.measure.precision import autocast
from bench.measure.protocol_settings import PaperConfig, SteadyConfig
from bench.measure.timing import make_timer, summarize, time_steady
from bench.measure.train_step import make_train_step
from bench.store.schema import Metric


@dataclass
class Measurement:
    """What a protocol returns: metric records, the raw samples, and the last model and input (for
    extra metric producers)."""

    metrics: list[Metric]
    samples: dict
    model: torch.nn.Module
    inputs: torch.Tensor
    op_names: set[str] = dataclasses.field(default_factory=set)  # aten ops of the tensor-bytes call (CPU)


def _latency_metrics(stats: dict, keys, n: int, method: str, batch: int, n_tokens: int, headline: str) -> list[Metric]:
    rows = [Metric("latency_s", k, stats[k], "s", n, method) for k in keys]
    rows.append(Metric("throughput_tokens_per_s", headline, batch * n_tokens / stats[headline], "tokens/s", n,
                       f"batch * n_tokens / {headline} latency"))
    return rows


def _steady_metrics(s, stats_timer: str, batch: int, n_tokens: int, build_s: float, cold_method: str) -> list[Metric]:
    stats = summarize(s.samples_s)
    metrics = _latency_metrics(stats, ("median", "iqr", "p10", "p90", "mean", "min", "max"), len(s.samples_s),
                               stats_timer, batch, n_tokens, "median")
    return metrics + [
        Metric("latency_cold_s", "value", s.cold_s, "s", 1, cold_method),
        Metric("warmup_calls", "value", s.warmup_calls, "count", 1, f"stopped: {s.warmup_stop}"),
        Metric("build_time_s", "value", build_s, "s", 1, "model build + input, untimed region"),
    ]


def _steady_samples(s) -> dict:
    return {"cold_s": s.cold_s, "warmup_s": s.warmup_s, "samples_s": s.samples_s,
            "warmup_calls": s.warmup_calls, "warmup_stop": s.warmup_stop, "timed_stop": s.timed_stop}


@dataclass
class _TimedWindow:
    """The steady loop's timed window: memory probe and, where a counter exists, the energy meter."""

    probe: object
    memory: list
    meter: object | None
    energy: object | None = None  # the meter's EnergyWindow of the timed calls

    @contextlib.contextmanager
    def __call__(self):
        with self.probe.window(self.memory), (self.meter.window() if self.meter else contextlib.nullcontext()) as w:
            self.energy = w
            yield

    def energy_metrics(self, calls: int, what: str) -> list[Metric]:
        return self.meter.metrics(self.energy, calls, what) if self.meter and self.energy else []


def _timed_build(device: str, make: Callable[[], object]) -> tuple[object, float]:
    """What `make` builds (model, input, optimiser), and its seconds: the untimed region's build time."""
    start = time.perf_counter()
    built = make()
    if device.startswith("cuda"):
        torch.cuda.synchronize(torch.device(device))
    return built, time.perf_counter() - start


def _autocast_call(device: str, amp: str, fn: Callable[[], object]) -> Callable[[], object]:
    """fn run under the case's autocast (a no-op for amp "none"), entered afresh on every call."""
    def call():
        with autocast(device, amp):
            return fn()
    return call


def measure_steady(build: Callable[[], torch.nn.Module], make_input: Callable[[], torch.Tensor], *, device: str,
                   batch: int, n_tokens: int, cfg: SteadyConfig, track_tensor_bytes: bool = True,
                   amp: str = "none") -> Measurement:
    (model, x), build_s = _timed_build(device, lambda: (build(), make_input()))
    timer, timer_name = make_timer(device)
    probe = memory_probe(device)
    memory: list[Metric] = []
    call = _autocast_call(device, amp, lambda: model(x))  # the protocol's call and the memory call
    memory_call = None
    op_names: set[str] = set()
    if track_tensor_bytes and not device.startswith("cuda"):
        def memory_call():
            base, peak = measure_tensor_bytes(call, model_tensors(model, x), op_names=op_names)
            memory.append(Metric("base_mem_bytes", "tensor_bytes", base, "bytes", 1, "weights + buffers + input"))
            memory.append(Metric("peak_mem_bytes", "tensor_bytes", peak, "bytes", 1,
                                 "TorchDispatchMode live storages, weights and input included"))
    window = _TimedWindow(probe, memory, energy_meter(device))
    with torch.inference_mode():
        s = time_steady(call, cfg, timer, memory_call=memory_call, timed_window=window)
    metrics = _steady_metrics(s, timer_name, batch, n_tokens, build_s, f"{timer_name}, first call after build")
    return Measurement(metrics + memory + window.energy_metrics(len(s.samples_s), "call"), _steady_samples(s), model, x,
                       op_names)


def measure_train(build: Callable[[], torch.nn.Module], make_input: Callable[[], torch.Tensor], *, device: str,
                  batch: int, n_tokens: int, cfg: SteadyConfig, track_tensor_bytes: bool = True,
                  seed: int = 0, amp: str = "none") -> Measurement:
    """The `train` protocol: training steps timed under the steady rules (module docstring)."""
    train, build_s = _timed_build(device, lambda: make_train_step(build(), make_input(), seed=seed, amp=amp))
    timer, timer_name = make_timer(device)
    probe = memory_probe(device)
    memory: list[Metric] = []
    window = _TimedWindow(probe, memory, energy_meter(device))
    s = time_steady(train.step, cfg, timer, timed_window=window)
    op_names: set[str] = set()
    if track_tensor_bytes and not device.startswith("cuda"):
        # One extra step under the counter, after the timed ones (it is slow: Python sees every op of the
        # backward too, and would eat the warm-up's time cap); the state is every step's: previous
        # gradients and Adam's moments alive.
        base, peak = measure_tensor_bytes(train.step, train.live_tensors(), op_names=op_names)
        memory.append(Metric("base_mem_bytes", "tensor_bytes", base, "bytes", 1,
                             "weights + buffers + gradients + Adam state + batch and labels"))
        memory.append(Metric("peak_mem_bytes", "tensor_bytes", peak, "bytes", 1,
                             "TorchDispatchMode live storages over one training step (forward, backward, Adam), "
                             "gradients and optimiser state included (an extra untimed step)"))
    metrics = _steady_metrics(s, timer_name, batch, n_tokens, build_s,
                              f"{timer_name}, first training step after build (allocates Adam state, first grads)")
    return Measurement(metrics + memory + window.energy_metrics(len(s.samples_s), "training step"),
                       _steady_samples(s), train.model, train.inputs, op_names)


def measure_paper(build: Callable[[], torch.nn.Module], make_input: Callable[[], torch.Tensor], *, device: str,
                  batch: int, n_tokens: int, cfg: PaperConfig, track_tensor_bytes: bool = True,
                  amp: str = "none") -> Measurement:
    timer, timer_name = make_timer(device)
    probe = memory_probe(device)
    runs, builds, windows = [], [], []
    op_names: set[str] = set()
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
            runs.append(timer(_autocast_call(device, amp, lambda: model(x))))
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
            base, peak = measure_tensor_bytes(_autocast_call(device, amp, lambda: model(x)),
                                              model_tensors(model, x), op_names=op_names)
        metrics += [Metric("base_mem_bytes", "tensor_bytes", base, "bytes", 1, "weights + buffers + input"),
                    Metric("peak_mem_bytes", "tensor_bytes", peak, "bytes", 1,
                           "TorchDispatchMode live storages, weights and input included (extra untimed forward)")]
    samples = {"runs_s": runs, "build_s": builds}
    return Measurement(metrics, samples, model, x, op_names)
