"""What every benchmarkable model in ssamba-bench is: the shared contract and the shared pieces.

A model takes the normalised spectrogram `(B, T, 128)` of the shared tokenizer, embeds it with the
shared 16x16 patch convolution (SSAST's and SSAMBA's `patch_embed.proj`), runs its own sequence
mixer, and returns class logits `(B, num_classes)` (or the pooled features `(B, D)` when
`num_classes=0`). The harness relies only on what `AudioModel` declares:

- `forward(x)` -> `(B, num_classes)` or `(B, D)`; `forward_features(x)` -> `(B, prefix + N, D)`, where
  `prefix` = `num_prefix_tokens` counts the non-patch tokens (cls, dist) wherever they sit in the
  sequence (in front for SSAST and SSAMBA, in the middle for AuM); `patch_tokens(features)` returns
  the N patch tokens in grid order, whatever the layout;
- `n_tokens` (patch tokens of the built input length), `input_frames`, `grid` (a PatchGrid);
- `family`, `size`, and `attn_impl` / `scan_impl` (None where the model has no such choice), which
  every result row records;
- the classification head is the submodule `head`, so "backbone parameters" means all others.

`models.contract.check_model_contract` checks these on a built instance (for models registered from
outside the repository, whose class need not derive from AudioModel).
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from models.errors import UserInputError
from models.scan import SCAN_IMPLS, resolve_scan_impl
from models.tokenizer import PatchGrid, check_model_input


def configure(base_config, overrides: dict):
    """`base_config` (a frozen dataclass of a size) with `overrides` applied; unknown keys are an error."""
    valid = {f.name for f in dataclasses.fields(base_config)}
    unknown = sorted(set(overrides) - valid)
    if unknown:
        raise UserInputError(
            f"unknown option(s) {', '.join(unknown)} for {type(base_config).__name__}; valid: {', '.join(sorted(valid))}"
        )
    return dataclasses.replace(base_config, **overrides)


def build_sized(model_cls, size: str, base_config, overrides: dict):
    """Build `model_cls` at a named size; the instance keeps its resolved config as `.config`."""
    config = configure(base_config, overrides)
    model = model_cls(size=size, **dataclasses.asdict(config))
    model.config = config
    return model


class PatchEmbed(nn.Module):
    """`Conv2d(1, D, 16x16, stride=(fstride, tstride))` on `(B, 1, F, T)`, flattened frequency-major."""

    def __init__(self, embed_dim: int, grid: PatchGrid):
        super().__init__()
        self.proj = nn.Conv2d(1, embed_dim, kernel_size=grid.patch, stride=(grid.fstride, grid.tstride))

    def forward(self, spec: torch.Tensor) -> torch.Tensor:
        x = spec.transpose(1, 2).unsqueeze(1)  # (B, T, F) -> (B, 1, F, T): frequency on height
        x = self.proj(x)  # (B, D, f_dim, t_dim)
        return x.flatten(2).transpose(1, 2)  # (B, f_dim * t_dim, D), index = f * t_dim + t


class ClassificationHead(nn.Sequential):
    """The authors' fine-tuning head: LayerNorm(D) -> Linear(D, n_classes)."""

    def __init__(self, embed_dim: int, num_classes: int, eps: float = 1e-5):
        super().__init__(nn.LayerNorm(embed_dim, eps=eps), nn.Linear(embed_dim, num_classes))


