"""GPU check of the Triton selective scan before a reference run: exact, and which tiles are fastest.

1. Correctness on CUDA against the reference scan (float64 on the GPU as ground truth) for the
   layouts SSAMBA passes (strided u/delta/z views, B/C from x_proj), with and without D/z/bias.
2. Times the kernel for a few tile configurations at SSAMBA-tiny's shape (batch 4, E 384, N 16)
   at L = 22,016 and prints `best_tiles BLOCK_E,BLOCK_L,NUM_WARPS` (exported by
   scripts/gpu_reference.sh as SSAMBA_BENCH_TRITON_TILES for the sweeps).
Exit status 1 when the kernel is wrong or does not run: the sweeps then use the chunked scan.
"""

from __future__ import annotations

import sys

import torch

from models.scan.reference import selective_scan_reference
from models.scan.triton_scan import selective_scan_triton


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


def check(device) -> float:
    worst = 0.0
    for length in (1, 37, 1000, 4099):
        args = inputs(2, 64, length, 16, device)
        for full in (True, False):
            u, delta, A, B, C, D, z, bias = args
            kw = dict(D=D, z=z, delta_bias=bias, delta_softplus=True) if full else dict(delta_softplus=True)
            y = selective_scan_triton(u, delta, A, B, C, **kw)
            ref = selective_scan_reference(*(t.double() for t in (u, delta, A, B, C)),
                                           **{k: (v.double() if torch.is_tensor(v) else v) for k, v in kw.items()})
            err = float((y.double() - ref).abs().max() / ref.abs().max())
            print(f"L={length:5d} full={full}: max rel err {err:.2e}")
            worst = max(worst, err)
    return worst


def time_tiles(device, length=22016):
    u, delta, A, B, C, D, z, bias = inputs(4, 384, length, 16, device)
    results = []
    for tiles in [(8, 32, 4), (4, 32, 4), (16, 32, 4), (8, 64, 4), (8, 64, 8), (16, 64, 8), (4, 64, 4), (8, 16, 4)]:
        be, bl, warps = tiles
        try:
            for _ in range(2):
                selective_scan_triton(u, delta, A, B, C, D, z, bias, True, block_e=be, block_l=bl, num_warps=warps)
            torch.cuda.synchronize()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(10):
                selective_scan_triton(u, delta, A, B, C, D, z, bias, True, block_e=be, block_l=bl, num_warps=warps)
            end.record()
            torch.cuda.synchronize()
            ms = start.elapsed_time(end) / 10
            print(f"tiles {be},{bl},{warps}: {ms:.3f} ms per scan (B=4, E=384, N=16, L={length})")
            results.append((ms, tiles))
        except Exception as err:  # a tile that fails to compile is reported, not fatal
            print(f"tiles {be},{bl},{warps}: failed: {type(err).__name__}: {str(err).splitlines()[0][:200]}")
    return min(results) if results else None


def main() -> int:
    if not torch.cuda.is_available():
        print("no CUDA device")
        return 1
    device = torch.device("cuda")
    print(torch.cuda.get_device_name(device), "torch", torch.__version__)
    try:
        worst = check(device)
    except Exception as err:
        print(f"Triton scan failed on CUDA: {type(err).__name__}: {err}")
        return 1
    if worst > 1e-4:
        print(f"Triton scan is wrong on CUDA: max relative error {worst:.2e}")
        return 1
    best = time_tiles(device)
    if best is None:
        return 1
    print(f"best_tiles {','.join(map(str, best[1]))} ({best[0]:.3f} ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
