"""What the Triton scan kernels share: Triton itself, the launch configuration, and the small jitted helpers.

triton_scan.py (forward), triton_scan_chunks.py (chunk summaries for parallelism along L) and
triton_scan_backward.py (backward) all index a program's batch and channel block, load A, D and
delta_bias, and turn the raw delta into softplus(delta + bias) the same way: those pieces live here,
once. So does the launch configuration, read from SSAMBA_BENCH_TRITON_TILES at import.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

# Tile sizes: BLOCK_E channels x N states x BLOCK_L steps are live in registers at once
# (4 x 16 x 32 = 2048 values per tensor over 4 warps). 4,32,4 was the fastest of eight tilings on an
# H100 (2.4 ms per scan at B=4, E=384, N=16, L=22,016; 8,32,4: 3.5 ms; 16,64,8: 7.4 ms), all with every
# state vectorised and one chunk: the layout and chunking of triton_scan_chunks.py are not measured
# on a GPU yet, so the default stays the measured configuration.
# SSAMBA_BENCH_TRITON_TILES="BLOCK_E,BLOCK_L,NUM_WARPS[,LAYOUT,CHUNKS]" overrides it: LAYOUT "vector"
# (every state at once) or "loop" (one state at a time, mamba-ssm's order), CHUNKS a count or "auto".
# scripts/gpu_scan_check.py times several on the GPU at hand and exports the fastest before a reference run.
LAYOUTS = ("vector", "loop")


@dataclass(frozen=True)
class TritonTiles:
    """One launch configuration of the Triton scan's forward (the backward uses block_e, block_l, num_warps)."""

    block_e: int = 4
    block_l: int = 32
    num_warps: int = 4
    layout: str = "vector"
    chunks: int | str = 1  # pieces of L scanned in parallel (triton_scan_chunks.py); "auto" picks from the GPU

    @classmethod
    def parse(cls, text: str) -> TritonTiles:
        """"BLOCK_E,BLOCK_L,NUM_WARPS[,LAYOUT,CHUNKS]", e.g. "4,32,4" or "4,128,4,loop,auto"."""
        parts = [p.strip() for p in text.split(",")]
        try:
            if len(parts) not in (3, 5):
                raise ValueError
            block_e, block_l, warps = (int(v) for v in parts[:3])
            layout, chunks = (parts[3], parts[4]) if len(parts) == 5 else ("vector", "1")
            chunks = chunks if chunks == "auto" else int(chunks)
            if layout not in LAYOUTS or min(block_e, block_l, warps) < 1 or (chunks != "auto" and chunks < 1):
                raise ValueError
        except ValueError:
            raise ValueError(f"Triton scan tiles {text!r}: write BLOCK_E,BLOCK_L,NUM_WARPS[,LAYOUT,CHUNKS] with "
                             f"positive integers, LAYOUT one of {', '.join(LAYOUTS)} and CHUNKS a count or auto, "
                             f"e.g. 4,32,4 or 4,128,4,loop,auto") from None
        return cls(block_e, block_l, warps, layout, chunks)

    def label(self) -> str:
        return f"{self.block_e},{self.block_l},{self.num_warps},{self.layout},{self.chunks}"


def tiles_from_env() -> TritonTiles:
    text = os.environ.get("SSAMBA_BENCH_TRITON_TILES", "")
    return TritonTiles.parse(text) if text else TritonTiles()


TILES = tiles_from_env()  # the forward's
# The backward keeps the tiles it was tested with (the interpreter check): a configuration chosen by
# timing the forward (SSAMBA_BENCH_TRITON_TILES) says nothing about the backward's registers.
BACKWARD_TILES = TritonTiles()


try:  # Triton ships with CUDA builds of torch; without it this backend is simply unavailable
    import triton
    import triton.language as tl
except Exception:  # ImportError, or a broken install
    triton = None


def triton_available() -> bool:
    """Whether Triton imports; the kernel also needs a CUDA tensor, or TRITON_INTERPRET=1 (the CPU
    interpreter the tests use)."""
    return triton is not None


