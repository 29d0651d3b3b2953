"""Fit the roofline's efficiencies on the committed measured runs, and measure how wrong it is.

`python -m bench.estimate.fit` refits both parameter sets and rewrites bench/estimate/fitted.json
with the rows they came from; `python -m bench.estimate.fit --check` prints every committed row's
predicted and measured latency without refitting (the README's error table). Rows: each ok case's
median latency (`latency_s`, stat `median`: for the paper protocol the median of the 5 fresh-model
runs, which leaves out the first case's one-off process start-up), with its case parameters.

- GPU set: the H100 reference runs (`GPU_RUNS`), applied to every card of the table, plus the
  suite's Triton scan timed alone on the same H100 (`GPU_SCANBENCH`, `ssamba-bench scanbench`: B=4,
  E=384, N=16). Without those rows the model rows alone cannot tell the scan's time from the
  elementwise kernels' (both grow linearly with the tokens), and the breakdown would misname what
  bounds SSAMBA (rows from `SCANBENCH_FROM_STEPS` steps);
- CPU set: the 2-core CPU reference runs (`CPU_RUNS`), relative to this CPU's calibration, which is
  stored beside the parameters (and redone whenever `--device cpu` predicts).

A case's kernels come from the meta trace of its model (bench/estimate/trace.py), cached per process.
"""

from __future__ import annotations

import argparse
import functools
import json
from pathlib import Path

from bench.estimate.devices import Device, calibrated_cpu, device
from bench.estimate.roofline import Workload, fit, latency

REPO = Path(__file__).resolve().parents[2]
FITTED = Path(__file__).with_name("fitted.json")
GPU_RUNS = ["results/reference/gpu-h100/paper_tiny", "results/reference/gpu-h100/steady_tiny",
            "results/reference/gpu-h100/paper_small", "results/reference/gpu-h100/paper_aum_tiny"]
GPU_DEVICE = "h100-sxm"  # NVIDIA H100 80GB HBM3, the SXM5 card (env.json of those runs)
GPU_SCANBENCH = ["results/reference/gpu-h100/scanbench.json", "results/reference/gpu-h100/scanbench_22k.json"]
# Below this the Triton scan's fixed cost per call (~0.3 ms: 0.36 ms at 512 steps, 0.58 ms at 2048) is
# most of its time, a per-call constant the roofline does not have; the models' rows carry it.
SCANBENCH_FROM_STEPS = 8192
CPU_RUNS = ["results/reference/cpu-2core-amd-epyc", "results/reference/cpu-2core-amd-epyc/paper_protocol"]
ROW_KEYS = ("model", "attn_impl", "scan_impl", "model_options", "n_tokens", "frames", "batch", "dtype", "protocol",
            "threads", "tf32_matmul")


def measured_rows(runs: list[str]) -> list[dict]:
    """Every ok case's median latency in the runs (paths relative to the repository)."""
    from bench.store.run_store import load
    from bench.store.schema import plain

    out = []
    for run in runs:
        df = load(REPO / run)
        lat = df[(df["metric"] == "latency_s") & (df["stat"] == "median") & (df["status"] == "ok")]
        for _, r in lat.sort_values(["model", "attn_impl", "n_tokens"]).iterrows():
            row = {k: plain(r[k]) if k in r else None for k in ROW_KEYS}
            out.append({"run": run, **row, "latency_s": float(r["value"])})
    return out


def scanbench_rows(paths: list[str], impl: str = "triton") -> list[dict]:
    """The scan micro-benchmark's rows of `impl` as fit rows: one selective scan forward, median time."""
    out = []
    for path in paths:
        data = json.loads((REPO / path).read_text())
        cfg = data["config"]
        for r in data["rows"]:
            if r["impl"] == impl and r.get("median_s") and r["L"] >= SCANBENCH_FROM_STEPS:
                out.append({"run": path, "model": f"selective_scan ({impl})", "attn_impl": None, "scan_impl": impl,
                            "model_options": None, "n_tokens": int(r["L"]), "frames": None, "batch": cfg["batch"],
                            "dtype": "float32", "protocol": "scanbench", "threads": None, "tf32_matmul": False,
                            "scan_shape": [cfg["batch"], cfg["dim"], cfg["state"], int(r["L"])],
                            "latency_s": float(r["median_s"])})
    return out


