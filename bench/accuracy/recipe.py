"""The training recipes of the accuracy runs: masked-patch pretraining and supervised fine-tuning.

Both follow the authors' scripts (YuanGongND/ssast src/run.py + traintest*.py, reused unchanged by
SiavashShams/ssamba), scaled down to a CPU budget; every departure is named in a field's help:

- optimiser: Adam, betas (0.95, 0.999), weight decay 5e-7 (the authors' `torch.optim.Adam` call);
- pretraining: lr 1e-4, linear warm-up (the authors' 1000 steps, scaled to 10% of the short budget),
  then constant; joint loss nce + 10 * mse; `mask_patch` scaled from the released 400 of 512 patches
  to the 1 s clips (`mask_patch_for`);
- fine-tuning: patch stride 10, the mean-pooled LayerNorm -> Linear head (AuM keeps its own cls-token
  Linear head, as its authors built it), cross-entropy, SpecAugment frequency/time masking per clip
  (the authors' Speech Commands values: freqm 48, timem 48 of 128 frames, here scaled to 98 frames),
  no mixup (the authors used mixup 0.6 on Speech Commands; at a few hundred steps it only slows
  fitting), linear warm-up (10% of the steps) then cosine decay; the LAST step's weights are
  evaluated (no best-val selection: the budget is too short for periodic validation to pay off,
  and val stays an honest second held-out split).
The same recipe, seeds and budget are used for every model; only the model differs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field

import torch

ORIGINAL_MASK_PATCH, ORIGINAL_PATCHES = 400, 512  # the released SSAST / SSAMBA "Patch-400" models
CLIP_FRAMES = 98  # 1 s at 16 kHz: the kaldi fbank of 16000 samples


def mask_patch_for(n_patches: int) -> int:
    """Masked patches per clip for a pretraining grid of `n_patches`: the released models' ratio,
    round(n * 400 / 512), clamped to [1, n - 1] (patch 0 is never masked). 48 patches (98 frames at
    stride 16) -> 38."""
    return max(1, min(n_patches - 1, round(n_patches * ORIGINAL_MASK_PATCH / ORIGINAL_PATCHES)))


class _Keyed:
    """A recipe's `key()`: a short hash of all its fields (cases and checkpoints are cached by it)."""

    def key(self) -> str:
        return _hash(dataclasses.asdict(self))


@dataclass(frozen=True)
class PretrainRecipe(_Keyed):
    steps: int = field(default=200, metadata={"help": "optimiser steps (the authors: ~10^5; here a short CPU budget)"})
    batch: int = field(default=32, metadata={"help": "clips per step"})
    lr: float = field(default=1e-4, metadata={"help": "Adam learning rate (the authors' 1e-4)"})
    weight_decay: float = field(default=5e-7, metadata={"help": "Adam weight decay (the authors' 5e-7)"})
    warmup_fraction: float = field(default=0.1, metadata={
        "help": "linear warm-up as a fraction of `steps` (the authors' 1000 steps, scaled down)"})
    frames: int = field(default=CLIP_FRAMES, metadata={"help": "input frames (1 s clips: 98)"})
    stride: int = field(default=16, metadata={"help": "patch stride in pretraining (the authors': 16, no overlap)"})
    heldout_per_task: int = field(default=64, metadata={"help": "val clips per task for the start/end loss check"})
    seed: int = field(default=0, metadata={"help": "seed of init, batches and masks"})
    scan_impl: str = field(default="auto", metadata={"help": "selective-scan backend for Mamba models"})


@dataclass(frozen=True)
class FinetuneRecipe(_Keyed):
    steps: int = field(default=150, metadata={"help": "optimiser steps, the same for every model"})
    batch: int = field(default=32, metadata={"help": "clips per step"})
    lr: float = field(default=1e-3, metadata={
        "help": "peak Adam learning rate (the authors: 2.5e-4 over 30 epochs of 85k clips; a few hundred "
                "steps on 1.6k clips need more: at 2.5e-4 and 5e-4 SSAST-tiny stayed at chance for 400 steps)"})
    head_lr: float = field(default=1.0, metadata={
        "help": "lr multiplier of the classification head (SSAST's traintest.py `head_lr` option)"})
    weight_decay: float = field(default=5e-7, metadata={"help": "Adam weight decay (the authors' 5e-7)"})
    warmup_fraction: float = field(default=0.1, metadata={"help": "linear warm-up fraction, then cosine decay to 0"})
    freqm: int = field(default=24, metadata={
        "help": "SpecAugment: max masked mel bins per clip (the authors' Speech Commands value 48, halved: "
                "a few epochs underfit rather than overfit)"})
    timem: int = field(default=24, metadata={
        "help": "SpecAugment: max masked frames per clip (the authors': 48 of 128 frames; halved likewise)"})
    frames: int = field(default=CLIP_FRAMES, metadata={"help": "input frames (1 s clips: 98)"})
    stride: int = field(default=10, metadata={"help": "patch stride in fine-tuning (the authors': 10)"})
    eval_batch: int = field(default=64, metadata={"help": "clips per evaluation forward"})
    seed: int = field(default=0, metadata={"help": "seed of the head init, batches and augmentation"})
    scan_impl: str = field(default="auto", metadata={"help": "selective-scan backend for Mamba models"})


def _hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def fields_help(cls) -> list[tuple[str, object, str]]:
    return [(f.name, f.default, f.metadata.get("help", "")) for f in dataclasses.fields(cls)]


def make_optimizer(params, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """The authors' optimiser: Adam, betas (0.95, 0.999), a small L2 weight decay. `params` may be
    param groups with their own "lr"; each group's peak lr is kept as "peak_lr" for the schedule."""
    opt = torch.optim.Adam(params, lr=lr, betas=(0.95, 0.999), weight_decay=weight_decay)
    for group in opt.param_groups:
        group["peak_lr"] = group["lr"]
    return opt


def finetune_param_groups(model, lr: float, head_lr: float) -> list[dict]:
    """Backbone at `lr`, the classification head (`model.head`) at `lr * head_lr`, as SSAST's code."""
    head = {id(p) for p in model.head.parameters()}
    return [{"params": [p for p in model.parameters() if id(p) not in head], "lr": lr},
            {"params": list(model.head.parameters()), "lr": lr * head_lr}]


def lr_factor(step: int, steps: int, warmup_fraction: float, decay: bool) -> float:
    """Multiplier of the peak lr at `step` (0-based): linear warm-up, then constant or cosine to 0."""
    warmup = max(1, round(steps * warmup_fraction))
    if step < warmup:
        return (step + 1) / warmup
    if not decay:
        return 1.0
    progress = (step - warmup) / max(1, steps - warmup)
    return 0.5 * (1 + math.cos(math.pi * progress))


def spec_augment(x: torch.Tensor, freqm: int, timem: int, generator: torch.Generator) -> torch.Tensor:
    """SpecAugment as torchaudio's FrequencyMasking / TimeMasking in the authors' dataloader: per clip
    one frequency band of width U[0, freqm) and one time span of width U[0, timem), set to 0 (the
    normalised mean). x: (B, T, F)."""
    b, t, f = x.shape
    out = x.clone()
    for i in range(b):
        if freqm > 0:
            width = int(torch.randint(0, min(freqm, f), (1,), generator=generator))
            start = int(torch.randint(0, f - width + 1, (1,), generator=generator))
            out[i, :, start:start + width] = 0
        if timem > 0:
            width = int(torch.randint(0, min(timem, t), (1,), generator=generator))
            start = int(torch.randint(0, t - width + 1, (1,), generator=generator))
            out[i, start:start + width, :] = 0
    return out