if triton is not None:

    @triton.jit
    def _combine(a1, b1, a2, b2):
        # (a1, b1) then (a2, b2): h -> a2 * (a1 * h + b1) + b2
        return a1 * a2, b1 * a2 + b2

    @triton.jit
    def _program_block(E, per_group, N: tl.constexpr, BLOCK_E: tl.constexpr, BLOCK_L: tl.constexpr):
        """This program's batch, its channel block (offsets, mask, B/C group) and the state and step offsets
        of a tile; grid (batch, channel blocks), shared by the forward and backward kernels."""
        pid_b = tl.program_id(0)
        pid_e = tl.program_id(1)
        offs_e = pid_e * BLOCK_E + tl.arange(0, BLOCK_E)
        group = (pid_e * BLOCK_E) // per_group  # BLOCK_E divides per_group (checked by the caller)
        return pid_b, offs_e, tl.arange(0, N), tl.arange(0, BLOCK_L), offs_e < E, group

    @triton.jit
    def _channel_params(A_ptr, D_ptr, bias_ptr, offs_e, offs_n, mask_e, s_ae, s_an,
                        HAS_D: tl.constexpr, HAS_BIAS: tl.constexpr, BLOCK_E: tl.constexpr):
        """A (BLOCK_E, N), D and delta_bias (BLOCK_E,) of this channel block in float32; D and the bias
        are zeros when absent. Shared by the forward and backward kernels."""
        A = tl.load(A_ptr + offs_e[:, None] * s_ae + offs_n[None, :] * s_an, mask=mask_e[:, None], other=0.0)
        Dv = tl.zeros((BLOCK_E,), dtype=tl.float32)
        if HAS_D:
            Dv = tl.load(D_ptr + offs_e, mask=mask_e, other=0.0).to(tl.float32)
        bias = tl.zeros((BLOCK_E,), dtype=tl.float32)
        if HAS_BIAS:
            bias = tl.load(bias_ptr + offs_e, mask=mask_e, other=0.0).to(tl.float32)
        return A.to(tl.float32), Dv, bias

    @triton.jit
    def _delta(dt_ptr, off_b, offs_e, ls, s_de, s_dl, mask, bias, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr):
        """(delta after bias and softplus, the softplus derivative) at steps `ls`; 0 where masked, so a
        padded step has decay 1 and no input: the state passes through. Shared by every kernel."""
        pre = tl.load(dt_ptr + off_b + offs_e[:, None] * s_de + ls[None, :] * s_dl, mask=mask, other=0.0)
        pre = pre.to(tl.float32)
        if HAS_BIAS:
            pre = pre + bias[:, None]
        dt = pre
        slope = pre * 0.0 + 1.0
        if SOFTPLUS:
            dt = tl.where(pre <= 20.0, tl.log(1.0 + tl.exp(pre)), pre)  # torch's softplus threshold
            slope = tl.where(pre <= 20.0, tl.sigmoid(pre), 1.0)
        return tl.where(mask, dt, 0.0), slope


def launch_geometry(u, A, B, C, block_e: int, block_l: int):
    """(B and C as (B, G, N, L), channels per group, BLOCK_E, BLOCK_L) of a forward or backward launch:
    a channel block never straddles two groups; d_state and tiles must be powers of two."""
    Bg = B.unsqueeze(1) if B.dim() == 3 else B
    Cg = C.unsqueeze(1) if C.dim() == 3 else C
    per_group = u.shape[1] // Bg.shape[1]
    be = block_e
    while be > 1 and per_group % be:
        be //= 2
    bl = block_l
    nstate = A.shape[1]
    if nstate & (nstate - 1) or be & (be - 1) or bl & (bl - 1):
        raise ValueError(f"the Triton scan needs power-of-two d_state and tiles, got N={nstate}, "
                         f"block_e={be}, block_l={bl}")
    return Bg, Cg, per_group, be, bl
