"""Latency and memory measurement on CPU and CUDA: the `steady` and `paper` protocols of DESIGN.md.

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

Memory (metric peak_mem_bytes; the `stat` column names which memory; base_mem_bytes is the same
kind just before the measured forwards):
  cuda_allocated  torch.cuda.max_memory_allocated after reset_peak_memory_stats, taken with model and
                  input already on the device: weights + input + activations (the paper's number)
  cuda_reserved   torch.cuda.max_memory_reserved, same window (what the caching allocator held)
  nvml_process    NVML's used memory of this process after the forward (context + reserved pool)
  cpu_rss         peak resident set size of the measuring child over the timed forwards: VmHWM after
                  resetting the high-water mark through /proc/self/clear_refs (`method` says when the
                  kernel refused and the lifetime peak was read instead). Includes the interpreter,
                  torch's libraries, weights, input, allocator caches and the forward's buffers.
                  Memory malloc keeps resident after earlier frees (warm-up forwards; earlier cases,
                  though malloc_trim runs between cases) counts in base and peak alike, so
                  peak - base can understate the forward's working set; tensor_bytes is the number to
                  compare across models.
  tensor_bytes    peak bytes of live CPU tensor storages during one forward, counted by a
                  TorchDispatchMode (deterministic): weights, buffers and input + every tensor an aten
                  op returns, freed when its storage dies. The CPU counterpart of cuda_allocated.
                  Not included: scratch memory kernels allocate internally without returning it as a
                  tensor (oneDNN / fused-attention workspaces), Python objects, allocator caches.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import os
import re
import statistics
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils import _pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode

from bench.config import PaperConfig, SteadyConfig
from bench.results import metric

# --- timing ---------------------------------------------------------------------------------------


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


# --- memory ---------------------------------------------------------------------------------------

_STATUS = "/proc/self/status"


def _proc_status_bytes(field_name: str) -> int | None:
    try:
        with open(_STATUS) as f:
            text = f.read()
    except OSError:
        return None
    match = re.search(rf"^{field_name}:\s+(\d+)\s+kB", text, flags=re.MULTILINE)
    return int(match.group(1)) * 1024 if match else None


def vm_size() -> int | None:
    """Virtual address space of this process (what RLIMIT_AS limits)."""
    return _proc_status_bytes("VmSize")


class RssProbe:
    """Peak RSS of this process over a window, resetting the high-water mark where Linux allows."""

    def __init__(self):
        self.can_reset = self._reset()
        if self.can_reset:
            self.method = "VmHWM after /proc/self/clear_refs reset"
        elif _proc_status_bytes("VmHWM") is not None:
            self.method = "VmHWM since process start (clear_refs refused)"
        else:
            self.method = "ru_maxrss since process start"

    @staticmethod
    def _reset() -> bool:
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # 5: reset the peak RSS (Documentation/filesystems/proc.rst)
            return True
        except OSError:
            return False

    def current(self) -> int | None:
        return _proc_status_bytes("VmRSS")

    def peak(self) -> int:
        hwm = _proc_status_bytes("VmHWM")
        if hwm is not None:
            return hwm
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    @contextlib.contextmanager
    def window(self, sink: list[dict]):
        gc.collect()
        if self.can_reset:
            self._reset()
        base = self.current()
        yield
        peak = self.peak()
        if base is not None:
            sink.append(metric("base_mem_bytes", "cpu_rss", base, "bytes", 1, "VmRSS before the timed forwards"))
        sink.append(metric("peak_mem_bytes", "cpu_rss", peak, "bytes", 1, self.method))


class CudaProbe:
    """Peak allocated/reserved CUDA memory over a window, plus NVML's view of the process."""

    def __init__(self, device: str):
        self.device = torch.device(device)

    def _nvml_used(self) -> int | None:
        try:
            import pynvml

            pynvml.nvmlInit()
            props = torch.cuda.get_device_properties(self.device)
            bus = f"{props.pci_domain_id:08x}:{props.pci_bus_id:02x}:{props.pci_device_id:02x}.0"
            handle = pynvml.nvmlDeviceGetHandleByPciBusId(bus)
            used = [p.usedGpuMemory for p in pynvml.nvmlDeviceGetComputeRunningProcesses(handle)
                    if p.pid == os.getpid() and p.usedGpuMemory is not None]
            return sum(used) if used else None  # None: this pid not visible (e.g. a container pid namespace)
        except Exception:
            return None

    @contextlib.contextmanager
    def window(self, sink: list[dict]):
        torch.cuda.synchronize(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        base_alloc = torch.cuda.memory_allocated(self.device)
        base_reserved = torch.cuda.memory_reserved(self.device)
        yield
        torch.cuda.synchronize(self.device)
        how = "after reset_peak_memory_stats with model and input on the device"
        sink += [
            metric("base_mem_bytes", "cuda_allocated", base_alloc, "bytes", 1, "torch.cuda.memory_allocated"),
            metric("base_mem_bytes", "cuda_reserved", base_reserved, "bytes", 1, "torch.cuda.memory_reserved"),
            metric("peak_mem_bytes", "cuda_allocated", torch.cuda.max_memory_allocated(self.device), "bytes", 1,
                   f"torch.cuda.max_memory_allocated {how}"),
            metric("peak_mem_bytes", "cuda_reserved", torch.cuda.max_memory_reserved(self.device), "bytes", 1,
                   f"torch.cuda.max_memory_reserved {how}"),
        ]
        nvml = self._nvml_used()
        if nvml is not None:
            sink.append(metric("peak_mem_bytes", "nvml_process", nvml, "bytes", 1,
                               "NVML process used memory after the forwards"))


def memory_probe(device: str):
    return CudaProbe(device) if device.startswith("cuda") else RssProbe()


class LiveTensorBytes(TorchDispatchMode):
    """Counts bytes of live tensor storages on one device type; `peak` is the high-water mark.

    Every tensor an aten op returns is registered once per storage (views share it); a weakref
    finalizer on the storage subtracts its bytes when it dies. Python keeps a storage's object alive
    as long as any tensor uses it, so the count follows the real lifetime. Deterministic for a given
    program, as long as the garbage collector does not run in between (`measure_tensor_bytes`
    disables it).
    """

    def __init__(self, device_type: str = "cpu"):
        super().__init__()
        self.device_type = device_type
        self.live = 0
        self.peak = 0
        self.base = 0
        self._sizes: dict[int, int] = {}

    def add(self, t) -> None:
        if not isinstance(t, torch.Tensor) or t.device.type != self.device_type:
            return
        storage = t.untyped_storage()
        key, nbytes = id(storage), storage.nbytes()
        old = self._sizes.get(key)
        if old is None:
            self._sizes[key] = nbytes
            self.live += nbytes
            weakref.finalize(storage, self._release, key)
        elif old != nbytes:  # an out= op resized an existing storage
            self._sizes[key] = nbytes
            self.live += nbytes - old
        self.peak = max(self.peak, self.live)

    def _release(self, key: int) -> None:
        self.live -= self._sizes.pop(key, 0)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in pytree.tree_leaves(out):
            self.add(t)
        return out


def measure_tensor_bytes(call: Callable, tensors, device_type: str = "cpu") -> tuple[int, int]:
    """(bytes live before, peak bytes during) one `call`, counting `tensors` (weights, input) as live."""
    gc.collect()
    gc.disable()  # a collection mid-forward would free cycles at a non-deterministic point
    try:
        tracker = LiveTensorBytes(device_type)
        for t in tensors:
            tracker.add(t)
        tracker.base = tracker.live
        with tracker:
            out = call()
        del out
        return tracker.base, tracker.peak
    finally:
        gc.enable()


def model_tensors(model: torch.nn.Module, *inputs) -> list[torch.Tensor]:
    return [*model.parameters(), *model.buffers(), *inputs]


# --- out-of-memory --------------------------------------------------------------------------------

_OOM_PATTERNS = ("out of memory", "can't allocate memory", "cannot allocate memory", "std::bad_alloc",
                 "defaultcpuallocator", "not enough memory")


def is_oom(exc: BaseException) -> bool:
    """CUDA OOM, a MemoryError, or the CPU allocator's "can't allocate memory" RuntimeError."""
    if isinstance(exc, (MemoryError, torch.OutOfMemoryError)):
        return True
    return isinstance(exc, RuntimeError) and any(p in str(exc).lower() for p in _OOM_PATTERNS)


@contextlib.contextmanager
def address_space_cap(cap_bytes: int | None):
    """Emulate a device of `cap_bytes` on CPU: RLIMIT_AS = current address space + cap.

    Calibrated per case: torch (a CUDA build especially) maps gigabytes of virtual memory at import,
    so the limit is set above the address space in use just before the case's model is built. The cap
    then covers weights, input and everything the forward allocates, like a device's capacity. Only
    the soft limit changes; it is restored afterwards.
    """
    if not cap_bytes:
        yield None
        return
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    gc.collect()
    baseline = vm_size() or 0
    limit = baseline + cap_bytes
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    try:
        yield baseline
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def apply_cuda_memory_cap(device: str, cap_bytes: int | None) -> None:
    """Emulate a smaller card: the caching allocator refuses to grow past `cap_bytes`."""
    if cap_bytes and device.startswith("cuda"):
        dev = torch.device(device)
        if dev.index is None:  # set_per_process_memory_fraction, unlike the memory stats, wants an index
            dev = torch.device("cuda", torch.cuda.current_device())
        total = torch.cuda.get_device_properties(dev).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, cap_bytes / total), dev)


