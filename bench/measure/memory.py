"""Memory measurement: per-window probes, the live-tensor counter, memory caps and OOM detection.

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
import weakref
from collections.abc import Callable

import torch
from torch.utils import _pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode

from bench.measure.allocator import trims_between_cases
from bench.store.schema import Metric

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
    def window(self, sink: list[Metric]):
        gc.collect()
        if self.can_reset:
            self._reset()
        base = self.current()
        yield
        peak = self.peak()
        if base is not None:
            sink.append(Metric("base_mem_bytes", "cpu_rss", base, "bytes", 1, "VmRSS before the timed forwards"))
        sink.append(Metric("peak_mem_bytes", "cpu_rss", peak, "bytes", 1, self.method))


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
    def window(self, sink: list[Metric]):
        torch.cuda.synchronize(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        base_alloc = torch.cuda.memory_allocated(self.device)
        base_reserved = torch.cuda.memory_reserved(self.device)
        yield
        torch.cuda.synchronize(self.device)
        how = "after reset_peak_memory_stats with model and input on the device"
        sink += [
            Metric("base_mem_bytes", "cuda_allocated", base_alloc, "bytes", 1, "torch.cuda.memory_allocated"),
            Metric("base_mem_bytes", "cuda_reserved", base_reserved, "bytes", 1, "torch.cuda.memory_reserved"),
            Metric("peak_mem_bytes", "cuda_allocated", torch.cuda.max_memory_allocated(self.device), "bytes", 1,
                   f"torch.cuda.max_memory_allocated {how}"),
            Metric("peak_mem_bytes", "cuda_reserved", torch.cuda.max_memory_reserved(self.device), "bytes", 1,
                   f"torch.cuda.max_memory_reserved {how}"),
        ]
        nvml = self._nvml_used()
        if nvml is not None:
            sink.append(Metric("peak_mem_bytes", "nvml_process", nvml, "bytes", 1,
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
        self.op_names: set[str] = set()  # every aten op seen (which SDPA kernel ran: bench/measure/precision.py)

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
        self.op_names.add(func.overloadpacket.__name__)
        for t in pytree.tree_leaves(out):
            self.add(t)
        return out


def measure_tensor_bytes(call: Callable, tensors, device_type: str = "cpu",
                         op_names: set | None = None) -> tuple[int, int]:
    """(bytes live before, peak bytes during) one `call`, counting `tensors` (weights, input) as live;
    `op_names`, when given, receives the names of the aten ops the call ran."""
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
        if op_names is not None:
            op_names |= tracker.op_names
        return tracker.base, tracker.peak
    finally:
        gc.enable()


def model_tensors(model: torch.nn.Module, *inputs) -> list[torch.Tensor]:
    return [*model.parameters(), *model.buffers(), *inputs]


# --- out-of-memory --------------------------------------------------------------------------------

_OOM_PATTERNS = ("out of memory", "can't allocate memory", "cannot allocate memory", "std::bad_alloc",
                 "defaultcpuallocator", "not enough memory")


# Under an address-space cap, oneDNN reports a failed allocation as a failed primitive: that is the
# cap, not a bug (without a cap the same message stays an `error`).
_CAPPED_OOM_PATTERNS = ("could not create a primitive",)


def is_oom(exc: BaseException, capped: bool = False) -> bool:
    """CUDA OOM, a MemoryError, or the CPU allocator's "can't allocate memory" RuntimeError; with
    `capped` (an emulated device capacity in force), also what libraries say when the cap refuses them."""
    if isinstance(exc, (MemoryError, torch.OutOfMemoryError)):
        return True
    patterns = _OOM_PATTERNS + (_CAPPED_OOM_PATTERNS if capped else ())
    return isinstance(exc, RuntimeError) and any(p in str(exc).lower() for p in patterns)


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
    elif trims_between_cases():  # a retained heap stays: its pages are what warm calls reuse
        _malloc_trim()