@functools.cache
def _scan_workload(batch: int, dim: int, state: int, length: int) -> Workload:
    """One scan call as scanbench makes it (u, delta, z (B, E, L); B, C (B, N, L); A (E, N); D, bias (E,))."""
    import torch

    from bench.estimate.bytes_moved import OpTrace
    from models.scan import selective_scan

    with torch.device("meta"):
        seq = [torch.empty(batch, dim, length) for _ in range(3)]
        b, c = torch.empty(batch, state, length), torch.empty(batch, state, length)
        a, d, bias = torch.empty(dim, state), torch.empty(dim), torch.empty(dim)
    rec = OpTrace()
    with torch.no_grad(), rec:
        selective_scan(seq[0], seq[1], a, b, c, d, seq[2], bias, delta_softplus=True, impl="triton")
    return Workload.from_records(rec.ops)


def _options(label: str | None) -> dict:
    """'mixer=bi_bi,x=1' (the model_options column) -> constructor options."""
    out = {}
    for part in filter(None, (label or "").split(",")):
        key, value = part.split("=", 1)
        out[key] = {"True": True, "False": False}.get(value, int(value) if value.isdigit() else value)
    return out


@functools.cache
def _workload(model: str, n_tokens: int, frames: int, batch: int, dtype: str, attn_impl: str | None,
              options: str | None) -> Workload:
    from bench.estimate.trace import estimate

    est = estimate(model, n_tokens, batch, dtype, attn_impl=attn_impl, frames=frames, options=_options(options),
                   ops=True)
    return Workload.from_records(est["op_records"])


def workload(row: dict) -> Workload:
    """The kernels of a row's case (the meta trace runs the device-independent op path of the model)."""
    if row.get("scan_shape"):
        return _scan_workload(*row["scan_shape"])
    return _workload(row["model"], int(row["n_tokens"]), int(row["frames"]), int(row["batch"]), row["dtype"],
                     row["attn_impl"], row["model_options"])


def samples(rows: list[dict], dev: Device) -> list[tuple]:
    return [(workload(r), dev, r["dtype"], bool(r.get("tf32_matmul")), r["latency_s"]) for r in rows]


def fit_rows(rows: list[dict], dev: Device) -> dict:
    return fit(samples(rows, dev), dev.kind)


def errors(rows: list[dict], dev: Device, params: dict) -> list[dict]:
    """Each row with its predicted latency and relative error (predicted / measured - 1)."""
    out = []
    for r in rows:
        pred = latency(workload(r), dev, params, r["dtype"], bool(r.get("tf32_matmul")))
        out.append({**r, "predicted_s": pred, "error": pred / r["latency_s"] - 1})
    return out


def cpu_device(threads: int | None = None) -> Device:
    """This CPU calibrated at `threads` (the reference rows' thread count), once per process."""
    import torch

    if threads is None or threads == torch.get_num_threads():
        return calibrated_cpu()
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return calibrated_cpu.__wrapped__()
    finally:
        torch.set_num_threads(previous)


@functools.cache
def fitted() -> dict:
    return json.loads(FITTED.read_text())


def gpu_rows() -> list[dict]:
    return measured_rows(GPU_RUNS) + scanbench_rows(GPU_SCANBENCH)


