"""The selective scan's backward for CUDA in Triton: gradients without the chunked recompute.

Without mamba-ssm, the only way to train SSAMBA on a GPU was to differentiate the chunked PyTorch scan
(op.py recomputes it under autograd): hundreds of small kernels per layer and (B, E, chunk, N)
intermediates, so the scan's backward dominated a training step. This kernel does what mamba-ssm's
`selective_scan_bwd` does, in one launch per scan plus a few reductions:

- grid (batch, channel blocks), as the forward (triton_scan.py); each program owns BLOCK_E channels;
- pass 1 walks the sequence forward in tiles of BLOCK_L steps, exactly as the forward kernel, and
  stores only the state at each tile's start, (B, E, N, tiles) in float32 (for SSAMBA-tiny at 22k
  tokens, batch 4: 67 MB; the (B, E, L, N) states are never stored);
- pass 2 walks the tiles backwards: it recomputes the tile's states from its stored start, then runs
  the adjoint recurrence g_t = C_t dy0_t + exp(delta_{t+1} A) g_{t+1} inside the tile as a reverse
  parallel scan (`tl.associative_scan(..., reverse=True)`) with the carry from the later tile, and
  forms every gradient from g, the states and the inputs:
    du = D dy0 + delta sum_n g B,   ddelta = u sum_n g B + sum_n A g (h_t - delta u B)  (then softplus'),
    dA = sum_t delta g (h_t - delta u B),  dD = sum_t dy0 u,  dz = dy y0 silu'(z),
  where g (h_t - delta u B) = g_t a_t h_{t-1} needs no shifted state. dB and dC are shared by all
  channels of a group: each program adds its channel block's sum into a float32 buffer with
  `tl.atomic_add`. dA, dD and d(delta_bias) are per-(batch, channel) partials summed over the batch
  afterwards.
Semantics and float32 accumulation are reference.py's; tested on CPU through Triton's interpreter
against the reference scan's autograd gradients (tests/triton_interpret_check.py).
"""

from __future__ import annotations

import torch

from models.scan.triton_common import BACKWARD_TILES, launch_geometry, triton

