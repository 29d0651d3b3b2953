"""Fused selective scan for CUDA in Triton: the stand-in for mamba-ssm's kernel where it is absent.

mamba-ssm's CUDA kernels need a build against the exact torch/CUDA pair (scripts/mamba_kernel.py
builds them from their source distribution where nvcc is at hand); without them the only PyTorch
fallback is the chunked scan, whose hundreds of small kernel launches per layer would make SSAMBA
look slower than it is. This kernel does what mamba-ssm's `selective_scan_fwd` does:

- grid (batch, channel blocks, chunks of L); each program keeps the state h (BLOCK_E, N) in
  registers and walks its chunk in tiles of BLOCK_L steps. With one chunk (the default) that is the
  whole sequence in one launch; with several, a first launch summarises every chunk and each program
  starts from the state its predecessors leave (triton_scan_chunks.py);
- per tile it loads u, delta, z (BLOCK_E, BLOCK_L) and B, C once, forms the per-step decay
  exp(delta * A) and input delta * B * u, and runs the linear recurrence h_t = a_t * h_{t-1} + b_t
  inside the tile as a parallel prefix scan (`tl.associative_scan`), adds the carried-in state
  (cumulative decay * h) and reads out y_t = <h_t, C_t>. Layout "vector" does every state at once,
  (BLOCK_E, N, BLOCK_L) per tensor; "loop" one state after another over (BLOCK_E, BLOCK_L), as
  mamba-ssm's kernel orders it, which leaves room for longer tiles;
- D * u and the silu(z) gate are applied before the single store of y. Nothing of size
  (B, E, L, N) ever reaches memory, as in mamba-ssm.

Its backward is triton_scan_backward.py. Semantics, shapes and float32 accumulation are those of
reference.py (mamba-ssm's `selective_scan_ref`); B and C may be (B, N, L) or grouped (B, G, N, L).
Correctness is tested on CPU through Triton's interpreter (TRITON_INTERPRET=1) against the reference
scan, every layout and chunking; speed only on a GPU (`ssamba-bench scanbench`, scripts/gpu_scan_check.py).
"""

from __future__ import annotations

import torch

from models.scan.triton_common import TILES, TritonTiles, launch_geometry, triton, triton_available
from models.scan.triton_scan_chunks import chunk_layout, chunk_summaries

__all__ = ["TritonTiles", "selective_scan_triton", "triton_available"]

if triton is not None:
    import triton.language as tl

    from models.scan.triton_common import _channel_params, _combine, _delta, _program_block


    @triton.jit
    def _chunk_start(states_ptr, decays_ptr, pid_b, offs_e, offs_n, mask_e, E, L, n_chunks, CHUNK_L,
                     N: tl.constexpr, BLOCK_E: tl.constexpr):
        """This program's chunk of the sequence [begin, end) and the state entering it: the earlier
        chunks' summaries (triton_scan_chunks.py) folded in order, h = decay_c * h + state_c.
        With one chunk: the whole sequence and a zero state."""
        pid_c = tl.program_id(2)
        begin = pid_c * CHUNK_L
        h = tl.zeros((BLOCK_E, N), dtype=tl.float32)
        at = ((pid_b * n_chunks) * E + offs_e[:, None]) * N + offs_n[None, :]
        for c in tl.range(0, pid_c):
            off = at + c * E * N
            h = tl.load(decays_ptr + off, mask=mask_e[:, None], other=1.0) * h + \
                tl.load(states_ptr + off, mask=mask_e[:, None], other=0.0)
        return begin, tl.minimum(begin + CHUNK_L, L), h

    @triton.jit
    def _scan_fwd(u_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, y_ptr, states_ptr, decays_ptr,
                 E, L, per_group, n_chunks, CHUNK_L,
                 s_ub, s_ue, s_ul, s_db, s_de, s_dl, s_ae, s_an,
                 s_bb, s_bg, s_bn, s_bl, s_cb, s_cg, s_cn, s_cl,
                 s_zb, s_ze, s_zl, s_yb, s_ye, s_yl,
                 HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
                 N: tl.constexpr, BLOCK_E: tl.constexpr, BLOCK_L: tl.constexpr, LOOP_STATES: tl.constexpr):
        pid_b, offs_e, offs_n, offs_l, mask_e, group = _program_block(E, per_group, N, BLOCK_E, BLOCK_L)
        A, Dv, bias = _channel_params(A_ptr, D_ptr, bias_ptr, offs_e, offs_n, mask_e, s_ae, s_an,
                                      HAS_D, HAS_BIAS, BLOCK_E)  # A: (BE, N)
        begin, end, h = _chunk_start(states_ptr, decays_ptr, pid_b, offs_e, offs_n, mask_e, E, L, n_chunks, CHUNK_L,
                                     N, BLOCK_E)
        last_l = (offs_l == BLOCK_L - 1)[None, :]
        off_bc_b = pid_b * s_bb + group * s_bg
        off_bc_c = pid_b * s_cb + group * s_cg
        for l0 in tl.range(begin, end, BLOCK_L):
            ls = l0 + offs_l
            mask_l = ls < end
            m2 = mask_e[:, None] & mask_l[None, :]
            u = tl.load(u_ptr + pid_b * s_ub + offs_e[:, None] * s_ue + ls[None, :] * s_ul, mask=m2, other=0.0)
            u = u.to(tl.float32)
            dt, _ = _delta(dt_ptr, pid_b * s_db, offs_e, ls, s_de, s_dl, m2, bias, HAS_BIAS, SOFTPLUS)
            if LOOP_STATES:
                # mamba-ssm's order: one state at a time over a long tile, (BE, BL) live per tensor
                y = tl.zeros((BLOCK_E, BLOCK_L), dtype=tl.float32)
                for n in tl.static_range(N):
                    pick = (offs_n == n)[None, :]
                    a_n = tl.sum(tl.where(pick, A, 0.0), axis=1)  # (BE,)
                    Bn = tl.load(B_ptr + off_bc_b + n * s_bn + ls * s_bl, mask=mask_l, other=0.0).to(tl.float32)
                    Cn = tl.load(C_ptr + off_bc_c + n * s_cn + ls * s_cl, mask=mask_l, other=0.0).to(tl.float32)
                    decay_cum, h_local = tl.associative_scan(
                        (tl.exp(dt * a_n[:, None]), (dt * u) * Bn[None, :]), 1, _combine)
                    hs = h_local + decay_cum * tl.sum(tl.where(pick, h, 0.0), axis=1)[:, None]  # (BE, BL)
                    y += hs * Cn[None, :]
                    h = tl.where(pick, tl.sum(tl.where(last_l, hs, 0.0), axis=1)[:, None], h)
            else:
                # every state at once: (BE, N, BL) live per tensor
                Bt = tl.load(B_ptr + off_bc_b + offs_n[:, None] * s_bn + ls[None, :] * s_bl,
                             mask=mask_l[None, :], other=0.0).to(tl.float32)  # (N, BL)
                Ct = tl.load(C_ptr + off_bc_c + offs_n[:, None] * s_cn + ls[None, :] * s_cl,
                             mask=mask_l[None, :], other=0.0).to(tl.float32)  # (N, BL)
                decay = tl.exp(dt[:, None, :] * A[:, :, None])  # (BE, N, BL)
                inputs = (dt * u)[:, None, :] * Bt[None, :, :]  # (BE, N, BL)
                decay_cum, h_local = tl.associative_scan((decay, inputs), 2, _combine)
                hs = h_local + decay_cum * h[:, :, None]  # (BE, N, BL): the state after every step
                y = tl.sum(hs * Ct[None, :, :], axis=1)  # (BE, BL)
                h = tl.sum(tl.where(last_l[:, None, :], hs, 0.0), axis=2)  # the tile's last step (padding keeps it)
            if HAS_D:
                y = y + u * Dv[:, None]
            if HAS_Z:
                z = tl.load(z_ptr + pid_b * s_zb + offs_e[:, None] * s_ze + ls[None, :] * s_zl, mask=m2, other=0.0)
                z = z.to(tl.float32)
                y = y * (z * tl.sigmoid(z))
            tl.store(y_ptr + pid_b * s_yb + offs_e[:, None] * s_ye + ls[None, :] * s_yl,
                     y.to(y_ptr.dtype.element_ty), mask=m2)


