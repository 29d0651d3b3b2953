"""SSAST: the self-supervised Audio Spectrogram Transformer (Gong et al., AAAI 2022), as its authors
built it (YuanGongND/ssast, src/models/ast_models.py, on timm 0.4.5's DeiT-distilled ViT).

Pre-LN ViT blocks from timm (LayerNorm eps 1e-6, qkv with bias, MLP ratio 4, GELU, no dropout), a
cls and a dist token in front of the patch tokens, a learned positional embedding over all of them,
a final LayerNorm, and for classification the mean of the patch tokens (cls/dist excluded) through
LayerNorm -> Linear.

`attn_impl` chooses, per instance, how attention is computed:
  - "eager": softmax((q @ k^T) * scale) @ v, materialising the B*H*N^2 score and probability
    buffers: what the authors ran, and why SSAST-tiny stops near 22k tokens on a 48 GB card;
  - "sdpa": torch's fused scaled_dot_product_attention (flash / memory-efficient kernels, memory
    linear in N). Same math; the outputs agree to ~1e-6 in fp32.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial

import torch
from timm.layers import trunc_normal_
from timm.models.vision_transformer import Block
from torch import nn

from models.base import AudioModel, build_sized
from models.errors import UserInputError
from models.registry import register_model
from models.tokenizer import PatchGrid

ATTN_IMPLS = ("eager", "sdpa")


@dataclass(frozen=True)
class SSASTConfig:
    embed_dim: int = field(default=192, metadata={"help": "token width D"})
    depth: int = field(default=12, metadata={"help": "transformer blocks"})
    num_heads: int = field(default=3, metadata={"help": "attention heads (head dim 64 in the released sizes)"})
    mlp_ratio: float = field(default=4.0, metadata={"help": "MLP hidden width / D"})
    input_frames: int = field(default=1024, metadata={"help": "fbank frames T the model is built for"})
    fstride: int = field(default=16, metadata={"help": "patch stride along frequency (16 pretrain, 10 fine-tune)"})
    tstride: int = field(default=16, metadata={"help": "patch stride along time"})
    n_mels: int = field(default=128, metadata={"help": "mel bins F"})
    num_classes: int = field(default=527, metadata={"help": "classifier outputs; 0 returns pooled features"})
    attn_impl: str = field(default="eager", metadata={"help": "'eager' (explicit softmax(QK^T), the authors') or 'sdpa' (fused)"})


def init_vit_weights(module: nn.Module) -> None:
    """timm 0.4.5 VisionTransformer._init_weights, as the authors' DeiT encoder was initialised."""
    if isinstance(module, nn.Linear):
        trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


class SSAST(AudioModel):
    """SSAST encoder + the authors' mean-pooled classification head."""

    family = "ssast"

    def __init__(self, *, size: str = "custom", embed_dim: int, depth: int, num_heads: int, mlp_ratio: float = 4.0,
                 input_frames: int = 1024, fstride: int = 16, tstride: int = 16, n_mels: int = 128,
                 num_classes: int = 527, attn_impl: str = "eager"):
        if attn_impl not in ATTN_IMPLS:
            raise UserInputError(f"unknown attn_impl {attn_impl!r}; choose one of {', '.join(ATTN_IMPLS)}")
        grid = PatchGrid(n_mels=n_mels, fstride=fstride, tstride=tstride)
        super().__init__(size=size, embed_dim=embed_dim, input_frames=input_frames, grid=grid,
                         num_prefix_tokens=2, num_classes=num_classes)
        self.num_heads = num_heads
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.dist_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.n_tokens + 2, embed_dim))
        norm_layer = partial(nn.LayerNorm, eps=1e-6)
        self.blocks = nn.ModuleList(
            Block(embed_dim, num_heads, mlp_ratio=mlp_ratio, qkv_bias=True, norm_layer=norm_layer)
            for _ in range(depth)
        )
        self.norm = norm_layer(embed_dim)
        # The authors built the encoder with timm's VisionTransformer (DeiT), whose constructor applies
        # `_init_weights`: trunc-normal(0.02) Linear weights, zero biases, unit LayerNorms. Bare timm
        # Blocks keep PyTorch's default Linear init instead, so apply it here (the patch conv keeps its
        # default, as in timm 0.4.5); from-scratch training and pretraining depend on it.
        for module in (*self.blocks.modules(), self.norm):
            init_vit_weights(module)
        self.set_attn_impl(attn_impl)
        self.init_head()
        for p in (self.cls_token, self.dist_token, self.pos_embed):
            trunc_normal_(p, std=0.02)

    def set_attn_impl(self, attn_impl: str) -> None:
        """Switch this instance's attention kernel (timm's per-module `fused_attn` flag, not the global one)."""
        if attn_impl not in ATTN_IMPLS:
            raise UserInputError(f"unknown attn_impl {attn_impl!r}; choose one of {', '.join(ATTN_IMPLS)}")
        self.attn_impl = attn_impl
        for block in self.blocks:
            block.attn.fused_attn = attn_impl == "sdpa"

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)  # (B, N, D)
        prefix = torch.cat((self.cls_token, self.dist_token), dim=1).expand(x.shape[0], -1, -1)
        x = torch.cat((prefix, x), dim=1) + self.pos_embed  # (B, N + 2, D)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)


SIZES = {
    "tiny": SSASTConfig(embed_dim=192, depth=12, num_heads=3),
    "small": SSASTConfig(embed_dim=384, depth=12, num_heads=6),
    "base": SSASTConfig(embed_dim=768, depth=12, num_heads=12),
    # A fast model for tests only: 2 blocks of width 32.
    "test": SSASTConfig(embed_dim=32, depth=2, num_heads=2),
}


def _build(size: str, overrides: dict) -> SSAST:
    return build_sized(SSAST, size, SIZES[size], overrides)


@register_model
def ssast_tiny(**overrides) -> SSAST:
    return _build("tiny", overrides)


@register_model
def ssast_small(**overrides) -> SSAST:
    return _build("small", overrides)


@register_model
def ssast_base(**overrides) -> SSAST:
    return _build("base", overrides)


@register_model
def test_ssast(**overrides) -> SSAST:
    return _build("test", overrides)
