"""Test helper: state dicts in the authors' checkpoint layout, with random values, written from
docs/models.md's key list ("The authors' checkpoints") and the model specs, not from the suite's models,
so that loading them checks the suite's names and shapes against the documented ones.

`original_state_dict("ssast", "tiny")` is what `SSAST-Tiny-Patch-400.pth` holds (key names, shapes,
dtypes, order as the DataParallel-wrapped pretraining model's state_dict lists them);
`kind="finetuned"` is what the authors' fine-tuning saves (`v.*` with pos_embed on the fine-tuning
grid, `mlp_head.*`, no p_input_* and no pretraining heads). `random_model` fills a registered model
with random values fast (meta build, no init), for round trips of the large sizes.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import torch

from models import create_model

# (embed_dim, blocks): docs/models.md's sizes, plus the registered test sizes (test_ssast, test_ssamba).
SSAST_SIZES = {"tiny": (192, 12), "small": (384, 12), "base": (768, 12), "test": (32, 2)}
SSAMBA_SIZES = {"tiny": (192, 24), "small": (384, 24), "base": (768, 24), "test": (32, 4)}
PATCH = 16


def _grid(n_mels: int, frames: int, fstride: int, tstride: int) -> tuple[int, int]:
    # Written out here on purpose (docs/models.md's formula), independent of models.tokenizer.
    return (n_mels - PATCH) // fstride + 1, (frames - PATCH) // tstride + 1


def original_state_dict(family: str, size: str = "tiny", *, kind: str = "pretrained", input_fdim: int = 128,
                        input_tdim: int = 1024, fstride: int = 10, tstride: int = 10, frames: int = 1024,
                        num_classes: int = 50, seed: int = 0) -> OrderedDict:
    """An authors'-layout state dict with random values.

    pretrained: pos_embed on the `input_fdim x input_tdim` grid at stride 16, p_input_* recorded.
    finetuned: pos_embed on the `frames` grid at (`fstride`, `tstride`), an mlp_head of `num_classes`.
    """
    gen = torch.Generator().manual_seed(seed)

    def rand(*shape, scale=0.02, offset=0.0):
        return torch.randn(*shape, generator=gen) * scale + offset

    ssast = family == "ssast"
    dim, depth = (SSAST_SIZES if ssast else SSAMBA_SIZES)[size]
    prefix_tokens = 2 if ssast else 1
    if kind == "pretrained":
        f, t = _grid(input_fdim, input_tdim, PATCH, PATCH)
    else:
        f, t = _grid(128, frames, fstride, tstride)

    def linear(name, out_dim, in_dim, bias=True):
        entries = [(f"{name}.weight", rand(out_dim, in_dim))]
        return entries + ([(f"{name}.bias", rand(out_dim))] if bias else [])

    def norm(name):
        return [(f"{name}.weight", rand(dim, scale=0.1, offset=1.0)), (f"{name}.bias", rand(dim))]

    sd = []
    if kind == "pretrained":  # the pretraining model's own parameters come first in its state_dict
        sd += [("p_input_fdim", torch.tensor(input_fdim)), ("p_input_tdim", torch.tensor(input_tdim)),
               ("mask_embed", rand(1, 1, dim))]
    v = [("cls_token", rand(1, 1, dim)), ("pos_embed", rand(1, f * t + prefix_tokens, dim))]
    if ssast:
        v += [("dist_token", rand(1, 1, dim))]
    v += [("patch_embed.proj.weight", rand(dim, 1, PATCH, PATCH)), ("patch_embed.proj.bias", rand(dim))]
    if ssast:  # timm 0.4.5 DeiT-distilled blocks
        for i in range(depth):
            b = f"blocks.{i}"
            v += norm(f"{b}.norm1") + linear(f"{b}.attn.qkv", 3 * dim, dim) + linear(f"{b}.attn.proj", dim, dim)
            v += norm(f"{b}.norm2") + linear(f"{b}.mlp.fc1", 4 * dim, dim) + linear(f"{b}.mlp.fc2", dim, 4 * dim)
        v += norm("norm") + linear("head", 1000, dim) + linear("head_dist", 1000, dim)
    else:  # Vim VisionMamba with v2 bidirectional mixers
        inner, state, rank = 2 * dim, 16, math.ceil(dim / 16)
        v += linear("head", 1000, dim)
        a_log = torch.log(torch.arange(1, state + 1, dtype=torch.float32)).repeat(inner, 1)
        for i in range(depth):
            m = f"layers.{i}.mixer"
            v += [(f"{m}.A_log", a_log + rand(inner, state, scale=0.1)), (f"{m}.D", rand(inner, scale=0.1, offset=1.0)),
                  (f"{m}.A_b_log", a_log + rand(inner, state, scale=0.1)),
                  (f"{m}.D_b", rand(inner, scale=0.1, offset=1.0))]
            v += linear(f"{m}.in_proj", 2 * inner, dim, bias=False)
            v += [(f"{m}.conv1d.weight", rand(inner, 1, 4, scale=0.3)), (f"{m}.conv1d.bias", rand(inner))]
            v += linear(f"{m}.x_proj", rank + 2 * state, inner, bias=False) + linear(f"{m}.dt_proj", inner, rank)
            v += [(f"{m}.conv1d_b.weight", rand(inner, 1, 4, scale=0.3)), (f"{m}.conv1d_b.bias", rand(inner))]
            v += linear(f"{m}.x_proj_b", rank + 2 * state, inner, bias=False) + linear(f"{m}.dt_proj_b", inner, rank)
            v += linear(f"{m}.out_proj", dim, inner, bias=False)
            v += norm(f"layers.{i}.norm")
        v += norm("norm_f")
    sd += [(f"v.{k}", x) for k, x in v]
    if kind == "pretrained":
        for head in ("cpredlayer", "gpredlayer"):
            sd += linear(f"{head}.0", dim, dim) + linear(f"{head}.2", 256, dim)
    else:
        sd += [("mlp_head.0.weight", rand(dim, scale=0.1, offset=1.0)), ("mlp_head.0.bias", rand(dim))]
        sd += linear("mlp_head.1", num_classes, dim)
    return OrderedDict((f"module.{k}", x) for k, x in sd)


def random_model(name: str, seed: int = 0, **overrides):
    """A registered model with random weights, built without the cost of its initialisation.

    Values are tiled from a 1M-sample pool at a different offset per tensor: random enough for
    round-trip tests, and cheap for the 97M-parameter base models."""
    with torch.device("meta"):
        model = create_model(name, **overrides)
    model.to_empty(device="cpu")
    pool = torch.randn(1 << 20, generator=torch.Generator().manual_seed(seed)) * 0.05
    with torch.no_grad():
        for i, (pname, p) in enumerate(model.named_parameters()):
            n, start = p.numel(), (i * 7919) % pool.numel()
            values = pool.roll(-start).repeat(n // pool.numel() + 1)[:n].view(p.shape)
            p.copy_(values + (1.0 if pname.endswith("norm.weight") else 0.0))
    return model.eval()
