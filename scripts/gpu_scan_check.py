"""GPU check of the scan kernels before a reference run: exact, and which Triton launch is fastest.

1. Correctness on CUDA against the reference scan (float64 on the GPU as ground truth) for the
   layouts SSAMBA passes (strided u/delta/z views, B/C from x_proj), with and without D/z/bias, for
   every Triton configuration timed below and for mamba-ssm's kernel when it is available
   (SSAMBA_BENCH_MAMBA_KERNEL, scripts/mamba_kernel.py).
2. SSAMBA-tiny's pooled output with scan_impl "mamba_ssm" against "triton" (issue: within 1e-4).
3. Times every Triton configuration (tiles, state layout, chunks of L) and mamba-ssm's kernel at
   SSAMBA-tiny's shape (batch 4, E 384, N 16) at L = 22,016, each with its share of the copy
   bandwidth measured in the same process, and prints `best_tiles <label>` (exported by
   scripts/gpu_reference.sh as SSAMBA_BENCH_TRITON_TILES for the sweeps).
Exit status 3 when the Triton kernel is wrong or fails in every configuration (the sweeps then use the
chunked scan in its place). mamba-ssm's verdict is the line `mamba_ok 1|0`: a kernel that fails either
check is left out of the sweeps. `best_tiles` is printed after every timed configuration.
"""

from __future__ import annotations

import sys

import torch

from bench.measure.scan_kernels import SCAN_INPUTS, copy_bytes_per_s, scan_bytes_moved
from models.scan.mamba import mamba_scan_source, mamba_ssm_available, selective_scan_mamba
from models.scan.reference import selective_scan_reference
from models.scan.triton_scan import TritonTiles, selective_scan_triton
from models.scan.triton_scan_chunks import chunk_layout

CONFIGS = [TritonTiles(4, 32, 4), TritonTiles(8, 32, 4)] + [  # the measured default first
    TritonTiles(be, bl, w, layout, chunks)
    for be, bl, w, layout in ((4, 32, 4, "vector"), (4, 128, 4, "loop"), (2, 256, 4, "loop"), (1, 512, 4, "loop"))
    for chunks in (8, "auto")
]
TRITON_WRONG = 3  # exit status when the Triton scan is wrong or fails in every configuration


def inputs(batch, dim, length, nstate, device, dtype=torch.float32, seed=0):
    g = torch.Generator(device="cpu").manual_seed(seed)

    def rand(*shape):
        return torch.randn(*shape, generator=g).to(device=device, dtype=dtype)

    xz = rand(batch, length, 2 * dim).transpose(1, 2)  # (B, 2E, L) strided, as in_proj's output is used
    u, z = xz[:, :dim], xz[:, dim:]
    dbc = rand(batch, length, 2 * nstate + dim)
    delta = dbc[..., :dim].transpose(1, 2)
    B = dbc[..., dim:dim + nstate].transpose(1, 2)
    C = dbc[..., dim + nstate:].transpose(1, 2)
    A = -torch.rand(dim, nstate, generator=g).to(device=device, dtype=dtype) * 4
    D = rand(dim)
    bias = rand(dim) * 0.1
    return u, delta, A, B, C, D, z, bias


def worst_error(scan, device, bare: bool = True) -> float:
    """Largest relative error over four lengths, with D, z and delta_bias (and without them if `bare`:
    each variant is its own compile, so the timed configurations check only the variant they run)."""
    worst = 0.0
    for length in (1, 37, 1000, 4099):
        u, delta, A, B, C, D, z, bias = inputs(2, 64, length, 16, device)
        for full in (True, False) if bare else (True,):
            kw = dict(D=D, z=z, delta_bias=bias, delta_softplus=True) if full else dict(delta_softplus=True)
            y = scan(u, delta, A, B, C, **kw)
            ref = selective_scan_reference(*(t.double() for t in (u, delta, A, B, C)),
                                           **{k: (v.double() if torch.is_tensor(v) else v) for k, v in kw.items()})
            worst = max(worst, float((y.double() - ref).abs().max() / ref.abs().max()))
    return worst


