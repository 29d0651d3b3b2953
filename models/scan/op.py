"""The selective scan as a PyTorch custom operator: one op for every backend.

`torch.ops.ssamba_bench.selective_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus, impl)`
runs the backend named by `impl` (already resolved to a concrete name). Wrapping it as a
`torch.library.custom_op` gives it:

- a fake (meta) implementation that allocates exactly what the fused kernels allocate, the output
  y (B, E, L), so FakeTensorMode / meta-device runs predict memory of a fused scan that never
  materialises (B, E, L, N);
- a FLOP formula, 9 * B * L * E * N (docs/models.md), that FlopCounterMode picks up;
- autograd: the C++ CPU kernel has its own backward op (`selective_scan_cpu_backward`, with fake
  impl and FLOP formula too); the other backends are differentiable PyTorch (or mamba-ssm's own
  autograd Function), so their backward recomputes the forward under autograd and differentiates
  it (one extra forward, like mamba-ssm's recompute). The forward-only Triton kernel is
  differentiated through its twin, the chunked scan.

An empty problem (B, E or L zero: an empty batch, most often) never reaches a backend: the op
answers it itself, an empty y and zero gradients, the same for every backend. Kernels size their
launch grids and work splits by these dimensions (the C++ split divided by B * G: SIGFPE; a CUDA
grid may not be empty; chunked's reshapes cannot infer a dimension next to a zero-size one).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor
from torch.utils.flop_counter import register_flop_formula

from models.scan.chunked import selective_scan_chunked
from models.scan.cpu import output_is_lanes, selective_scan_cpu, selective_scan_cpu_backward
from models.scan.mamba import selective_scan_mamba
from models.scan.reference import selective_scan_reference
from models.scan.triton_scan import selective_scan_triton

# Backend name -> forward function (u, delta, A, B, C, D, z, delta_bias, delta_softplus) -> y.
BACKENDS: dict[str, Callable[..., Tensor]] = {
    "reference": selective_scan_reference,
    "chunked": selective_scan_chunked,
    "cpu_cpp": selective_scan_cpu,
    "mamba_ssm": selective_scan_mamba,
    "triton": selective_scan_triton,
}
# Forward-only backends: their gradients come from differentiating this twin (same function).
DIFFERENTIABLE_TWIN = {"triton": "chunked"}

FLOPS_PER_ELEMENT = 9  # per (batch, step, channel, state): docs/models.md and mamba-ssm's estimate
# The backward of a scan is about twice its forward, as for a matmul (the fused kernels also
# recompute the forward, which this count leaves out, as FLOP counts of recomputation usually do).
BACKWARD_FLOPS_PER_ELEMENT = 2 * FLOPS_PER_ELEMENT


@torch.library.custom_op("ssamba_bench::selective_scan", mutates_args=())
def selective_scan_op(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None,
    z: Tensor | None,
    delta_bias: Tensor | None,
    delta_softplus: bool,
    impl: str,
) -> Tensor:
    """y (B, E, L) from the backend `impl`; see models.scan.selective_scan for the arguments."""
    if u.numel() == 0:  # nothing to scan: no backend is asked (see the module docstring)
        return _empty_output(u, z, impl)
    return BACKENDS[impl](u, delta, A, B, C, D, z, delta_bias, delta_softplus)


def _empty_output(u: Tensor, z: Tensor | None, impl: str) -> Tensor:
    """A y (B, E, L) with unset values, laid out as the backend `impl` lays it out: what the fake kernel
    allocates, and the whole answer to an empty problem."""
    batch, dim, length = u.shape
    if impl == "cpu_cpp" and output_is_lanes(u, z):
        return u.new_empty(batch, length, dim).transpose(1, 2)
    return u.new_empty(batch, dim, length)


@selective_scan_op.register_fake
def _selective_scan_fake(u, delta, A, B, C, D, z, delta_bias, delta_softplus, impl):
    # (B, E, L): the only tensor a fused scan allocates, in the layout the real kernel returns.
    return _empty_output(u, z, impl)


@torch.library.custom_op("ssamba_bench::selective_scan_cpu_backward", mutates_args=())
def selective_scan_cpu_backward_op(
    dout: Tensor,
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None,
    z: Tensor | None,
    delta_bias: Tensor | None,
    delta_softplus: bool,
) -> list[Tensor]:
    """[du, ddelta, dA, dB, dC, dD, dz, ddelta_bias]; an absent input's gradient is an empty tensor."""
    grads = selective_scan_cpu_backward(dout, u, delta, A, B, C, D, z, delta_bias, delta_softplus)
    return [u.new_empty(0) if g is None else g for g in grads]


