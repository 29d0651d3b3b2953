"""Causal depthwise conv1d + bias + SiLU as one custom operator: the input side of a Mamba direction.

`causal_conv1d_silu(x, weight, bias, reverse)` is what mamba-ssm's fast path gets from
`causal_conv1d_fn(x, weight, bias, activation="silu")` (Dao-AILab/causal-conv1d), and what the
authors' slow path computes as `silu(conv1d(x)[..., :L])` with Conv1d(E, E, K, groups=E, padding=K-1).
`reverse=True` is the anti-causal conv of the backward direction, flip(conv(flip(x))), computed in
the tensor's own time order: the bidirectional mixers' fused CPU path never materialises a flipped x.

Backends: on CPU, when the C++ extension builds (models/scan/cpu.py), the fused kernel of
csrc/causal_conv1d_cpu.cpp (forward and backward; output laid out (B, L, E)-contiguous so x_proj
reads it without a copy); elsewhere `causal_conv1d_silu_reference`, the authors' conv1d, pad and slice,
which is also the ground truth of the tests. As a `torch.library.custom_op` it has a fake kernel
(meta/fake tensors see one output, laid out as the real kernel lays it out), a FLOP formula
(2 * B * E * L * K, the taps' multiply-adds) and autograd.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.flop_counter import register_flop_formula

from models.scan.cpu import as_lanes, cpu_ext_available, cpu_ops


def causal_conv1d_silu_reference(x: Tensor, weight: Tensor, bias: Tensor | None, reverse: bool = False) -> Tensor:
    """The authors' op sequence: silu(conv1d(x, padding K - 1)[..., :L]); reverse flips x and the result."""
    dim, width = weight.shape
    if reverse:
        x = x.flip(-1)
    # Under autocast x arrives in the lower precision while the parameters stay float32; the authors'
    # nn.Conv1d would have been cast by autocast, which does not reach inside a custom op: cast here.
    weight = weight.to(x.dtype)
    bias = None if bias is None else bias.to(x.dtype)
    y = F.silu(F.conv1d(x, weight.unsqueeze(1), bias, padding=width - 1, groups=dim)[..., : x.shape[-1]])
    return y.flip(-1) if reverse else y


# The widest conv the C++ kernel takes (kMaxTaps in csrc/causal_conv1d_cpu.cpp: its backward keeps one
# weight-gradient sum per tap in registers); Mamba's d_conv is 4. Wider ones take the reference.
MAX_FUSED_TAPS = 16


def _fused(x: Tensor, weight: Tensor) -> bool:
    """Whether the C++ kernel computes this call (CPU, float32/float64, at most MAX_FUSED_TAPS taps,
    the extension built)."""
    return (x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64)
            and weight.shape[-1] <= MAX_FUSED_TAPS and cpu_ext_available())


@torch.library.custom_op("ssamba_bench::causal_conv1d_silu", mutates_args=())
def causal_conv1d_silu(x: Tensor, weight: Tensor, bias: Tensor | None, reverse: bool = False) -> Tensor:
    """x (B, E, L), weight (E, K), bias (E,) or None -> silu(causal conv) (B, E, L)."""
    if x.numel() == 0:
        return _empty_output(x)
    if _fused(x, weight):
        return cpu_ops().conv_fwd(as_lanes(x), weight.contiguous(), _contiguous(bias), reverse, True)
    return causal_conv1d_silu_reference(x, weight, bias, reverse)


def _contiguous(t: Tensor | None) -> Tensor | None:
    return None if t is None else t.contiguous()


def _empty_output(x: Tensor) -> Tensor:
    """An unset output laid out as the kernel writes it: (B, L, E)-contiguous, viewed as (B, E, L)."""
    if x.device.type in ("cpu", "meta"):
        return x.new_empty(x.shape[0], x.shape[2], x.shape[1]).transpose(1, 2)
    return x.new_empty(x.shape)


@causal_conv1d_silu.register_fake
def _causal_conv1d_silu_fake(x, weight, bias, reverse=False):
    return _empty_output(x)


@torch.library.custom_op("ssamba_bench::causal_conv1d_silu_backward", mutates_args=())
def causal_conv1d_silu_backward(dy: Tensor, x: Tensor, weight: Tensor, bias: Tensor | None,
                                reverse: bool = False) -> list[Tensor]:
    """[dx, dweight, dbias] of the fused kernel (dbias empty without a bias)."""
    dx, dweight, dbias = cpu_ops().conv_bwd(as_lanes(dy), as_lanes(x), weight.contiguous(), _contiguous(bias),
                                            reverse, True)
    return [dx, dweight, dbias]


@causal_conv1d_silu_backward.register_fake
def _causal_conv1d_silu_backward_fake(dy, x, weight, bias, reverse=False):
    return [_empty_output(x), torch.empty_like(weight), x.new_empty(0) if bias is None else torch.empty_like(bias)]


def _setup_context(ctx, inputs, output):
    x, weight, bias, reverse = inputs
    ctx.save_for_backward(x, weight, bias)
    ctx.reverse = reverse


def _backward(ctx, dy):
    x, weight, bias = ctx.saved_tensors
    needs = ctx.needs_input_grad[:3]
    if x.numel() == 0:
        grads = [torch.zeros_like(t) if t is not None and need else None for t, need in zip((x, weight, bias), needs)]
    elif _fused(x, weight):
        grads = causal_conv1d_silu_backward(dy, x, weight, bias, ctx.reverse)
    else:  # differentiate the reference: rerun it under autograd
        with torch.enable_grad():
            leaves = [None if t is None else t.detach().requires_grad_(True) for t in (x, weight, bias)]
            y = causal_conv1d_silu_reference(*leaves, ctx.reverse)
            wanted = [t for t in leaves if t is not None]
            found = iter(torch.autograd.grad(y, wanted, dy))
            grads = [None if t is None else next(found) for t in leaves]
    grads = [g if t is not None and need else None for g, t, need in zip(grads, (x, weight, bias), needs)]
    return (*grads, None)


causal_conv1d_silu.register_autograd(_backward, setup_context=_setup_context)


@register_flop_formula(torch.ops.ssamba_bench.causal_conv1d_silu)
def _causal_conv1d_flop(x_shape, weight_shape, *args, out_shape=None, **kwargs) -> int:
    batch, dim, length = x_shape
    return 2 * batch * dim * length * weight_shape[-1]


@register_flop_formula(torch.ops.ssamba_bench.causal_conv1d_silu_backward)
def _causal_conv1d_backward_flop(dy_shape, x_shape, weight_shape, *args, out_shape=None, **kwargs) -> int:
    batch, dim, length = x_shape
    return 2 * 2 * batch * dim * length * weight_shape[-1]  # dx and dweight, each as many as the forward
