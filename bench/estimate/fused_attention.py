"""Fused attention as one opaque operator, so fake/meta-tensor runs see what a fused kernel allocates.

On the meta device `F.scaled_dot_product_attention` falls back to its math decomposition, which
materialises the B*H*N^2 score matrix, the very thing the flash and memory-efficient kernels avoid.
The estimator therefore routes SDPA through this custom op while it predicts: its fake kernel
allocates what the fused kernels return (the output and a float32 log-sum-exp per query, as
`_scaled_dot_product_efficient_attention` on CUDA and the flash kernel on CPU do), and its FLOP
formula is torch's own SDPA count (4 * B * H * N^2 * d, the same as eager attention's two matmuls).

For training predictions it has a backward too, as the fused kernels have: autograd saves q, k, v,
the output and the log-sum-exp (what flash attention saves, never the N^2 scores), and the backward
op allocates dq, dk, dv (its FLOPs: torch's SDPA backward count).
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.flop_counter import register_flop_formula, sdpa_backward_flop_count, sdpa_flop_count

_sdpa = F.scaled_dot_product_attention


@torch.library.custom_op("ssamba_bench::fused_attention", mutates_args=())
def fused_attention(q: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    """(out (B, H, N, Dv), logsumexp (B, H, N)); q, k, v (B, H, N, D)."""
    scores = (q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5
    return _sdpa(q, k, v), torch.logsumexp(scores.float(), dim=-1)


@fused_attention.register_fake
def _fused_attention_fake(q, k, v):
    return q.new_empty(*q.shape[:-1], v.shape[-1]), q.new_empty(q.shape[:-1], dtype=torch.float32)


@register_flop_formula(torch.ops.ssamba_bench.fused_attention)
def _fused_attention_flop(q_shape, k_shape, v_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(q_shape, k_shape, v_shape)


@torch.library.custom_op("ssamba_bench::fused_attention_backward", mutates_args=())
def fused_attention_backward(dout: Tensor, q: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(dq, dk, dv) of softmax(q k^T / sqrt(d)) v for the output gradient `dout`, written out (autograd
    does not run inside a custom op): the reference for the fake kernel, used only by tests."""
    scale = q.shape[-1] ** -0.5
    probs = torch.softmax((q @ k.transpose(-2, -1)) * scale, dim=-1)
    dv = probs.transpose(-2, -1) @ dout
    dprobs = dout @ v.transpose(-2, -1)
    dscores = probs * (dprobs - (dprobs * probs).sum(-1, keepdim=True)) * scale
    return dscores @ k, dscores.transpose(-2, -1) @ q, dv


@fused_attention_backward.register_fake
def _fused_attention_backward_fake(dout, q, k, v):
    return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)


@register_flop_formula(torch.ops.ssamba_bench.fused_attention_backward)
def _fused_attention_backward_flop(dout_shape, q_shape, k_shape, v_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_backward_flop_count(dout_shape, q_shape, k_shape, v_shape)


def _setup_context(ctx, inputs, output):
    q, k, v = inputs
    out, logsumexp = output
    ctx.save_for_backward(q, k, v, out, logsumexp)  # what a flash kernel keeps for its backward


def _backward(ctx, dout, dlogsumexp):
    q, k, v, _, _ = ctx.saved_tensors
    return fused_attention_backward(dout, q, k, v)


fused_attention.register_autograd(_backward, setup_context=_setup_context)


def _sdpa_as_fused_op(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, **kwargs):
    if attn_mask is not None or is_causal or dropout_p or scale is not None or kwargs:
        return _sdpa(query, key, value, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal,
                     scale=scale, **kwargs)
    return fused_attention(query, key, value)[0]


@contextlib.contextmanager
def sdpa_as_fused_op():
    """Within the block, F.scaled_dot_product_attention is the opaque fused op (for prediction only)."""
    F.scaled_dot_product_attention = _sdpa_as_fused_op
    try:
        yield
    finally:
        F.scaled_dot_product_attention = _sdpa