@selective_scan_cpu_backward_op.register_fake
def _selective_scan_cpu_backward_fake(dout, u, delta, A, B, C, D, z, delta_bias, delta_softplus):
    # Gradients are allocated like their inputs (du, ddelta, dz keep the input's layout).
    return [u.new_empty(0) if x is None else torch.empty_like(x) for x in (u, delta, A, B, C, D, z, delta_bias)]


def _setup_context(ctx, inputs, output):
    u, delta, A, B, C, D, z, delta_bias, delta_softplus, impl = inputs
    ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias)
    ctx.delta_softplus = delta_softplus
    ctx.impl = impl


def _backward(ctx, dout):
    saved = ctx.saved_tensors
    needs = ctx.needs_input_grad[:8]
    if dout.numel() == 0:
        # An empty y depends on nothing: every gradient is zero (A's, D's and delta_bias's too).
        grads = [torch.zeros_like(x) if x is not None and need else None for x, need in zip(saved, needs)]
    elif ctx.impl == "cpu_cpp":
        grads = selective_scan_cpu_backward_op(dout, *saved, ctx.delta_softplus)
        grads = [g if x is not None and need else None for g, x, need in zip(grads, saved, needs)]
    else:
        twin = DIFFERENTIABLE_TWIN.get(ctx.impl, ctx.impl)
        grads = _recompute_grads(BACKENDS[twin], dout, saved, needs, ctx.delta_softplus)
    return (*grads, None, None)


def _recompute_grads(fn, dout: Tensor, saved: Sequence[Tensor | None], needs: Sequence[bool], delta_softplus: bool):
    """Gradients of a differentiable backend: rerun its forward under autograd, differentiate it."""
    with torch.enable_grad():
        leaves = [None if x is None else x.detach().requires_grad_(need) for x, need in zip(saved, needs)]
        wanted = [x for x in leaves if x is not None and x.requires_grad]
        if not wanted:
            return [None] * len(saved)
        y = fn(*leaves, delta_softplus)
        found = iter(torch.autograd.grad(y, wanted, dout, allow_unused=True))
    return [next(found) if x is not None and x.requires_grad else None for x in leaves]


selective_scan_op.register_autograd(_backward, setup_context=_setup_context)


def scan_flops(batch: int, length: int, dim: int, nstate: int) -> int:
    """FLOPs of one selective scan forward: 9 * B * L * E * N."""
    return FLOPS_PER_ELEMENT * batch * length * dim * nstate


@register_flop_formula(torch.ops.ssamba_bench.selective_scan)
def _selective_scan_flop(u_shape, delta_shape, A_shape, *args, out_shape=None, **kwargs) -> int:
    batch, dim, length = u_shape
    return scan_flops(batch, length, dim, A_shape[-1])


@register_flop_formula(torch.ops.ssamba_bench.selective_scan_cpu_backward)
def _selective_scan_backward_flop(dout_shape, u_shape, delta_shape, A_shape, *args, out_shape=None, **kwargs) -> int:
    batch, dim, length = u_shape
    return BACKWARD_FLOPS_PER_ELEMENT * batch * length * dim * A_shape[-1]
