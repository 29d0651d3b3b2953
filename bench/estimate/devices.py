"""The device table (bench/estimate/devices.toml) as `Device` records; "cpu" is calibrated on demand.

Data, not code: the peaks and their datasheet sources live in the TOML file. `device("l40")` gives a
card's record; `device("cpu")` measures this machine (bench/estimate/calibrate.py) once per process.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import tomllib

from models.errors import UserInputError

TABLE = Path(__file__).with_name("devices.toml")
ALIASES = {"h100": "h100-sxm", "a100": "a100-80gb", "4090": "rtx4090"}


@dataclass(frozen=True)
class Device:
    key: str
    name: str
    kind: str  # "gpu" | "cpu": which fitted efficiency set applies
    fp32_flops: float
    tf32_flops: float
    bf16_flops: float
    bandwidth: float  # bytes/s, DRAM
    launch_overhead_s: float
    memory_bytes: float | None
    source: str

    def matmul_flops(self, dtype: str, tf32: bool = False) -> float:
        """Peak rate of a matmul in `dtype` (fp32 on CUDA cores unless TF32 is allowed)."""
        if dtype in ("bfloat16", "float16"):
            return self.bf16_flops
        if dtype == "float32" and tf32:
            return self.tf32_flops
        if dtype == "float64":
            return self.fp32_flops / 2  # not a number the models are run in; a rough rate (tests predict float64)
        return self.fp32_flops


@functools.cache
def table() -> dict:
    return tomllib.loads(TABLE.read_text())


def names() -> list[str]:
    return list(table()["devices"])


def gpu_names() -> list[str]:
    return [k for k, v in table()["devices"].items() if not v.get("calibrated")]


def device(name: str) -> Device:
    key = ALIASES.get(name.lower(), name.lower())
    entries = table()["devices"]
    if key not in entries:
        raise UserInputError(f"unknown device {name!r}; choose one of {', '.join(entries)} "
                             f"(bench/estimate/devices.toml)")
    entry = entries[key]
    overhead = entry.get("launch_overhead_s", table()["defaults"]["launch_overhead_s"])
    if entry.get("calibrated"):
        return calibrated_cpu(key, entry["name"], overhead)
    return Device(key, entry["name"], "gpu", entry["fp32_flops"], entry["tf32_flops"], entry["bf16_flops"],
                  entry["bandwidth"], overhead, entry.get("memory_bytes"), entry["source"])


@functools.cache
def calibrated_cpu(key: str = "cpu", name: str = "this CPU", overhead: float = 5e-6) -> Device:
    """This CPU, measured once per process: one GEMM rate for every dtype (the models run in float32)."""
    from bench.estimate.calibrate import calibrate_cpu

    cal = calibrate_cpu()
    rate = cal["gemm_flops_per_s"]
    return Device(key, f"{name}: {rate / 1e9:.0f} GFLOP/s GEMM, {cal['copy_bytes_per_s'] / 1e9:.1f} GB/s copy, "
                       f"{cal['threads']} threads", "cpu", rate, rate, rate, cal["copy_bytes_per_s"], overhead, None,
                  cal["method"])
