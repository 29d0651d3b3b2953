"""Predicted latency of one forward on a device: a per-kernel roofline with a few fitted efficiencies.

For every kernel of the meta-tensor trace (bench/estimate/bytes_moved.py: FLOPs F, bytes read +
written B, category c), on a device with peak rate P and memory bandwidth W (bench/estimate/devices.toml,
or this CPU calibrated), and o the per-kernel launch overhead (the table's value x a fitted scale):

    GPU: t_kernel = max(F / (P * e_compute[c]), B / (W * e_bandwidth[c]), o)
    CPU: t_kernel = F / (P * e_compute[c]) + B / (W * e_bandwidth[c]) + o
    latency = sum over kernels

A GPU launches asynchronously: the host queues the next kernel while one runs, so launch overhead
only shows when kernels are shorter than it (small inputs); a CPU runs each op after dispatching it,
so the dispatch adds, and its cores stall on memory instead of overlapping it with arithmetic (the
sum fits the CPU rows better than the max: eager attention's score matmuls and softmax at 4-8k
tokens). A kernel is compute-bound when the first term is the largest, bandwidth-bound when the
second is, launch-bound (GPU) when the overhead is. P is the matmul rate of the dtype (fp32 CUDA
cores unless TF32 is allowed) for gemm and attention, the fp32 rate for the rest. The efficiencies
are the fraction of peak a category reaches in practice; they are the model's only free parameters
(six, `PARAMS`), fitted once by least squares on log latency against measured runs
(bench/estimate/fit.py; committed in bench/estimate/fitted.json with the rows they came from), one
set for GPUs (fitted on H100 rows, applied to every card through its datasheet peaks) and one for
CPUs (relative to the calibrated GEMM and copy rates):

    gemm_compute         matmuls' share of the matmul peak: the linear layers, and eager attention's
                         score matmuls (batched GEMMs); the linear layers' bytes use other_bandwidth
    attention_compute    fused attention's share of the matmul peak (sdpa; no H100 row has it, so
                         on GPUs it stays at its prior, 1/2: an assumption, not a fit)
    attention_bandwidth  attention kernels' share of the bandwidth (eager: the scores and
                         probabilities through memory, softmax; fused: q, k, v in, output out)
    other_bandwidth      every other kernel's share of the bandwidth (and of the fp32 rate, where
                         they have FLOPs: convolutions)
    scan                 the selective scan's share of both (the suite's Triton scan on the H100
                         rows, a latency-bound kernel at ~5% of copy bandwidth: the factor absorbs it,
                         so GPU predictions are for that scan, not for mamba-ssm's)
    overhead_scale       multiplies the table's per-kernel launch overhead (host dispatch included)

A weak prior holds each parameter near its middle (efficiency 1/2 of its cap, overhead x1), so a
parameter the rows cannot determine stays there instead of running off.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from bench.estimate.bytes_moved import CATEGORIES, FUSED_ATTENTION_OPS, OpRecord
from bench.estimate.devices import Device

PARAMS = ("gemm_compute", "attention_compute", "attention_bandwidth", "other_bandwidth", "scan", "overhead_scale")
EFFICIENCY_CAP = {"gpu": 1.0, "cpu": 4.0}  # a CPU's calibrated rates are one size's; small working sets beat them
OVERLAP = {"gpu": True, "cpu": False}  # does launch overhead hide behind running kernels (see above)
PRIOR_WEIGHT = 0.1  # per parameter, against a residual weight of 1 per row (log latency)
# Kernel classes: each category, with attention split by what its kernels are, and the parameters they
# use as (compute efficiency, bandwidth efficiency). Eager attention's score matmuls are batched GEMMs
# (the GEMM library's rate) moving the scores (attention bandwidth); fused attention is its own kernel.
CLASSES = {
    "gemm": ("gemm", "gemm_compute", "other_bandwidth"),
    "attention_matmul": ("attention", "gemm_compute", "attention_bandwidth"),
    "attention_fused": ("attention", "attention_compute", "attention_bandwidth"),
    "attention_other": ("attention", "other_bandwidth", "attention_bandwidth"),
    "scan": ("scan", "scan", "scan"),
    "conv": ("conv", "other_bandwidth", "other_bandwidth"),
    "elementwise": ("elementwise", "other_bandwidth", "other_bandwidth"),
}
_CLASS = {c: i for i, c in enumerate(CLASSES)}
_CLASS_CATEGORY = np.array([CATEGORIES.index(v[0]) for v in CLASSES.values()])
_MATMUL_PEAK = np.array([name in ("gemm", "attention_matmul", "attention_fused") for name in CLASSES])


def kernel_class(record: OpRecord) -> str:
    if record.category != "attention":
        return record.category
    if record.op.rsplit("::", 1)[-1] in FUSED_ATTENTION_OPS:
        return "attention_fused"
    return "attention_matmul" if record.flops else "attention_other"


@dataclass(frozen=True)
class Workload:
    """The kernels of one forward, identical ones merged (arrays of equal length)."""

    klass: np.ndarray  # index into CLASSES
    flops: np.ndarray
    bytes: np.ndarray
    count: np.ndarray

    @property
    def category(self) -> np.ndarray:
        return _CLASS_CATEGORY[self.klass]

    @classmethod
    def from_records(cls, records: list[OpRecord]) -> Workload:
        groups = Counter((kernel_class(r), r.flops, r.bytes) for r in records)
        keys = list(groups)
        return cls(np.array([_CLASS[k[0]] for k in keys], dtype=np.int64), np.array([k[1] for k in keys], dtype=float),
                   np.array([k[2] for k in keys], dtype=float), np.array([groups[k] for k in keys], dtype=float))


def efficiencies(params: dict, kind: str) -> dict:
    """Parameter values -> per-class (compute efficiency, bandwidth efficiency) arrays and overhead."""
    return {"compute": np.array([params[v[1]] for v in CLASSES.values()]),
            "bandwidth": np.array([params[v[2]] for v in CLASSES.values()]),
            "overhead_scale": params["overhead_scale"]}


def kernel_times(work: Workload, device: Device, params: dict, dtype: str = "float32",
                 tf32: bool = False) -> tuple[np.ndarray, np.ndarray, float]:
    """(compute time, bandwidth time) per kernel group (one kernel each) and the overhead per kernel."""
    eff = efficiencies(params, device.kind)
    matmul = device.matmul_flops(dtype, tf32)
    peak = np.where(_MATMUL_PEAK[work.klass], matmul, device.fp32_flops)
    compute = work.flops / (peak * eff["compute"][work.klass])
    memory = work.bytes / (device.bandwidth * eff["bandwidth"][work.klass])
    return compute, memory, device.launch_overhead_s * eff["overhead_scale"]


def _times(compute, memory, overhead, overlap: bool):
    """(time per kernel, its compute-bound part, bandwidth-bound part, overhead part)."""
    if not overlap:  # a CPU: compute, memory traffic and dispatch one after the other
        return compute + memory + overhead, compute, memory, np.full_like(compute, overhead)
    busy = np.maximum(compute, memory)
    launch_bound = overhead > busy
    time = np.where(launch_bound, overhead, busy)
    spent_busy = np.where(launch_bound, 0.0, busy)
    compute_bound = compute >= memory
    return (time, np.where(compute_bound, spent_busy, 0.0), np.where(compute_bound, 0.0, spent_busy),
            np.where(launch_bound, overhead, 0.0))


def latency(work: Workload, device: Device, params: dict, dtype: str = "float32", tf32: bool = False) -> float:
    compute, memory, overhead = kernel_times(work, device, params, dtype, tf32)
    time = _times(compute, memory, overhead, OVERLAP[device.kind])[0]
    return float(np.sum(work.count * time))


def predict(work: Workload, device: Device, params: dict, dtype: str = "float32", tf32: bool = False) -> dict:
    """Latency with its breakdown: per category the time, its compute-bound, bandwidth-bound and
    launch-bound parts, and the bound (what most of the time is)."""
    compute, memory, overhead = kernel_times(work, device, params, dtype, tf32)
    parts = [x * work.count for x in _times(compute, memory, overhead, OVERLAP[device.kind])]
    cats = {}
    for i, cat in enumerate(CATEGORIES):
        mine = work.category == i
        row = {"time_s": float(parts[0][mine].sum()), "compute_bound_s": float(parts[1][mine].sum()),
               "bandwidth_bound_s": float(parts[2][mine].sum()), "overhead_s": float(parts[3][mine].sum()),
               "kernels": int(work.count[mine].sum())}
        row["bound"] = _bound(row) if row["kernels"] else None
        cats[cat] = row
    total = {k: sum(c[k] for c in cats.values()) for k in ("compute_bound_s", "bandwidth_bound_s", "overhead_s")}
    return {"device": device.key, "device_name": device.name, "latency_s": float(sum(c["time_s"] for c in cats.values())),
            "bound": _bound(total), **{k: float(v) for k, v in total.items()}, "by_category": cats}


def _bound(row: dict) -> str:
    parts = {"compute": row["compute_bound_s"], "bandwidth": row["bandwidth_bound_s"], "overhead": row["overhead_s"]}
    return max(parts, key=parts.get)


# --- fitting --------------------------------------------------------------------------------------

def _to_params(theta: np.ndarray, kind: str) -> dict:
    cap = EFFICIENCY_CAP[kind]
    theta = np.clip(theta, -30, 30)  # a wild step of the optimiser must not overflow
    values = {name: cap / (1 + np.exp(-t)) for name, t in zip(PARAMS[:-1], theta[:-1])}
    values["overhead_scale"] = float(np.exp(theta[-1]))
    return {k: float(v) for k, v in values.items()}


def fit(samples: list[tuple[Workload, Device, str, bool, float]], kind: str, starts: int = 6,
        prior_weight: float = PRIOR_WEIGHT) -> dict:
    """Least-squares fit of PARAMS on log latency. `samples`: (workload, device, dtype, tf32, measured s).
    Levenberg-Marquardt (numpy; the max() makes the objective piecewise smooth, so several starts)."""
    measured = np.log([s[4] for s in samples])
    # every sample's kernels stacked once: a residual evaluation is a few array operations
    row = np.concatenate([np.full(len(w.count), i) for i, (w, *_) in enumerate(samples)])
    klass = np.concatenate([w.klass for w, *_ in samples])
    flops = np.concatenate([w.flops for w, *_ in samples])
    nbytes = np.concatenate([w.bytes for w, *_ in samples])
    count = np.concatenate([w.count for w, *_ in samples])
    peak = np.concatenate([np.where(_MATMUL_PEAK[w.klass], d.matmul_flops(dt, tf), d.fp32_flops)
                           for w, d, dt, tf, _ in samples])
    bandwidth = np.concatenate([np.full(len(w.count), d.bandwidth) for w, d, *_ in samples])
    launch = np.concatenate([np.full(len(w.count), d.launch_overhead_s) for w, d, *_ in samples])

    def residuals(theta: np.ndarray) -> np.ndarray:
        eff = efficiencies(_to_params(theta, kind), kind)
        compute = flops / (peak * eff["compute"][klass])
        memory = nbytes / (bandwidth * eff["bandwidth"][klass])
        time = _times(compute, memory, launch * eff["overhead_scale"], OVERLAP[kind])[0]
        pred = np.bincount(row, weights=count * time, minlength=len(samples))
        return np.concatenate([np.log(pred) - measured, np.sqrt(prior_weight) * theta])

    rng = np.random.default_rng(0)
    best = None
    for start in range(starts):
        theta0 = np.zeros(len(PARAMS)) if start == 0 else rng.normal(0, 1.5, len(PARAMS))
        theta = _levenberg_marquardt(residuals, theta0)
        cost = float(np.sum(residuals(theta) ** 2))
        if best is None or cost < best[0]:
            best = (cost, theta)
    params = _to_params(best[1], kind)
    rms = float(np.sqrt(np.mean(residuals(best[1])[:len(samples)] ** 2)))
    return {"params": params, "rms_log_error": rms, "n_rows": len(samples)}


def _levenberg_marquardt(fun, theta: np.ndarray, iters: int = 100, step: float = 1e-5) -> np.ndarray:
    theta = theta.astype(float)
    r = fun(theta)
    cost, damping = float(r @ r), 1e-2
    for _ in range(iters):
        jac = np.empty((len(r), len(theta)))
        for j in range(len(theta)):  # forward differences: a handful of parameters
            shifted = theta.copy()
            shifted[j] += step
            jac[:, j] = (fun(shifted) - r) / step
        a, g = jac.T @ jac, jac.T @ r
        while True:
            delta = np.linalg.solve(a + damping * (np.diag(np.diag(a)) + 1e-9 * np.eye(len(theta))), -g)
            r_new = fun(theta + delta)
            cost_new = float(r_new @ r_new)
            if cost_new < cost:
                theta, r, cost = theta + delta, r_new, cost_new
                damping = max(damping / 3, 1e-9)
                break
            damping *= 4
            if damping > 1e9:
                return theta
        if np.max(np.abs(delta)) < 1e-7:
            break
    return theta