def time_ms(fn, repeats=10) -> float:
    for _ in range(2):
        fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(repeats):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / repeats


def pooled_output_gap(device) -> float:
    """max |pooled(mamba_ssm) - pooled(triton)| of SSAMBA-tiny, 1,024 frames, batch 2, random weights."""
    from models import create_model

    torch.manual_seed(0)
    model = create_model("ssamba_tiny").to(device).eval()
    x = torch.randn(2, 1024, 128, device=device)
    outputs = []
    with torch.inference_mode():
        for impl in ("mamba_ssm", "triton"):
            model.set_scan_impl(impl)
            outputs.append(model.pool(model.forward_features(x)).float())
    return float((outputs[0] - outputs[1]).abs().max())


def check_mamba(device) -> bool:
    """mamba-ssm's kernel against the reference and against the Triton scan inside SSAMBA-tiny; prints
    `mamba_ok 1|0` (scripts/gpu_reference.sh sweeps scan_impl "mamba_ssm" only after a 1)."""
    ok = False
    if mamba_ssm_available(device):
        try:
            err = worst_error(selective_scan_mamba, device)
            gap = pooled_output_gap(device)
            ok = err <= 1e-4 and gap <= 1e-4
            print(f"mamba_ssm: max rel err {err:.2e}; ssamba_tiny pooled output, mamba_ssm vs triton: "
                  f"max abs diff {gap:.2e}")
        except Exception as exc:
            print(f"mamba_ssm failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
    print(f"mamba_ok {int(ok)}", flush=True)
    return ok


def main() -> int:
    if not torch.cuda.is_available():
        print("no CUDA device")
        return 1
    device = torch.device("cuda")
    print(torch.cuda.get_device_name(device), "torch", torch.__version__, "| mamba-ssm:", mamba_scan_source())
    usable = []
    for tiles in CONFIGS:
        try:
            err = worst_error(lambda *a, **k: selective_scan_triton(*a, **k, tiles=tiles), device,
                              bare=tiles == CONFIGS[0])
        except Exception as exc:  # a configuration that fails to compile is reported, not fatal
            print(f"tiles {tiles.label()}: failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
            continue
        print(f"tiles {tiles.label()}: max rel err {err:.2e}", flush=True)
        if err <= 1e-4:
            usable.append(tiles)
    mamba = check_mamba(device)
    if not usable:
        print("the Triton scan is wrong or fails in every configuration")
        return TRITON_WRONG
    length = 22016
    args = inputs(4, 384, length, 16, device)
    moved = scan_bytes_moved(dict(zip(SCAN_INPUTS, args)), backward=False)  # as scanbench counts them
    copy = copy_bytes_per_s(device, lambda fn: time_ms(fn) / 1e3, mib=256) / 1e9  # GB/s

    def rate(ms: float) -> str:
        return f"{ms:.3f} ms, {moved / ms / 1e6:.0f} GB/s = {100 * moved / ms / 1e6 / copy:.0f}% copy"

    print(f"copy yardstick {copy:.0f} GB/s; timing at B=4 E=384 N=16 L={length}, {moved / 1e6:.0f} MB a call")
    if mamba:
        print(f"mamba_ssm: {rate(time_ms(lambda: selective_scan_mamba(*args, True)))}", flush=True)
    best = None
    for tiles in usable:
        ms = time_ms(lambda: selective_scan_triton(*args, True, tiles=tiles))
        n_chunks, _ = chunk_layout(length, tiles.block_l, 4 * -(-384 // tiles.block_e), tiles.chunks, device)
        print(f"tiles {tiles.label()} ({n_chunks} chunks): {rate(ms)}")
        if best is None or ms < best[0]:
            best = (ms, tiles.label())
        # after every configuration, so a stage stopped at its time limit still leaves its best so far
        print(f"best_tiles {best[1]} ({best[0]:.3f} ms)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
