"""Two-level chunked selective scan in pure PyTorch: portable, differentiable, any device.

The sequence is cut into L/T chunks of T steps (T ~ sqrt(L / 2)). Three loops, each over tensors
that hold every chunk at once, replace the reference's L Python steps by about 2T + L/T:

1. within each chunk, scan from a zero state (T steps over all chunks in parallel);
2. carry the state across chunks: H_c = decay_c * H_{c-1} + h_c(end) (L/T small steps);
3. propagate each chunk's incoming state through the chunk and add its contribution to y (T steps).

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

    if length == 0:
        y = u.new_zeros(batch, dim, 0)
    else:
        T = chunk_size or max(1, math.ceil(math.sqrt(length / 2)))
        nchunks = math.ceil(length / T)
        pad = nchunks * T - length  # padded steps have dt = 0: decay 1, no input, state unchanged
        shape = (batch, groups, per_group, nchunks, T)
        dt = F.pad(delta, (0, pad)).reshape(shape)  # (B, G, E/G, nc, T)
        dtu = F.pad(delta * u, (0, pad)).reshape(shape)  # (B, G, E/G, nc, T)
        Bc = F.pad(B, (0, pad)).reshape(batch, groups, nstate, nchunks, T).permute(0, 1, 4, 3, 2)  # (B, G, T, nc, N)
        Cc = F.pad(C, (0, pad)).reshape(batch, groups, nstate, nchunks, T).permute(0, 1, 4, 3, 2)  # (B, G, T, nc, N)
        A_ = A.reshape(groups, per_group, 1, nstate)  # broadcasts against (B, G, E/G, nc, N)

        # 1. Scan inside every chunk from a zero state.
        h = u.new_zeros(batch, groups, per_group, nchunks, nstate)  # (B, G, E/G, nc, N)
        y_local = []
        for t in range(T):
            h = torch.exp(dt[..., t, None] * A_) * h + dtu[..., t, None] * Bc[:, :, t].unsqueeze(2)
            y_local.append((h * Cc[:, :, t].unsqueeze(2)).sum(-1))  # (B, G, E/G, nc)

        # 2. Carry the state across chunks; keep the state entering each chunk.
        decay = torch.exp(dt.sum(-1, keepdim=True) * A_)  # (B, G, E/G, nc, N)
        incoming = []
        for c in range(nchunks):
            incoming.append(state)
            state = decay[:, :, :, c] * state + h[:, :, :, c]
        s = torch.stack(incoming, dim=3)  # (B, G, E/G, nc, N)

        # 3. Propagate the incoming states through their chunks.
        y_carry = []
        for t in range(T):
            s = torch.exp(dt[..., t, None] * A_) * s
            y_carry.append((s * Cc[:, :, t].unsqueeze(2)).sum(-1))  # (B, G, E/G, nc)

        y = torch.stack(y_local, dim=-1) + torch.stack(y_carry, dim=-1)  # (B, G, E/G, nc, T)
        y = y.reshape(batch, dim, nchunks * T)[..., :length]  # (B, E, L)

    if D is not None:
        y = y + u * D.to(compute)[:, None]
    if z is not None:
        y = y * F.silu(z.to(compute))
    y = y.to(dtype_in)
    return (y, state.reshape(batch, dim, nstate)) if return_last_state else y
