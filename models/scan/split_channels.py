"""in_proj's output split into the Mamba mixer's x and z, with a backward that writes d(xz) in
in_proj's own (B, L, 2E) layout.

The authors' mixer takes `in_proj(h).transpose(1, 2).chunk(2, dim=1)`: x and z are (B, E, L) views
of one (B, L, 2E) tensor. Under autograd the chunk's backward concatenates dx and dz into a
(B, 2E, L)-contiguous tensor, and the transpose's backward then copies it again into the (B, L, 2E)
layout in_proj's weight gradient needs: two transposing passes over the largest activation of a
block (on this VM ~8 ms a layer at batch 32, 108 tokens; 7% of an SSAMBA-tiny fine-tuning step).
On the fused CPU path dx and dz come from the C++ kernels already laid out (B, L, E), so writing
them into the two halves of one (B, L, 2E) gradient is a plain copy. Values and gradients are
exactly the authors' (the same numbers moved, nothing added up differently); the op-by-op path
(`fused_mixer=False`) keeps chunk() as they wrote it.
"""

from __future__ import annotations

import torch
from torch import Tensor


class _SplitChannels(torch.autograd.Function):
    @staticmethod
    def forward(ctx, xz: Tensor):
        half = xz.shape[-1] // 2
        return xz[..., :half].transpose(1, 2), xz[..., half:].transpose(1, 2)

    @staticmethod
    def backward(ctx, dx: Tensor | None, dz: Tensor | None):
        like = dx if dx is not None else dz
        batch, half, length = like.shape
        dxz = like.new_empty(batch, length, 2 * half)
        for grad, part in ((dx, dxz[..., :half]), (dz, dxz[..., half:])):
            if grad is None:
                part.zero_()
            else:
                part.copy_(grad.transpose(1, 2))
        return dxz


def split_channels(xz: Tensor) -> tuple[Tensor, Tensor]:
    """(B, L, 2E) -> x, z: (B, E, L) views of its first and second halves of channels."""
    return _SplitChannels.apply(xz)