class AudioModel(nn.Module):
    """Base of every registered model: input checking, token bookkeeping, pooling and the head.

    Subclasses set `family`, build their layers, and implement `encode` (unchecked input to hidden states). Pooling is the
    mean over patch tokens (prefix tokens excluded), as SSAST's and SSAMBA's fine-tuning does;
    a model that pools otherwise overrides `pool`, and one whose non-patch tokens are not in front
    overrides `patch_tokens`.
    """

    family: str = "model"
    attn_impl: str | None = None
    scan_impl: str | None = None

    def __init__(self, *, size: str, embed_dim: int, input_frames: int, grid: PatchGrid,
                 num_prefix_tokens: int, num_classes: int):
        super().__init__()
        self.size = size
        self.embed_dim = embed_dim
        self.input_frames = input_frames
        self.grid = grid
        self.n_tokens = grid.n_tokens(input_frames)  # raises a clear error below one patch
        self.num_prefix_tokens = num_prefix_tokens
        self.num_classes = num_classes
        self.patch_embed = PatchEmbed(embed_dim, grid)

    def init_head(self) -> None:
        """Create `head` (call last in the subclass's __init__, so it sits after the backbone)."""
        self.head = ClassificationHead(self.embed_dim, self.num_classes) if self.num_classes else nn.Identity()

    def check_input(self, x: torch.Tensor) -> None:
        """One clear UserInputError for input this model cannot take: shape, dtype, device."""
        check_model_input(x, self.grid.n_mels, self.input_frames)
        # The patch convolution needs x on its weight's device and, outside autocast (which casts
        # both), in its dtype; say so here rather than let the convolution fail in its own words.
        weight = self.patch_embed.proj.weight
        if x.device != weight.device:
            raise UserInputError(
                f"model input is on {x.device} but the model is on {weight.device}; move one of them "
                f"(x.to({str(weight.device)!r}) or model.to({str(x.device)!r}))"
            )
        if x.dtype != weight.dtype and not _autocast_enabled(x.device.type):
            raise UserInputError(
                f"model input is {x.dtype} but the model's parameters are {weight.dtype}; convert one of them "
                f"(x.to({weight.dtype}) or model.to({x.dtype})), or run under torch.autocast"
            )

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Checked input (B, T, F) -> final-norm hidden states (B, prefix + N, D)."""
        self.check_input(x)
        return self.encode(x)

    def encode(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def patch_tokens(self, features: torch.Tensor) -> torch.Tensor:
        """(B, prefix + N, D) hidden states -> the (B, N, D) patch tokens, in grid order."""
        return features[:, self.num_prefix_tokens:]

    def pool(self, features: torch.Tensor) -> torch.Tensor:
        return self.patch_tokens(features).mean(dim=1)  # (B, D)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.forward_features(x)))

    def num_parameters(self, include_head: bool = False) -> int:
        return sum(p.numel() for name, p in self.named_parameters() if include_head or not name.startswith("head."))

    def describe(self) -> dict:
        """The facts a result row records about this model instance."""
        return {
            "family": self.family,
            "size": self.size,
            "params": self.num_parameters(include_head=True),
            "n_tokens": self.n_tokens,
            "frames": self.input_frames,
            "attn_impl": self.attn_impl,
            "scan_impl": self.scan_impl,
        }


def _autocast_enabled(device_type: str) -> bool:
    try:
        return torch.is_autocast_enabled(device_type)
    except RuntimeError:  # a device type without autocast (meta)
        return False


def check_scan_impl(scan_impl: str) -> None:
    if scan_impl not in SCAN_IMPLS:
        raise UserInputError(f"unknown scan_impl {scan_impl!r}; choose one of {', '.join(SCAN_IMPLS)}")


class ScanImplMixin:
    """`scan_impl` for a model whose mixers call `models.scan.selective_scan` (SSAMBA, AuM).

    The model keeps the backend it was asked for (`requested_scan_impl`, e.g. "auto") and reports
    the concrete one a forward on its device would use now (`scan_impl`), which result rows record.
    Every submodule with its own `scan_impl` attribute (the mixers) is switched by `set_scan_impl`.
    Put it before AudioModel in the bases, so its property replaces AudioModel's `scan_impl = None`.
    """

    requested_scan_impl: str = "auto"

    @property
    def scan_impl(self) -> str:
        """The concrete scan backend a forward on this model's device would use right now."""
        device = self.patch_embed.proj.weight.device
        return resolve_scan_impl(self.requested_scan_impl, device, torch.is_grad_enabled() and self.training)

    def set_scan_impl(self, scan_impl: str) -> None:
        check_scan_impl(scan_impl)
        self.requested_scan_impl = scan_impl
        for module in self.modules():
            if module is not self and "scan_impl" in vars(module):
                module.scan_impl = scan_impl
