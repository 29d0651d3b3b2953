"""Fused selective scan for CUDA in Triton: the stand-in for mamba-ssm's kernel where it is absent.

mamba-ssm's CUDA kernels need a build against the exact torch/CUDA pair; where that wheel is missing
(the GPU image this suite is measured on has none and cannot download it) the only PyTorch fallback
was the chunked scan, whose hundreds of small kernel launches per layer would make SSAMBA look
slower than it is. This kernel does what mamba-ssm's `selective_scan_fwd` does, in one launch:

- grid (batch, channel blocks); each program keeps the state h (BLOCK_E, N) in registers and walks
  the sequence in tiles of BLOCK_L steps;
- per tile it loads u, delta, z (BLOCK_E, BLOCK_L) and B, C (N, BLOCK_L) once (coalesced along L),
  forms the per-step decay exp(delta * A) and input delta * B * u, and runs the linear recurrence
  h_t = a_t * h_{t-1} + b_t inside the tile as a parallel prefix scan (`tl.associative_scan`),
  then adds the carried-in state (cumulative decay * h) and reads out y_t = <h_t, C_t>;
- D * u and the silu(z) gate are applied before the single store of y. Nothing of size
  (B, E, L, N) ever reaches memory, as in mamba-ssm.

Forward only: it is an inference kernel. Under autograd the custom op (op.py) differentiates the
chunked scan instead (same function, recomputed), so training still works on CUDA. Semantics,
shapes and float32 accumulation are those of reference.py (mamba-ssm's `selective_scan_ref`); B and C
may be (B, N, L) or grouped (B, G, N, L). Correctness is tested on CPU through Triton's interpreter
(TRITON_INTERPRET=1) against the reference scan; speed only on a GPU (`ssamba-bench scanbench`).
"""

from __future__ import annotations

import os

import torch

# Tile sizes: BLOCK_E channels x N states x BLOCK_L steps are live in registers at once
# (4 x 16 x 32 = 2048 values per tensor over 4 warps). 4,32,4 was the fastest of eight tilings on an
# H100 (2.4 ms per scan at B=4, E=384, N=16, L=22,016; 8,32,4: 3.5 ms; 16,64,8: 7.4 ms).
# SSAMBA_BENCH_TRITON_TILES="BLOCK_E,BLOCK_L,NUM_WARPS" overrides them (scripts/gpu_scan_check.py
# times several on the GPU at hand and exports the fastest before a reference run).
DEFAULT_TILES = (4, 32, 4)


