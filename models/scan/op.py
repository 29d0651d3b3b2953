"""The selective scan as a PyTorch custom operator: one op for every backend.

`torch.ops.ssamba_bench.selective_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus, impl, reverse)`
runs the backend named by `impl` (already resolved to a concrete name). `reverse` scans from the last
step to the first, i.e. flip(scan(flip(inputs))) along L: the C++ kernel walks L backwards itself
(no copies); every other backend gets flipped inputs and its output flipped back. The result is
(addend + y) * out_scale: a bidirectional mixer passes the other direction's output and 1/2 (SSAMBA
averages) or 1 (AuM's Fo-Bi sums), which the C++ kernel applies in its epilogue, so combining the two
directions is not a pass of its own. Wrapping it as a `torch.library.custom_op` gives it:

- a fake (meta) implementation that allocates exactly what the fused kernels allocate, the output
  y (B, E, L), so FakeTensorMode / meta-device runs predict memory of a fused scan that never
  materialises (B, E, L, N);
- a FLOP formula, 9 * B * L * E * N (docs/models.md), that FlopCounterMode picks up;
- autograd: the C++ CPU kernel has its own backward op (`selective_scan_cpu_backward`, with fake
  impl and FLOP formula too); the other backends are differentiable PyTorch (or mamba-ssm's own
  autograd Function), so their backward recomputes the forward under autograd and differentiates
  it (one extra forward, like mamba-ssm's recompute). The Triton backend has its own backward
  kernel (triton_scan_backward.py); only its float64 calls (which the chunked scan answers) are
  differentiated through that twin.

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
from models.scan.triton_scan_backward import selective_scan_triton_backward

# Backend name -> forward function (u, delta, A, B, C, D, z, delta_bias, delta_softplus) -> y.
BACKENDS: dict[str, Callable[..., Tensor]] = {
    "reference": selective_scan_reference,
    "chunked": selective_scan_chunked,
    "cpu_cpp": selective_scan_cpu,
    "mamba_ssm": selective_scan_mamba,
    "triton": selective_scan_triton,
}
# Backends with a backward kernel of their own: (dout, u, delta, A, B, C, D, z, delta_bias, softplus) ->
# the eight input gradients. float64 never reaches them (the Triton forward hands float64 to chunked).
BACKWARD_KERNELS: dict[str, Callable[..., list]] = {"triton": selective_scan_triton_backward}
# Backends without one: their gradients come from differentiating this twin (same function).
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
    reverse: bool = False,
    addend: Tensor | None = None,
    out_scale: float = 1.0,
) -> Tensor:
    """(addend + y) * out_scale, y (B, E, L) from the backend `impl`; see models.scan.selective_scan."""
    if u.numel() == 0:  # nothing to scan: no backend is asked (see the module docstring)
        return _empty_output(u, z, impl, reverse)
    if impl == "cpu_cpp":
        return selective_scan_cpu(u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse=reverse,
                                  addend=addend, out_scale=out_scale)
    y = _run_backend(BACKENDS[impl], (u, delta, A, B, C, D, z, delta_bias), delta_softplus, reverse)
    return _epilogue(y, addend, out_scale)


def _epilogue(y: Tensor, addend: Tensor | None, out_scale: float) -> Tensor:
    """(addend + y) * out_scale as separate ops (the C++ kernel does it in its epilogue)."""
    if addend is not None:
        y = addend + y
    return y * out_scale if out_scale != 1.0 else y


def _flip_l(t: Tensor | None) -> Tensor | None:
    """A sequence (u, delta, z, B, C and their gradients) reversed along L; None stays None."""
    return None if t is None else t.flip(-1)


def _run_backend(fn: Callable[..., Tensor], inputs: Sequence[Tensor | None], delta_softplus: bool,
                 reverse: bool) -> Tensor:
    """fn on (u, delta, A, B, C, D, z, delta_bias); a reverse scan as flip(fn(flipped inputs))."""
    if not reverse:
        return fn(*inputs, delta_softplus)
    u, delta, A, B, C, D, z, delta_bias = inputs
    flip = _flip_l
    return fn(flip(u), flip(delta), A, flip(B), flip(C), D, flip(z), delta_bias, delta_softplus).flip(-1)


def _empty_output(u: Tensor, z: Tensor | None, impl: str, reverse: bool = False) -> Tensor:
    """A y (B, E, L) with unset values, laid out as the backend `impl` lays it out: what the fake kernel
    allocates, and the whole answer to an empty problem."""
    batch, dim, length = u.shape
    if impl == "cpu_cpp" and output_is_lanes(u, z, reverse):
        return u.new_empty(batch, length, dim).transpose(1, 2)
    return u.new_empty(batch, dim, length)


@selective_scan_op.register_fake
def _selective_scan_fake(u, delta, A, B, C, D, z, delta_bias, delta_softplus, impl, reverse=False, addend=None,
                         out_scale=1.0):
    # (B, E, L): the only tensor a fused scan allocates, in the layout the real kernel returns.
    return _empty_output(u, z, impl, reverse)


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
    reverse: bool = False,
    out_scale: float = 1.0,
) -> list[Tensor]:
    """[du, ddelta, dA, dB, dC, dD, dz, ddelta_bias]; an absent input's gradient is an empty tensor."""
    grads = selective_scan_cpu_backward(dout, u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse,
                                        out_scale)
    return [u.new_empty(0) if g is None else g for g in grads]