def _malloc_trim() -> None:
    """Hand glibc's free heap pages back to the OS, so the next case's RSS does not start with this
    one's leftovers (no-op where there is no glibc)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def release_memory(device: str) -> None:
    """Between runs and cases: free what the last one left (cycles, allocator caches)."""
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    else:
        _malloc_trim()


# --- the protocols --------------------------------------------------------------------------------


@dataclass
class Measurement:
    """What a protocol returns: metric records, the raw samples, and the last model and input (for
    extra metric producers)."""

    metrics: list[dict]
    samples: dict
    model: torch.nn.Module
    inputs: torch.Tensor


def _latency_metrics(stats: dict, keys, n: int, method: str, batch: int, n_tokens: int, headline: str) -> list[dict]:
    rows = [metric("latency_s", k, stats[k], "s", n, method) for k in keys]
    rows.append(metric("throughput_tokens_per_s", headline, batch * n_tokens / stats[headline], "tokens/s", n,
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
    memory: list[dict] = []
    call = lambda: model(x)  # noqa: E731 (a name, for the protocol and the memory call)
    memory_call = None
    if track_tensor_bytes and not device.startswith("cuda"):
        def memory_call():
            base, peak = measure_tensor_bytes(call, model_tensors(model, x))
            memory.append(metric("base_mem_bytes", "tensor_bytes", base, "bytes", 1, "weights + buffers + input"))
            memory.append(metric("peak_mem_bytes", "tensor_bytes", peak, "bytes", 1,
                                 "TorchDispatchMode live storages, weights and input included"))
    with torch.inference_mode():
        s = time_steady(call, cfg, timer, memory_call=memory_call, timed_window=lambda: probe.window(memory))
    stats = summarize(s.samples_s)
    metrics = _latency_metrics(stats, ("median", "iqr", "p10", "p90", "mean", "min", "max"), len(s.samples_s),
                               timer_name, batch, n_tokens, "median")
    metrics += [
        metric("latency_cold_s", "value", s.cold_s, "s", 1, f"{timer_name}, first call after build"),
        metric("warmup_calls", "value", s.warmup_calls, "count", 1, f"stopped: {s.warmup_stop}"),
        metric("build_time_s", "value", build_s, "s", 1, "model build + input, untimed region"),
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
        window: list[dict] = []
        with torch.no_grad(), probe.window(window):
            runs.append(timer(lambda: model(x)))
        windows.append(window)
    stats = summarize(runs)
    method = f"{timer_name}, fresh model per run, no warm-up"
    metrics = _latency_metrics(stats, ("mean", "median", "min", "max", "std"), len(runs), method, batch, n_tokens,
                               "mean")
    metrics += [
        metric("latency_cold_s", "value", runs[0], "s", 1, f"{timer_name}, first run"),
        metric("build_time_s", "mean", float(np.mean(builds)), "s", len(builds), "model build + input, untimed"),
    ]
    # Memory: the largest of the runs' peaks (they agree up to allocator noise).
    best: dict[tuple, dict] = {}
    for window in windows:
        for m in window:
            key = (m["metric"], m["stat"])
            if key not in best or m["value"] > best[key]["value"]:
                best[key] = {**m, "n_samples": len(windows)}
    metrics += list(best.values())
    if track_tensor_bytes and not device.startswith("cuda"):
        with torch.no_grad():
            base, peak = measure_tensor_bytes(lambda: model(x), model_tensors(model, x))
        metrics += [metric("base_mem_bytes", "tensor_bytes", base, "bytes", 1, "weights + buffers + input"),
                    metric("peak_mem_bytes", "tensor_bytes", peak, "bytes", 1,
                           "TorchDispatchMode live storages, weights and input included (extra untimed forward)")]
    samples = {"runs_s": runs, "build_s": builds}
    return Measurement(metrics, samples, model, x)