def tiles_from_env() -> tuple[int, int, int]:
    text = os.environ.get("SSAMBA_BENCH_TRITON_TILES", "")
    if not text:
        return DEFAULT_TILES
    try:
        block_e, block_l, warps = (int(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"SSAMBA_BENCH_TRITON_TILES={text!r}: write BLOCK_E,BLOCK_L,NUM_WARPS, e.g. 8,32,4") from None
    return block_e, block_l, warps


BLOCK_E, BLOCK_L, NUM_WARPS = tiles_from_env()


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
    def _scan_fwd(u_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, y_ptr,
                 E, L, per_group,
                 s_ub, s_ue, s_ul, s_db, s_de, s_dl, s_ae, s_an,
                 s_bb, s_bg, s_bn, s_bl, s_cb, s_cg, s_cn, s_cl,
                 s_zb, s_ze, s_zl, s_yb, s_ye, s_yl,
                 HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
                 N: tl.constexpr, BLOCK_E: tl.constexpr, BLOCK_L: tl.constexpr):
        pid_b, offs_e, offs_n, offs_l, mask_e, group = _program_block(E, per_group, N, BLOCK_E, BLOCK_L)
        A, Dv, bias = _channel_params(A_ptr, D_ptr, bias_ptr, offs_e, offs_n, mask_e, s_ae, s_an,
                                      HAS_D, HAS_BIAS, BLOCK_E)  # A: (BE, N)
        last = (offs_l == BLOCK_L - 1)[None, None, :]
        h = tl.zeros((BLOCK_E, N), dtype=tl.float32)
        for l0 in tl.range(0, L, BLOCK_L):
            ls = l0 + offs_l
            mask_l = ls < L
            m2 = mask_e[:, None] & mask_l[None, :]
            u = tl.load(u_ptr + pid_b * s_ub + offs_e[:, None] * s_ue + ls[None, :] * s_ul, mask=m2, other=0.0)
            u = u.to(tl.float32)
            dt = tl.load(dt_ptr + pid_b * s_db + offs_e[:, None] * s_de + ls[None, :] * s_dl, mask=m2, other=0.0)
            dt = dt.to(tl.float32)
            if HAS_BIAS:
                dt = dt + bias[:, None]
            if SOFTPLUS:
                dt = tl.where(dt <= 20.0, tl.log(1.0 + tl.exp(dt)), dt)  # torch's softplus threshold
            dt = tl.where(m2, dt, 0.0)  # padded steps: decay 1, no input, the state passes through
            Bt = tl.load(B_ptr + pid_b * s_bb + group * s_bg + offs_n[:, None] * s_bn + ls[None, :] * s_bl,
                         mask=mask_l[None, :], other=0.0).to(tl.float32)  # (N, BL)
            Ct = tl.load(C_ptr + pid_b * s_cb + group * s_cg + offs_n[:, None] * s_cn + ls[None, :] * s_cl,
                         mask=mask_l[None, :], other=0.0).to(tl.float32)  # (N, BL)
            decay = tl.exp(dt[:, None, :] * A[:, :, None])  # (BE, N, BL)
            inputs = (dt * u)[:, None, :] * Bt[None, :, :]  # (BE, N, BL)
            decay_cum, h_local = tl.associative_scan((decay, inputs), 2, _combine)
            hs = h_local + decay_cum * h[:, :, None]  # (BE, N, BL): the state after every step
            y = tl.sum(hs * Ct[None, :, :], axis=1)  # (BE, BL)
            h = tl.sum(tl.where(last, hs, 0.0), axis=2)  # the tile's last step (padding keeps it)
            if HAS_D:
                y = y + u * Dv[:, None]
            if HAS_Z:
                z = tl.load(z_ptr + pid_b * s_zb + offs_e[:, None] * s_ze + ls[None, :] * s_zl, mask=m2, other=0.0)
                z = z.to(tl.float32)
                y = y * (z * tl.sigmoid(z))
            tl.store(y_ptr + pid_b * s_yb + offs_e[:, None] * s_ye + ls[None, :] * s_yl,
                     y.to(y_ptr.dtype.element_ty), mask=m2)


def launch_geometry(u, A, B, C, block_e: int | None, block_l: int | None):
    """(B and C as (B, G, N, L), channels per group, BLOCK_E, BLOCK_L) of a forward or backward launch:
    a channel block never straddles two groups; d_state and tiles must be powers of two."""
    Bg = B.unsqueeze(1) if B.dim() == 3 else B
    Cg = C.unsqueeze(1) if C.dim() == 3 else C
    per_group = u.shape[1] // Bg.shape[1]
    be = block_e or BLOCK_E
    while be > 1 and per_group % be:
        be //= 2
    bl = block_l or BLOCK_L
    nstate = A.shape[1]
    if nstate & (nstate - 1) or be & (be - 1) or bl & (bl - 1):
        raise ValueError(f"the Triton scan needs power-of-two d_state and tiles, got N={nstate}, "
                         f"block_e={be}, block_l={bl}")
    return Bg, Cg, per_group, be, bl


def selective_scan_triton(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                          block_e: int | None = None, block_l: int | None = None, num_warps: int | None = None):
    """Selective scan with mamba-ssm's shapes (see reference.py) in one Triton launch; forward only.

    Inputs may be strided views (no copies are made); y is a new contiguous (B, E, L) tensor in u's
    dtype. `block_e`, `block_l`, `num_warps` override the tile sizes (scanbench tries several).
    """
    if u.dtype == torch.float64:
        from models.scan.chunked import selective_scan_chunked

        # Triton's float64 exp/log are slow and mamba-ssm has no float64 path: keep float64 exact.
        return selective_scan_chunked(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
    batch, dim, length = u.shape
    nstate = A.shape[1]
    Bg, Cg, per_group, be, bl = launch_geometry(u, A, B, C, block_e, block_l)
    y = torch.empty(batch, dim, length, dtype=u.dtype, device=u.device)
    if y.numel() == 0:  # nothing to scan; and a launch grid may not be empty (E = 0 gives no channel blocks)
        return y
    dummy = y  # stands in for absent D, z, delta_bias (never read: the constexpr flags skip them)
    zz = z if z is not None else dummy
    grid = (batch, -(-dim // be))
    _scan_fwd[grid](
        u, delta, A, Bg, Cg, D if D is not None else dummy, zz, delta_bias if delta_bias is not None else dummy, y,
        dim, length, per_group,
        *u.stride(), *delta.stride(), *A.stride(),
        *Bg.stride(), *Cg.stride(),
        *zz.stride(), *y.stride(),
        HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=delta_bias is not None, SOFTPLUS=bool(delta_softplus),
        N=nstate, BLOCK_E=be, BLOCK_L=bl, num_warps=num_warps or NUM_WARPS,
    )
    return y

