"""The selective-scan micro-benchmark: every backend timed side by side on SSAMBA's layouts.

`make_inputs` shapes the arguments as one direction of an SSAMBA-tiny block passes them; `bench_length`
times the backends on the same inputs, round robin, after a warm-up call that also measures memory,
and checks each output against the reference's. The scan is memory-bound on a GPU, so besides the
matmul yardstick (`matmul_gflops`) each row is set against a copy yardstick (`copy_bytes_per_s`)
through the scan's compulsory memory traffic (`scan_bytes_moved`). What the verb prints and what
each column means: bench/cli/scanbench.py (`ssamba-bench scanbench`).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch

from bench.measure.memory import memory_probe
from bench.measure.timing import summarize
from bench.store.schema import Metric
from models.errors import UserInputError
from models.scan import SCAN_IMPLS, resolve_scan_impl, scan_flops, selective_scan

DEFAULT_LENGTHS = (512, 2048, 8192, 22000)
SCAN_INPUTS = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")  # the tensors `make_inputs` returns
DEFAULT_IMPLS = {"cpu": ("reference", "chunked", "cpu_cpp"), "cuda": ("reference", "chunked", "mamba_ssm")}


@dataclass(frozen=True)
class ScanBenchConfig:
    """One scanbench run's shapes and repeats (the verb's options, bench/cli/scanbench.py)."""

    batch: int = 1
    dim: int = 384  # E of SSAMBA-tiny
    state: int = 16  # N
    device: str = "cpu"
    repeats: int = 5
    slow_seconds: float = 1.0  # a backend whose warm-up call took longer gets slow_repeats timed calls
    slow_repeats: int = 2
    contiguous: bool = False  # contiguous (B, E, L) inputs instead of the model's layouts
    backward: bool = False  # time forward + backward instead of the no-grad forward
    seed: int = 0


def make_inputs(batch: int, dim: int, nstate: int, length: int, *, device: str, seed: int, contiguous: bool):
    """Scan arguments as SSAMBA-tiny's mixer passes them (S4D-real A, D = 1, Mamba's dt init)."""
    gen = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=gen).to(device)

    rank = math.ceil(dim / 2 / 16)  # dt_rank of the model whose E is `dim`
    u = randn(batch, dim, length)  # (B, E, L): the causal conv's output, row-major
    z = randn(batch, length, dim).transpose(1, 2)  # (B, E, L) view of in_proj's (B, L, E) output
    delta = (0.1 * randn(batch, length, dim)).transpose(1, 2)  # dt_proj output, before its bias
    x_dbl = randn(batch, length, rank + 2 * nstate)  # x_proj output: dt, B, C side by side
    B = x_dbl[..., rank:rank + nstate].transpose(1, 2)  # (B, N, L), strided view
    C = x_dbl[..., rank + nstate:].transpose(1, 2)  # (B, N, L), strided view
    if contiguous:
        z, delta, B, C = (t.contiguous() for t in (z, delta, B, C))
    A = -torch.arange(1, nstate + 1, dtype=torch.float32, device=device).repeat(dim, 1)  # (E, N)
    D = torch.ones(dim, device=device)
    dt = torch.exp(torch.rand(dim, generator=gen) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3))
    delta_bias = (dt + torch.log(-torch.expm1(-dt))).to(device)  # inverse softplus of dt in [1e-3, 0.1]
    return dict(u=u, delta=delta, A=A, B=B, C=C, D=D, z=z, delta_bias=delta_bias)


def matmul_gflops(device: str, timer, size: int = 2048, repeats: int = 5) -> float:
    """fp32 matrix-multiply rate on this device and thread count: the yardstick for the scans."""
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    timer(lambda: a @ b)  # warm-up
    seconds = summarize([timer(lambda: a @ b) for _ in range(repeats)])["median"]
    return 2 * size**3 / seconds / 1e9


def copy_bytes_per_s(device: str, timer, mib: int, repeats: int = 5) -> float:
    """Device-to-device copy rate in bytes/s, `dst.copy_(src)` of `mib` MiB of float32: the memory yardstick
    for the scans. A copy moves 2 * nbytes (each byte read once, written once), counted as `scan_bytes_moved`
    counts a scan."""
    src = torch.full((mib * 2**20 // 4,), 1.0, device=device)  # written, so no read hits never-touched pages
    dst = torch.empty_like(src)
    timer(lambda: dst.copy_(src))  # warm-up; also makes dst's pages resident
    seconds = summarize([timer(lambda: dst.copy_(src)) for _ in range(repeats)])["median"]
    return 2 * src.numel() * src.element_size() / seconds


def _nbytes(t: torch.Tensor | None) -> int:
    # the tensor's elements, not its storage: B and C are strided views into x_proj's wider output
    return 0 if t is None else t.numel() * t.element_size()


def scan_bytes_moved(inputs: dict, backward: bool) -> int:
    """The scan call's compulsory memory traffic in bytes: every tensor counted once, as if each byte crossed
    memory once (no re-reads, no intermediates, no recomputation).

    Forward: read u, delta, z (B*E*L each), B and C (B*G*N*L each; (B, N, L) is G = 1), A (E*N), D and
    delta_bias (E each), as their dtypes' sizes; write y (B*E*L in u's dtype). An input that is None or
    missing (z, D, delta_bias) moves nothing. `backward=True` (forward + backward through autograd, as
    `--backward` times it): the forward's bytes, plus the backward's: read dout (y's size) and every
    present forward input again, write one gradient per present input (du, ddelta, dz, dB, dC, dA,
    dD, ddelta_bias, each its input's size and dtype). That is 3 x inputs + 2 x y.
    """
    reads = sum(_nbytes(inputs.get(name)) for name in SCAN_INPUTS)
    y = _nbytes(inputs["u"])  # y is (B, E, L) in u's dtype
    forward = reads + y
    if not backward:
        return forward
    return forward + (y + reads) + reads  # (read dout and the inputs) + (write their gradients)


def _call(impl: str, inputs: dict, backward: bool):
    if not backward:
        def forward():
            with torch.inference_mode():
                return selective_scan(**inputs, delta_softplus=True, impl=impl)
        return forward
    leaves = {k: v.detach().clone().requires_grad_(True) for k, v in inputs.items()}
    grad = torch.ones_like(leaves["u"])

    def forward_backward():
        y = selective_scan(**leaves, delta_softplus=True, impl=impl)
        y.backward(grad)
        return y.detach()
    return forward_backward


def _peak_extra_bytes(sink: list[Metric]) -> int | None:
    base = next((m.value for m in sink if m.name == "base_mem_bytes"), None)
    peak = next((m.value for m in sink if m.name == "peak_mem_bytes"), None)
    return None if base is None or peak is None else int(peak - base)


def bench_length(length: int, impls: list[str], cfg: ScanBenchConfig, timer,
                 copy_rate: float | None = None) -> list[dict]:
    """One row per backend at sequence length `length`; `copy_rate` (bytes/s, `copy_bytes_per_s`) gives
    pct_of_copy, None without it."""
    inputs = make_inputs(cfg.batch, cfg.dim, cfg.state, length, device=cfg.device, seed=cfg.seed,
                         contiguous=cfg.contiguous)
    bytes_moved = scan_bytes_moved(inputs, cfg.backward)
    calls = {impl: _call(impl, inputs, cfg.backward) for impl in impls}
    rows, outputs, samples, repeats = {}, {}, {}, {}
    probe = memory_probe(cfg.device)
    for impl in impls:
        sink: list[Metric] = []
        start = time.perf_counter()
        with probe.window(sink):
            outputs[impl] = calls[impl]()
        warm_s = time.perf_counter() - start
        repeats[impl] = cfg.slow_repeats if warm_s > cfg.slow_seconds else cfg.repeats
        samples[impl] = []
        rows[impl] = {"L": length, "impl": impl, "peak_extra_bytes": _peak_extra_bytes(sink),
                      "memory_method": probe.method if hasattr(probe, "method") else "cuda max_memory_allocated"}
    reference = outputs.get("reference")
    for impl in impls:
        err = None if reference is None else float((outputs[impl].float() - reference.float()).abs().max())
        rows[impl]["max_abs_err_vs_reference"] = err
    outputs.clear()
    for r in range(max(repeats.values())):  # round robin: drift hits every backend alike
        for impl in impls:
            if r < repeats[impl]:
                samples[impl].append(timer(calls[impl]))
    flops = scan_flops(cfg.batch, length, cfg.dim, cfg.state) * (3 if cfg.backward else 1)
    ref_median = summarize(samples["reference"])["median"] if "reference" in samples else None
    for impl in impls:
        stats = summarize(samples[impl])
        rate = bytes_moved / stats["median"]
        rows[impl].update(
            median_s=stats["median"], iqr_s=stats["iqr"], n_samples=len(samples[impl]), samples_s=samples[impl],
            speedup_vs_reference=None if ref_median is None else ref_median / stats["median"],
            gflops=flops / stats["median"] / 1e9,
            bytes_moved=bytes_moved, gb_per_s=rate / 1e9,
            pct_of_copy=None if copy_rate is None else 100 * rate / copy_rate,
        )
    return [rows[impl] for impl in impls]


def resolve_impls(impls: str | None, device: str) -> list[str]:
    """The concrete backends to time: `impls` ("a,b", None for the device's defaults) that can run on `device`."""
    device_type = torch.device(device).type
    names = impls.split(",") if impls else list(DEFAULT_IMPLS.get(device_type, ("reference", "chunked")))
    chosen = []
    for name in names:
        if name not in SCAN_IMPLS:
            raise UserInputError(f"unknown backend {name!r}; choose from {', '.join(SCAN_IMPLS)}")
        concrete = resolve_scan_impl(name, device)
        if concrete != name and name != "auto":
            print(f"note: {name} is unavailable on {device}; skipped (it would run {concrete})")
            continue
        if concrete not in chosen:
            chosen.append(concrete)
    return chosen


def format_table(rows: list[dict], mm_gflops: float) -> str:
    header = f"{'L':>6} {'backend':<10} {'median ms':>10} {'IQR ms':>8} {'n':>2} {'speed-up':>9} " \
             f"{'GFLOP/s':>8} {'% mm':>6} {'MB moved':>9} {'GB/s':>7} {'% copy':>6} {'peak MB':>8} {'max |err|':>9}"
    lines = [header, "-" * len(header)]
    for row in rows:
        speedup = "" if row["speedup_vs_reference"] is None else f"{row['speedup_vs_reference']:.1f}x"
        pct_copy = "" if row["pct_of_copy"] is None else f"{row['pct_of_copy']:.1f}%"
        peak = "" if row["peak_extra_bytes"] is None else f"{row['peak_extra_bytes'] / 2**20:.0f}"
        err = "" if row["max_abs_err_vs_reference"] is None else f"{row['max_abs_err_vs_reference']:.1e}"
        lines.append(
            f"{row['L']:>6} {row['impl']:<10} {row['median_s'] * 1e3:>10.2f} {row['iqr_s'] * 1e3:>8.2f} "
            f"{row['n_samples']:>2} {speedup:>9} {row['gflops']:>8.2f} {100 * row['gflops'] / mm_gflops:>5.1f}% "
            f"{row['bytes_moved'] / 1e6:>9.2f} {row['gb_per_s']:>7.2f} {pct_copy:>6} {peak:>8} {err:>9}"
        )
    return "\n".join(lines)
