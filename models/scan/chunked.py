"""Two-level chunked selective scan in pure PyTorch: portable, differentiable, any device.

The sequence is cut into L/T chunks of T steps (T ~ sqrt(L / 2)). Three loops, each over tensors
that hold every chunk at once, replace the reference's L Python steps by about 2T + L/T:

1. within each chunk, scan from a zero state (T steps over all chunks in parallel);
2. carry the state across chunks: H_c = decay_c * H_{c-1} + h_c(end) (L/T small steps);
3. propagate each chunk's incoming state through the chunk, exp(cumsum(dt) * A) * H_{c-1}, and add
   its contribution to y (T steps).

Same semantics and shapes as reference.py (mamba-ssm's `selective_scan_ref`). Without autograd it
never materialises a (B, E, L, N) tensor; with autograd the per-step tensors it saves add up to a
few of them, like the reference. It is the fallback where neither the C++ CPU kernel nor
mamba-ssm's CUDA kernel applies, and the differentiable twin used to check them.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def selective_scan_chunked(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
    return_last_state: bool = False,
    initial_state: torch.Tensor | None = None,
    chunk_size: int | None = None,
):
    """Selective scan with mamba-ssm's shapes (see reference.py); `chunk_size` overrides T."""
    dtype_in = u.dtype
    compute = torch.float64 if u.dtype == torch.float64 else torch.float32
    u = u.to(compute)
    delta = delta.to(compute)
    A = A.to(compute)
    if delta_bias is not None:
        delta = delta + delta_bias[..., None].to(compute)
    if delta_softplus:
        delta = F.softplus(delta)
    batch, dim, length = u.shape
    nstate = A.shape[1]
    B = (B.unsqueeze(1) if B.dim() == 3 else B).to(compute)  # (B, G, N, L)
    C = (C.unsqueeze(1) if C.dim() == 3 else C).to(compute)  # (B, G, N, L)
    groups = B.shape[1]
    per_group = dim // groups
    if initial_state is not None:
        state = initial_state.to(compute).reshape(batch, groups, per_group, nstate)
    else:
        state = u.new_zeros(batch, groups, per_group, nstate)  # (B, G, E/G, N)

    if u.numel() == 0:  # B, E or L zero: nothing to scan (the reshapes below cannot infer a -1 next to a 0)
        y = u.new_zeros(batch, dim, length)
    else:
        T = chunk_size or max(1, math.ceil(math.sqrt(length / 2)))
        nchunks = math.ceil(length / T)
        pad = nchunks * T - length  # padded steps have dt = 0: decay 1, no input, state unchanged
        # Decays below exp(floor) are flushed to exp(floor): a difference far below the dtype's
        # resolution, and it keeps the products out of the (very slow) denormal range.
        floor = -80.0 if compute == torch.float32 else -700.0

        def steps_first(x, n):  # (B, G*E/G or G*n, nc*T) -> (T, B, G, E/G or 1, nc, n): slices x[t] contiguous
            x = F.pad(x, (0, pad)).reshape(batch, groups, -1, n, nchunks, T)
            return x.permute(5, 0, 1, 2, 4, 3).contiguous()

        dt = steps_first(delta, 1)  # (T, B, G, E/G, nc, 1)
        dtu = steps_first(delta * u, 1)  # (T, B, G, E/G, nc, 1)
        Bs = steps_first(B, nstate)  # (T, B, G, 1, nc, N)
        Cs = steps_first(C, nstate)  # (T, B, G, 1, nc, N)
        A_ = A.reshape(groups, per_group, 1, nstate)  # broadcasts against (B, G, E/G, nc, N)

        # Without autograd the loops below update preallocated buffers in place: no allocation per
        # step (on CPU every fresh tensor of this size costs page faults).
        inplace = not torch.is_grad_enabled() or not any(
            x is not None and x.requires_grad for x in (u, delta, A, B, C, initial_state)
        )
        shape = (batch, groups, per_group, nchunks, nstate)  # (B, G, E/G, nc, N)
        y_local = u.new_empty(T, batch, groups, per_group, nchunks)
        y_carry = u.new_empty(T, batch, groups, per_group, nchunks)
        if inplace:
            decay, inputs = u.new_empty(shape), u.new_empty(shape)

        # 1. Scan inside every chunk from a zero state.
        h = u.new_zeros(shape)
        for t in range(T):
            if inplace:
                torch.mul(dt[t], A_, out=decay).clamp_min_(floor).exp_()
                h.mul_(decay).add_(torch.mul(dtu[t], Bs[t], out=inputs))
                torch.linalg.vecdot(h, Cs[t], out=y_local[t])
            else:
                h = torch.addcmul(dtu[t] * Bs[t], (dt[t] * A_).clamp_min(floor).exp(), h)
                y_local[t] = torch.linalg.vecdot(h, Cs[t])

        # 2. Carry the state across chunks; keep the state entering each chunk.
        cum = torch.cumsum(dt, dim=0)  # (T, B, G, E/G, nc, 1): decay exponent from the chunk start
        chunk_decay = (cum[-1] * A_).clamp_min(floor).exp()  # (B, G, E/G, nc, N)
        incoming = []
        for c in range(nchunks):
            incoming.append(state)
            state = torch.addcmul(h[:, :, :, c], chunk_decay[:, :, :, c], state)
        s = torch.stack(incoming, dim=3)  # (B, G, E/G, nc, N)

        # 3. Propagate the incoming states through their chunks.
        for t in range(T):
            if inplace:
                torch.mul(cum[t], A_, out=decay).clamp_min_(floor).exp_().mul_(s)
                torch.linalg.vecdot(decay, Cs[t], out=y_carry[t])
            else:
                y_carry[t] = torch.linalg.vecdot((cum[t] * A_).clamp_min(floor).exp() * s, Cs[t])

        y = (y_local + y_carry).permute(1, 2, 3, 4, 0)  # (B, G, E/G, nc, T)
        y = y.reshape(batch, dim, nchunks * T)[..., :length]  # (B, E, L)

    if D is not None:
        y = y + u * D.to(compute)[:, None]
    if z is not None:
        y = y * F.silu(z.to(compute))
    y = y.to(dtype_in)
    return (y, state.reshape(batch, dim, nstate)) if return_last_state else y