def refit() -> dict:
    gpu_rows_ = gpu_rows()
    cpu_rows = measured_rows(CPU_RUNS)
    gpu_dev = device(GPU_DEVICE)
    threads = cpu_rows[0]["threads"] if cpu_rows else None
    cpu_dev = cpu_device(threads)
    gpu = fit_rows(gpu_rows_, gpu_dev)
    cpu = fit_rows(cpu_rows, cpu_dev)
    return {
        "formula": {"gpu": "latency = sum over kernels of max(F / (P * e_compute), B / (W * e_bandwidth), "
                           "launch_overhead_s * overhead_scale)",
                    "cpu": "latency = sum over kernels of F / (P * e_compute) + B / (W * e_bandwidth) + "
                           "launch_overhead_s * overhead_scale",
                    "where": "bench/estimate/roofline.py"},
        "refit": "python -m bench.estimate.fit",
        "gpu": {**gpu, "fitted_on": gpu_dev.key, "runs": GPU_RUNS + GPU_SCANBENCH, "rows": _compact(gpu_rows_)},
        "cpu": {**cpu, "calibration": {"device_name": cpu_dev.name, "gemm_flops_per_s": cpu_dev.fp32_flops,
                                       "copy_bytes_per_s": cpu_dev.bandwidth},
                "runs": CPU_RUNS, "rows": _compact(cpu_rows)},
    }


def _dumps(result: dict) -> str:
    """JSON with one line per measured row (the file stays readable and diffs stay small)."""
    text = json.dumps(result, indent=1)
    for kind in ("gpu", "cpu"):
        rows = result[kind]["rows"]
        block = json.dumps(rows, indent=1).replace("\n", "\n  ")
        text = text.replace(block, "[\n" + ",\n".join(f"   {json.dumps(r)}" for r in rows) + "\n  ]", 1)
    return text + "\n"


def _compact(rows: list[dict]) -> list[dict]:
    return [{k: r[k] for k in ("run", "model", "attn_impl", "n_tokens", "batch", "protocol", "latency_s")}
            for r in rows]


def error_table(rows: list[dict], dev: Device, params: dict) -> str:
    lines = ["| run | model | kernel | tokens | measured | predicted | error |", "|---|---|---|---:|---:|---:|---:|"]
    for e in errors(rows, dev, params):
        lines.append(f"| {e['run'].rsplit('/', 1)[-1]} | {e['model']} | {e['attn_impl'] or e['scan_impl']} | "
                     f"{e['n_tokens']} | {e['latency_s']:.4g} s | {e['predicted_s']:.4g} s | {100 * e['error']:+.0f}% |")
    return "\n".join(lines)


def error_summary(errs: list[dict], edges: tuple[int, ...]) -> str:
    """Mean and worst error per model/kernel and token range (the README's table)."""
    groups: dict[tuple, list[float]] = {}
    for e in errs:
        lo = max((x for x in edges if e["n_tokens"] >= x), default=None)
        if lo is None:
            continue
        hi = next((x for x in edges if x > lo), None)
        rng = f"{lo}-{hi - 1}" if hi else f">= {lo}"
        groups.setdefault((e["model"], e["attn_impl"] or e["scan_impl"], rng), []).append(e["error"])
    lines = ["| model | kernel | tokens | rows | mean error | worst error |", "|---|---|---|---:|---:|---:|"]
    for (model, kernel, rng), vals in groups.items():
        worst = max(vals, key=abs)
        lines.append(f"| {model} | {kernel} | {rng} | {len(vals)} | {100 * sum(vals) / len(vals):+.0f}% | "
                     f"{100 * worst:+.0f}% |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="print the errors of the committed fit; write nothing")
    args = parser.parse_args(argv)
    if not args.check:
        result = refit()
        FITTED.write_text(_dumps(result))
        fitted.cache_clear()
        print(f"wrote {FITTED}")
    data = fitted()
    cpu_rows = measured_rows(CPU_RUNS)
    print(f"GPU ({GPU_DEVICE}) parameters: {data['gpu']['params']}")
    gpu_errs = errors(gpu_rows(), device(GPU_DEVICE), data["gpu"]["params"])
    print(error_table(gpu_rows(), device(GPU_DEVICE), data["gpu"]["params"]))
    print(error_summary(gpu_errs, (512, 4096, 16384)))
    cpu_dev = cpu_device(cpu_rows[0]["threads"] if cpu_rows else None)
    print(f"\nCPU ({cpu_dev.name}) parameters: {data['cpu']['params']}")
    print(error_table(cpu_rows, cpu_dev, data["cpu"]["params"]))
    print(error_summary(errors(cpu_rows, cpu_dev, data["cpu"]["params"]), (128, 2048, 8192)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