def selective_scan_triton(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                          tiles: TritonTiles | None = None):
    """Selective scan with mamba-ssm's shapes (see reference.py) in Triton; forward only.

    Inputs may be strided views (no copies are made); y is a new contiguous (B, E, L) tensor in u's
    dtype. `tiles` overrides the launch configuration (default: SSAMBA_BENCH_TRITON_TILES, else the
    measured default; scripts/gpu_scan_check.py tries several).
    """
    if u.dtype == torch.float64:
        from models.scan.chunked import selective_scan_chunked

        # Triton's float64 exp/log are slow and mamba-ssm has no float64 path: keep float64 exact.
        return selective_scan_chunked(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
    tiles = tiles or TILES
    batch, dim, length = u.shape
    nstate = A.shape[1]
    Bg, Cg, per_group, be, bl = launch_geometry(u, A, B, C, tiles.block_e, tiles.block_l)
    y = torch.empty(batch, dim, length, dtype=u.dtype, device=u.device)
    if y.numel() == 0:  # nothing to scan; and a launch grid may not be empty (E = 0 gives no channel blocks)
        return y
    loop = tiles.layout == "loop"
    e_blocks = -(-dim // be)
    n_chunks, chunk_l = chunk_layout(length, bl, batch * e_blocks, tiles.chunks, u.device)
    states = decays = y  # with one chunk nothing reads them
    if n_chunks > 1:
        states, decays = chunk_summaries(u, delta, A, Bg, delta_bias, delta_softplus, per_group, n_chunks, chunk_l,
                                         be, bl, tiles.num_warps, loop)
    dummy = y  # stands in for absent D, z, delta_bias (never read: the constexpr flags skip them)
    zz = z if z is not None else dummy
    _scan_fwd[(batch, e_blocks, n_chunks)](
        u, delta, A, Bg, Cg, D if D is not None else dummy, zz, delta_bias if delta_bias is not None else dummy, y,
        states, decays, dim, length, per_group, n_chunks, chunk_l,
        *u.stride(), *delta.stride(), *A.stride(),
        *Bg.stride(), *Cg.stride(),
        *zz.stride(), *y.stride(),
        HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=delta_bias is not None, SOFTPLUS=bool(delta_softplus),
        N=nstate, BLOCK_E=be, BLOCK_L=bl, LOOP_STATES=loop, num_warps=tiles.num_warps,
    )
    return y
