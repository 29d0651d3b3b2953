"""Sequential pure-PyTorch selective scan: the ground truth every faster backend is tested against.

Follows mamba-ssm's `selective_scan_ref` (state-spaces/mamba, ops/selective_scan_interface.py),
argument for argument, written as the plain recurrence of docs/models.md:

    h_t = exp(delta_t * A) * h_{t-1} + delta_t * B_t * u_t,    y_t = <h_t, C_t> + D * u_t

It loops over time in Python, so it is slow (O(L) Python steps) but obviously correct.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def selective_scan_reference(
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
):
    """Selective scan with mamba-ssm's shapes.

    u, delta, z: (B, E, L); A: (E, N); B, C: (B, N, L) or (B, G, N, L) with E divisible by G;
    D, delta_bias: (E,); initial_state: (B, E, N). Returns y (B, E, L) in u's dtype, and the last
    state (B, E, N) when `return_last_state`. Computation is in float32 (float64 stays float64),
    as in mamba-ssm.
    """
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
    B = _expand_groups(B.to(compute), dim)  # (B, E, N, L)
    C = _expand_groups(C.to(compute), dim)  # (B, E, N, L)
    state = (
        initial_state.to(compute)
        if initial_state is not None
        else u.new_zeros(batch, dim, A.shape[1])
    )  # (B, E, N)
    deltaA = torch.exp(delta.unsqueeze(-1) * A.unsqueeze(1))  # (B, E, L, N)
    deltaB_u = (delta * u).unsqueeze(-1) * B.transpose(-1, -2)  # (B, E, L, N)
    # unbind, not deltaA[:, :, t]: the same views, but autograd gathers the per-step gradients
    # once (UnbindBackward) instead of adding a zero-padded full-size gradient per step (O(L^2)).
    decays, inputs, readouts = deltaA.unbind(2), deltaB_u.unbind(2), C.unbind(3)  # L x (B, E, N)
    ys = []
    for t in range(length):
        state = decays[t] * state + inputs[t]
        ys.append(torch.einsum("ben,ben->be", state, readouts[t]))
    y = torch.stack(ys, dim=-1) if ys else u.new_zeros(batch, dim, 0)  # (B, E, L)
    if D is not None:
        y = y + u * D.to(compute)[:, None]
    if z is not None:
        y = y * F.silu(z.to(compute))
    y = y.to(dtype_in)
    return (y, state) if return_last_state else y


def _expand_groups(x: torch.Tensor, dim: int) -> torch.Tensor:
    """(B, N, L) or (B, G, N, L) -> (B, E, N, L): every channel sees its group's B or C."""
    if x.dim() == 3:
        return x.unsqueeze(1).expand(-1, dim, -1, -1)
    groups = x.shape[1]
    return x.repeat_interleave(dim // groups, dim=1)