@selective_scan_cpu_backward_op.register_fake
def _selective_scan_cpu_backward_fake(dout, u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse=False,
                                      out_scale=1.0):
    # Gradients are allocated like their inputs (du, ddelta, dz keep the input's layout).
    return [u.new_empty(0) if x is None else torch.empty_like(x) for x in (u, delta, A, B, C, D, z, delta_bias)]


def _setup_context(ctx, inputs, output):
    u, delta, A, B, C, D, z, delta_bias, delta_softplus, impl, reverse, addend, out_scale = inputs
    ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias)
    ctx.delta_softplus = delta_softplus
    ctx.impl = impl
    ctx.reverse = reverse
    ctx.out_scale = out_scale


def _backward(ctx, dout):
    saved = ctx.saved_tensors
    needs = ctx.needs_input_grad[:8]
    d_addend = None
    # Trailing arguments left at their defaults are not part of the call (nor of needs_input_grad).
    n_inputs = len(ctx.needs_input_grad)
    # d loss / d (the scan's own y): out = (addend + y) * out_scale. The C++ kernel scales inside.
    dy = dout * ctx.out_scale if ctx.out_scale != 1.0 else dout
    if n_inputs > 11 and ctx.needs_input_grad[11]:
        d_addend = dy
    if dout.numel() == 0:
        # An empty y depends on nothing: every gradient is zero (A's, D's and delta_bias's too).
        grads = [torch.zeros_like(x) if x is not None and need else None for x, need in zip(saved, needs)]
    elif ctx.impl == "cpu_cpp":
        grads = _asked_for(selective_scan_cpu_backward_op(dout, *saved, ctx.delta_softplus, ctx.reverse,
                                                          ctx.out_scale), saved, needs)
    elif ctx.impl in BACKWARD_KERNELS and saved[0].dtype != torch.float64:
        grads = _asked_for(_kernel_grads(BACKWARD_KERNELS[ctx.impl], dy, saved, ctx.delta_softplus, ctx.reverse),
                           saved, needs)
    else:
        twin = DIFFERENTIABLE_TWIN.get(ctx.impl, ctx.impl)
        grads = _recompute_grads(BACKENDS[twin], dy, saved, needs, ctx.delta_softplus, ctx.reverse)
    return (*grads, None, None, None, d_addend, None)[:n_inputs]


def _asked_for(grads: Sequence[Tensor], saved: Sequence[Tensor | None], needs: Sequence[bool]) -> list:
    """A kernel's eight gradients, None where the input was not given or its gradient not asked for."""
    return [g if x is not None and need else None for g, x, need in zip(grads, saved, needs)]


def _kernel_grads(kernel, dout: Tensor, saved: Sequence[Tensor | None], delta_softplus: bool, reverse: bool):
    """A backend's own backward kernel; a reverse scan's as flip(kernel(flipped sequences))."""
    if not reverse:
        return kernel(dout, *saved, delta_softplus)
    u, delta, A, B, C, D, z, delta_bias = saved
    flip = _flip_l
    du, ddelta, dA, dB, dC, dD, dz, dbias = kernel(flip(dout), flip(u), flip(delta), A, flip(B), flip(C), D, flip(z),
                                                   delta_bias, delta_softplus)
    return [flip(du), flip(ddelta), dA, flip(dB), flip(dC), dD, flip(dz), dbias]


def _recompute_grads(fn, dout: Tensor, saved: Sequence[Tensor | None], needs: Sequence[bool], delta_softplus: bool,
                     reverse: bool):
    """Gradients of a differentiable backend: rerun its forward under autograd, differentiate it."""
    with torch.enable_grad():
        leaves = [None if x is None else x.detach().requires_grad_(need) for x, need in zip(saved, needs)]
        wanted = [x for x in leaves if x is not None and x.requires_grad]
        if not wanted:
            return [None] * len(saved)
        y = _run_backend(fn, leaves, delta_softplus, reverse)
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
