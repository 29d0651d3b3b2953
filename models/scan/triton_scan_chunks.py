"""Parallelism along the sequence for the Triton scan: chunk summaries, and how many chunks to use.

One forward program per (batch, channel block) walks all of L in order (triton_scan.py); at SSAMBA-
tiny's shape on an H100 that is 384 programs, too few to keep the GPU's memory system busy (the scan
reached ~5% of copy bandwidth). Splitting L into chunks gives every chunk its own program, as
mamba-ssm's kernel and chunked scans do, in two launches:

1. `_chunk_summaries`, grid (batch, channel blocks, chunks - 1): for its chunk, the state at the
   chunk's end starting from zero and the chunk's total decay exp(A * sum(delta)). Inside a tile the
   end state needs no scan: the input of step t decays by exp(A * (T - s_t)) until the tile's end,
   where s is the running sum of delta within the tile and T its total, so
       h_end = exp(A * T) * h_start + sum_t exp(A * (T - s_t)) * delta_t * u_t * B_t,
   per tile, differences of sums within one tile only (no cancellation of long running sums).
   It reads u, delta and B, not C or z, and writes (B, chunks, E, N) float32 twice.
2. the forward kernel, grid (batch, channel blocks, chunks): each program folds the earlier chunks'
   summaries into its starting state (h = decay_c * h + state_c, in order) and scans its chunk.

The extra traffic is one more read of u and delta (~1.5x the minimum for 4 full-size arrays); the
number of chunks trades that against parallelism. `chunk_layout` picks it: explicit, or "auto" =
enough programs for PROGRAMS_PER_SM on every multiprocessor, each chunk at least MIN_CHUNK_TILES
tiles long. Both are guesses until a GPU measures them (scripts/gpu_scan_check.py times the choices).
"""

from __future__ import annotations

import math

import torch

from models.scan.triton_common import triton

PROGRAMS_PER_SM = 8
MIN_CHUNK_TILES = 4


def chunk_layout(length: int, block_l: int, programs: int, chunks: int | str, device: torch.device) -> tuple[int, int]:
    """(number of chunks, steps per chunk, a multiple of block_l) for a launch of `programs` programs per chunk."""
    tiles = max(1, math.ceil(length / block_l))
    if chunks == "auto":
        sms = torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 1
        chunks = min(math.ceil(PROGRAMS_PER_SM * sms / max(programs, 1)), tiles // MIN_CHUNK_TILES)
    tiles_per_chunk = math.ceil(tiles / max(1, min(int(chunks), tiles)))
    return math.ceil(tiles / tiles_per_chunk), tiles_per_chunk * block_l


if triton is not None:
    import triton.language as tl

    from models.scan.triton_common import _channel_params, _delta, _program_block

    @triton.jit
    def _chunk_summaries(u_ptr, dt_ptr, A_ptr, B_ptr, bias_ptr, states_ptr, decays_ptr,
                         E, L, per_group, n_chunks, CHUNK_L,
                         s_ub, s_ue, s_ul, s_db, s_de, s_dl, s_ae, s_an, s_bb, s_bg, s_bn, s_bl,
                         HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, N: tl.constexpr,
                         BLOCK_E: tl.constexpr, BLOCK_L: tl.constexpr, LOOP_STATES: tl.constexpr):
        pid_b, offs_e, offs_n, offs_l, mask_e, group = _program_block(E, per_group, N, BLOCK_E, BLOCK_L)
        A, _, bias = _channel_params(A_ptr, bias_ptr, bias_ptr, offs_e, offs_n, mask_e, s_ae, s_an,
                                     False, HAS_BIAS, BLOCK_E)
        pid_c = tl.program_id(2)
        begin = pid_c * CHUNK_L
        end = tl.minimum(begin + CHUNK_L, L)
        off_b = pid_b * s_bb + group * s_bg
        h = tl.zeros((BLOCK_E, N), dtype=tl.float32)
        total = tl.zeros((BLOCK_E,), dtype=tl.float32)
        for l0 in tl.range(begin, end, BLOCK_L):
            ls = l0 + offs_l
            mask_l = ls < end
            m2 = mask_e[:, None] & mask_l[None, :]
            u = tl.load(u_ptr + pid_b * s_ub + offs_e[:, None] * s_ue + ls[None, :] * s_ul, mask=m2, other=0.0)
            dt, _ = _delta(dt_ptr, pid_b * s_db, offs_e, ls, s_de, s_dl, m2, bias, HAS_BIAS, SOFTPLUS)
            x = dt * u.to(tl.float32)
            T = tl.sum(dt, axis=1)  # (BE,)
            rest = T[:, None] - tl.cumsum(dt, axis=1)  # (BE, BL): delta still to come in the tile after step t
            if LOOP_STATES:
                for n in tl.static_range(N):
                    pick = (offs_n == n)[None, :]
                    a_n = tl.sum(tl.where(pick, A, 0.0), axis=1)
                    Bn = tl.load(B_ptr + off_b + n * s_bn + ls * s_bl, mask=mask_l, other=0.0).to(tl.float32)
                    h_n = tl.exp(a_n * T) * tl.sum(tl.where(pick, h, 0.0), axis=1) + \
                        tl.sum(tl.exp(rest * a_n[:, None]) * x * Bn[None, :], axis=1)
                    h = tl.where(pick, h_n[:, None], h)
            else:
                Bt = tl.load(B_ptr + off_b + offs_n[:, None] * s_bn + ls[None, :] * s_bl,
                             mask=mask_l[None, :], other=0.0).to(tl.float32)  # (N, BL)
                weight = tl.exp(A[:, :, None] * rest[:, None, :])  # (BE, N, BL)
                h = tl.exp(A * T[:, None]) * h + tl.sum(weight * x[:, None, :] * Bt[None, :, :], axis=2)
            total += T
        off = ((pid_b * n_chunks + pid_c) * E + offs_e[:, None]) * N + offs_n[None, :]
        tl.store(states_ptr + off, h, mask=mask_e[:, None])
        tl.store(decays_ptr + off, tl.exp(A * total[:, None]), mask=mask_e[:, None])


def chunk_summaries(u, delta, A, Bg, delta_bias, delta_softplus, per_group, n_chunks, chunk_l,
                    block_e, block_l, num_warps, loop_states):
    """(states, decays), each (B, n_chunks, E, N) float32; the last chunk's are never read, nor computed."""
    batch, dim, length = u.shape
    nstate = A.shape[1]
    states = torch.empty(batch, n_chunks, dim, nstate, dtype=torch.float32, device=u.device)
    decays = torch.empty_like(states)
    bias = delta_bias if delta_bias is not None else states  # never read without HAS_BIAS
    _chunk_summaries[(batch, -(-dim // block_e), n_chunks - 1)](
        u, delta, A, Bg, bias, states, decays, dim, length, per_group, n_chunks, chunk_l,
        *u.stride(), *delta.stride(), *A.stride(), *Bg.stride(),
        HAS_BIAS=delta_bias is not None, SOFTPLUS=bool(delta_softplus), N=nstate, BLOCK_E=block_e,
        BLOCK_L=block_l, LOOP_STATES=loop_states, num_warps=num_warps,
    )
    return states, decays
