"""Energy per timed call, from a hardware counter, never estimated: NVML on CUDA, RAPL on CPU.

- CUDA: NVML's total-energy counter of the GPU (`nvmlDeviceGetTotalEnergyConsumption`, millijoules
  since the driver loaded; Volta and later). The whole board: other processes on the same GPU count.
- CPU: Linux powercap RAPL (`/sys/class/powercap/intel-rapl:N/energy_uj`, microjoules, one counter per
  package, wrapping at `max_energy_range_uj`; AMD Zen exposes the same interface). All packages of the
  machine: other processes count too, and reading it usually needs root.
Where neither counter is readable (most VMs and containers), `energy_meter` returns None and the
metrics are absent from the rows: an absent number, never a modelled one.

A meter's `window()` reads the counter around the timed calls; the protocol divides by the number of
calls: energy_per_call_j (stat mean) and power_w (stat mean: joules over the window's wall time).
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path

from bench.store.schema import Metric

POWERCAP = Path("/sys/class/powercap")


@dataclass
class EnergyWindow:
    """What a window measured: joules and seconds (None until the window has closed)."""

    joules: float | None = None
    seconds: float | None = None


class _Meter:
    method = ""

    def read_joules(self) -> float:  # pragma: no cover - abstract
        raise NotImplementedError

    @contextlib.contextmanager
    def window(self):
        out = EnergyWindow()
        start_j, start_s = self.read_joules(), time.perf_counter()
        yield out
        out.joules = self.read_joules() - start_j
        out.seconds = time.perf_counter() - start_s

    def metrics(self, window: EnergyWindow, calls: int, what: str) -> list[Metric]:
        if window.joules is None or calls < 1 or window.joules < 0:
            return []
        return [Metric("energy_per_call_j", "mean", window.joules / calls, "J", calls,
                       f"{self.method}, over the timed {what}s / {calls}"),
                Metric("power_w", "mean", window.joules / window.seconds if window.seconds else float("nan"), "W",
                       calls, f"{self.method}, joules / wall seconds of the timed {what}s")]


class RaplMeter(_Meter):
    """Sum of the package counters under a powercap root (each wrap corrected once per window)."""

    def __init__(self, zones: list[Path]):
        self.zones = zones
        self.ranges = [_read_int(z / "max_energy_range_uj") for z in zones]
        self.method = f"RAPL powercap energy_uj ({', '.join(z.name for z in zones)}), whole packages"

    def read(self) -> list[int]:
        return [_read_int(z / "energy_uj") for z in self.zones]

    @contextlib.contextmanager
    def window(self):
        out = EnergyWindow()
        start_s, start = time.perf_counter(), self.read()
        yield out
        end = self.read()
        total_uj = 0
        for begin, end, span in zip(start, end, self.ranges):
            total_uj += end - begin if end >= begin else end + span - begin  # the counter wrapped
        out.joules = total_uj / 1e6
        out.seconds = time.perf_counter() - start_s


class NvmlMeter(_Meter):
    def __init__(self, handle, pynvml):
        self.handle, self.pynvml = handle, pynvml
        self.method = "NVML nvmlDeviceGetTotalEnergyConsumption, whole board"

    def read_joules(self) -> float:
        return self.pynvml.nvmlDeviceGetTotalEnergyConsumption(self.handle) / 1e3  # millijoules


def _read_int(path: Path) -> int:
    return int(path.read_text().strip())


def rapl_zones(root: Path = POWERCAP) -> list[Path]:
    """Readable package-level RAPL zones (intel-rapl:N, not their subzones intel-rapl:N:M)."""
    if not root.is_dir():
        return []
    zones = []
    for zone in sorted(root.glob("intel-rapl:*")):
        if zone.name.count(":") != 1:
            continue
        try:
            _read_int(zone / "energy_uj")
            _read_int(zone / "max_energy_range_uj")
        except (OSError, ValueError):
            continue
        zones.append(zone)
    return zones


def _nvml_meter(device: str):
    try:
        import pynvml
        import torch

        pynvml.nvmlInit()
        props = torch.cuda.get_device_properties(torch.device(device))
        bus = f"{props.pci_domain_id:08x}:{props.pci_bus_id:02x}:{props.pci_device_id:02x}.0"
        handle = pynvml.nvmlDeviceGetHandleByPciBusId(bus)
        pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)  # raises where the GPU has no counter
        return NvmlMeter(handle, pynvml)
    except Exception:
        return None


def energy_meter(device: str, powercap_root: Path = POWERCAP):
    """The meter for `device`, or None where no counter is readable (the metrics are then absent)."""
    if device.startswith("cuda"):
        return _nvml_meter(device)
    zones = rapl_zones(powercap_root)
    return RaplMeter(zones) if zones else None