if triton is not None:
    import triton.language as tl

    from models.scan.triton_common import _channel_params, _combine, _delta, _program_block

    @triton.jit
    def _scan_bwd(u_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, dy_ptr, h0_ptr,
                  du_ptr, ddt_ptr, dz_ptr, dA_ptr, dD_ptr, dbias_ptr, dB_ptr, dC_ptr,
                  E, L, per_group, n_tiles,
                  s_ub, s_ue, s_ul, s_db, s_de, s_dl, s_ae, s_an,
                  s_bb, s_bg, s_bn, s_bl, s_cb, s_cg, s_cn, s_cl,
                  s_zb, s_ze, s_zl, s_yb, s_ye, s_yl,
                  HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
                  N: tl.constexpr, BLOCK_E: tl.constexpr, BLOCK_L: tl.constexpr):
        pid_b, offs_e, offs_n, offs_l, mask_e, group = _program_block(E, per_group, N, BLOCK_E, BLOCK_L)
        A, Dv, bias = _channel_params(A_ptr, D_ptr, bias_ptr, offs_e, offs_n, mask_e, s_ae, s_an,
                                      HAS_D, HAS_BIAS, BLOCK_E)
        # Scratch and float32 outputs of this kernel are contiguous: (B, E, N, tiles), (B, E, N), (B, E).
        h0_base = h0_ptr + ((pid_b * E + offs_e[:, None]) * N + offs_n[None, :]) * n_tiles
        mask_en = mask_e[:, None]
        last = (offs_l == BLOCK_L - 1)[None, None, :]
        first = (offs_l == 0)[None, None, :]
        off_ub, off_db, off_yb = pid_b * s_ub, pid_b * s_db, pid_b * s_yb
        off_bc_b = pid_b * s_bb + group * s_bg
        off_bc_c = pid_b * s_cb + group * s_cg

        # Pass 1: the state at every tile's start.
        h = tl.zeros((BLOCK_E, N), dtype=tl.float32)
        for k in tl.range(0, n_tiles):
            tl.store(h0_base + k, h, mask=mask_en)
            ls = k * BLOCK_L + offs_l
            mask_l = ls < L
            m2 = mask_e[:, None] & mask_l[None, :]
            u = tl.load(u_ptr + off_ub + offs_e[:, None] * s_ue + ls[None, :] * s_ul, mask=m2, other=0.0).to(tl.float32)
            dt, _ = _delta(dt_ptr, off_db, offs_e, ls, s_de, s_dl, m2, bias, HAS_BIAS, SOFTPLUS)
            Bt = tl.load(B_ptr + off_bc_b + offs_n[:, None] * s_bn + ls[None, :] * s_bl,
                         mask=mask_l[None, :], other=0.0).to(tl.float32)
            decay = tl.exp(dt[:, None, :] * A[:, :, None])
            decay_cum, h_local = tl.associative_scan((decay, (dt * u)[:, None, :] * Bt[None, :, :]), 2, _combine)
            h = tl.sum(tl.where(last, h_local + decay_cum * h[:, :, None], 0.0), axis=2)

        # Pass 2: tiles from the last to the first, the adjoint state g carried backwards.
        g_carry = tl.zeros((BLOCK_E, N), dtype=tl.float32)
        dA_acc = tl.zeros((BLOCK_E, N), dtype=tl.float32)
        dD_acc = tl.zeros((BLOCK_E,), dtype=tl.float32)
        dbias_acc = tl.zeros((BLOCK_E,), dtype=tl.float32)
        for kk in tl.range(0, n_tiles):
            k = n_tiles - 1 - kk
            ls = k * BLOCK_L + offs_l
            mask_l = ls < L
            m2 = mask_e[:, None] & mask_l[None, :]
            seq = offs_e[:, None] * s_ue + ls[None, :] * s_ul
            u = tl.load(u_ptr + off_ub + seq, mask=m2, other=0.0).to(tl.float32)
            dt, slope = _delta(dt_ptr, off_db, offs_e, ls, s_de, s_dl, m2, bias, HAS_BIAS, SOFTPLUS)
            Bt = tl.load(B_ptr + off_bc_b + offs_n[:, None] * s_bn + ls[None, :] * s_bl,
                         mask=mask_l[None, :], other=0.0).to(tl.float32)
            Ct = tl.load(C_ptr + off_bc_c + offs_n[:, None] * s_cn + ls[None, :] * s_cl,
                         mask=mask_l[None, :], other=0.0).to(tl.float32)
            dy = tl.load(dy_ptr + off_yb + offs_e[:, None] * s_ye + ls[None, :] * s_yl, mask=m2, other=0.0)
            dy = dy.to(tl.float32)
            h0 = tl.load(h0_base + k, mask=mask_en, other=0.0)
            inputs = (dt * u)[:, None, :] * Bt[None, :, :]  # (BE, N, BL)
            decay_cum, h_local = tl.associative_scan((tl.exp(dt[:, None, :] * A[:, :, None]), inputs), 2, _combine)
            hs = h_local + decay_cum * h0[:, :, None]  # the states after every step of the tile
            dy0 = dy
            if HAS_Z:
                z = tl.load(z_ptr + pid_b * s_zb + offs_e[:, None] * s_ze + ls[None, :] * s_zl, mask=m2, other=0.0)
                z = z.to(tl.float32)
                sz = tl.sigmoid(z)
                y0 = tl.sum(hs * Ct[None, :, :], axis=1) + u * Dv[:, None]
                tl.store(dz_ptr + off_yb + offs_e[:, None] * s_ye + ls[None, :] * s_yl,
                         dy * y0 * sz * (1.0 + z * (1.0 - sz)), mask=m2)
                dy0 = dy * z * sz
            # the decay of the next step, exp(delta_{t+1} A); none after the sequence's last step
            nxt = ls + 1
            m_next = mask_e[:, None] & (nxt < L)[None, :]
            dt_next, _ = _delta(dt_ptr, off_db, offs_e, nxt, s_de, s_dl, m_next, bias, HAS_BIAS, SOFTPLUS)
            a_next = tl.where(m_next[:, None, :], tl.exp(dt_next[:, None, :] * A[:, :, None]), 0.0)
            cum, g_local = tl.associative_scan((a_next, dy0[:, None, :] * Ct[None, :, :]), 2, _combine, reverse=True)
            g = g_local + cum * g_carry[:, :, None]  # (BE, N, BL): dL/dh_t
            g_carry = tl.sum(tl.where(first, g, 0.0), axis=2)
            gB = tl.sum(g * Bt[None, :, :], axis=1)  # (BE, BL)
            x = g * (hs - inputs)  # g_t a_t h_{t-1}
            ddt = gB * u + tl.sum(x * A[:, :, None], axis=1)
            ddt = tl.where(m2, ddt * slope, 0.0)
            tl.store(du_ptr + off_ub + seq, dy0 * Dv[:, None] + gB * dt, mask=m2)
            tl.store(ddt_ptr + off_ub + seq, ddt, mask=m2)
            dA_acc += tl.sum(x * dt[:, None, :], axis=2)
            dD_acc += tl.sum(dy0 * u, axis=1)
            dbias_acc += tl.sum(ddt, axis=1)
            bc = (pid_b * (E // per_group) + group) * N * L + offs_n[:, None] * L + ls[None, :]
            tl.atomic_add(dB_ptr + bc, tl.sum(g * (dt * u)[:, None, :], axis=0), mask=mask_l[None, :])
            tl.atomic_add(dC_ptr + bc, tl.sum(dy0[:, None, :] * hs, axis=0), mask=mask_l[None, :])
        tl.store(dA_ptr + (pid_b * E + offs_e[:, None]) * N + offs_n[None, :], dA_acc, mask=mask_en)
        tl.store(dD_ptr + pid_b * E + offs_e, dD_acc, mask=mask_e)
        tl.store(dbias_ptr + pid_b * E + offs_e, dbias_acc, mask=mask_e)


def selective_scan_triton_backward(dout, u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                                   block_e: int | None = None, block_l: int | None = None,
                                   num_warps: int | None = None):
    """[du, ddelta, dA, dB, dC, dD, dz, ddelta_bias] of the scan's output y for the gradient `dout`
    (None for an absent input), in the inputs' dtypes and shapes; one Triton launch."""
    batch, dim, length = u.shape
    nstate = A.shape[1]
    Bg, Cg, per_group, be, bl = launch_geometry(u, A, B, C, block_e or BACKWARD_TILES.block_e,
                                                block_l or BACKWARD_TILES.block_l)
    groups = Bg.shape[1]
    n_tiles = -(-length // bl)
    f32 = dict(dtype=torch.float32, device=u.device)
    # du and ddelta share u's strides (the kernel indexes both with them), dz shares dout's.
    du = torch.empty_strided(u.shape, u.stride(), **f32)
    ddelta = torch.empty_strided(u.shape, u.stride(), **f32)
    dz = torch.empty_strided(dout.shape, dout.stride(), **f32) if z is not None else None
    h0 = torch.empty(batch, dim, nstate, n_tiles, **f32)
    dA = torch.empty(batch, dim, nstate, **f32)
    dD = torch.empty(batch, dim, **f32)
    dbias = torch.empty(batch, dim, **f32)
    dB = torch.zeros(batch, groups, nstate, length, **f32)
    dC = torch.zeros(batch, groups, nstate, length, **f32)
    zz = z if z is not None else dout
    dummy = dout
    _scan_bwd[(batch, -(-dim // be))](
        u, delta, A, Bg, Cg, D if D is not None else dummy, zz, delta_bias if delta_bias is not None else dummy,
        dout, h0, du, ddelta, dz if dz is not None else du, dA, dD, dbias, dB, dC,
        dim, length, per_group, n_tiles,
        *u.stride(), *delta.stride(), *A.stride(), *Bg.stride(), *Cg.stride(), *zz.stride(), *dout.stride(),
        HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=delta_bias is not None, SOFTPLUS=bool(delta_softplus),
        N=nstate, BLOCK_E=be, BLOCK_L=bl, num_warps=num_warps or BACKWARD_TILES.num_warps,
    )
    return [du.to(u.dtype), ddelta.to(delta.dtype), dA.sum(0).to(A.dtype), dB.reshape(B.shape).to(B.dtype),
            dC.reshape(C.shape).to(C.dtype), None if D is None else dD.sum(0).to(D.dtype),
            None if z is None else dz.to(z.dtype), None if delta_bias is None else dbias.sum(0).to(delta_bias.dtype)]
