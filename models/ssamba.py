"""SSAMBA: self-supervised bidirectional-Mamba audio model (Shams et al., 2024), as its authors built it
(SiavashShams/ssamba, on hustvl/Vim's "v2" bidirectional Mamba and its models_mamba.py).

Faithful to the original, quirks included (see docs/models.md):
  - Vim "v2" mixer: in_proj/out_proj shared by both directions, a separate backward conv1d, x_proj,
    dt_proj, A_log and D; the backward direction runs on the time-flipped x and z, and the two
    directions are averaged (`if_devide_out=True`).
  - 24 blocks in 12 flipped pairs (`if_bidirectional=True`): block 2i sees (h, r), block 2i+1 sees
    (flip h, flip r), then h = h_f + flip(h_b), r = r_f + flip(r_b). The residual stream therefore
    doubles at every pair; it stays in fp32 (`residual_in_fp32`).
  - The final norm_f is applied twice.
  - One cls token at position 0; classification = mean over patch tokens -> LayerNorm -> Linear.
The selective scan goes through `models.scan.selective_scan`; the backend is chosen per instance
(`scan_impl`) and recorded.

The fused CPU path (`fused_mixer=True`, the default; taken on CPU when the scan backend is cpu_cpp)
computes the same model with fewer passes over memory: the causal conv + bias + SiLU is one C++
kernel (models/scan/causal_conv.py), and every time-flip is replaced by running the kernels
backwards in time. A block fed the flipped sequence and flipped back equals the same block with its
mixer's two directions swapped in time (`reverse=True`): per-token operations (norms, projections,
residual adds) commute with a flip, and a scan over the flipped sequence, flipped back, is the reverse
scan. Sums are taken in the same order, so the outputs agree to float32 rounding (tests/test_fused_mixer.py).
`fused_mixer=False` runs the authors' op-by-op sequence, flips included, for comparison.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from timm.layers import DropPath, trunc_normal_
from torch import nn

from models.base import AudioModel, ScanImplMixin, build_sized, check_scan_impl
from models.errors import UserInputError
from models.registry import register_model
from models.scan import resolve_scan_impl, selective_scan
from models.scan.causal_conv import causal_conv1d_silu
from models.scan.split_channels import split_channels
from models.tokenizer import PatchGrid


@dataclass(frozen=True)
class SSAMBAConfig:
    embed_dim: int = field(default=192, metadata={"help": "token width D"})
    depth: int = field(default=24, metadata={"help": "Mamba blocks (run in flipped pairs, so even)"})
    d_state: int = field(default=16, metadata={"help": "SSM state size N"})
    d_conv: int = field(default=4, metadata={"help": "causal depthwise conv kernel"})
    expand: int = field(default=2, metadata={"help": "inner width E = expand * D"})
    drop_path_rate: float = field(default=0.1, metadata={"help": "stochastic depth (inactive in eval)"})
    input_frames: int = field(default=1024, metadata={"help": "fbank frames T the model is built for"})
    fstride: int = field(default=16, metadata={"help": "patch stride along frequency (16 pretrain, 10 fine-tune)"})
    tstride: int = field(default=16, metadata={"help": "patch stride along time"})
    n_mels: int = field(default=128, metadata={"help": "mel bins F"})
    num_classes: int = field(default=527, metadata={"help": "classifier outputs; 0 returns pooled features"})
    scan_impl: str = field(default="auto", metadata={"help": "selective-scan backend (models.scan); 'auto' picks the fastest"})
    fused_mixer: bool = field(default=True, metadata={
        "help": "CPU with the cpu_cpp scan: fused conv+SiLU kernel, no materialised flips (same model); "
                "False = the authors' op-by-op path"})


def s4d_real_A_log(d_inner: int, d_state: int) -> torch.Tensor:
    """S4D-real initialisation A = -(1..N) per channel, stored as log: (E, N)."""
    return torch.log(torch.arange(1, d_state + 1, dtype=torch.float32)).repeat(d_inner, 1)


@torch.no_grad()
def init_dt_bias_(bias: torch.Tensor, dt_min: float = 1e-3, dt_max: float = 1e-1, dt_floor: float = 1e-4) -> None:
    """mamba_simple's dt bias: inverse-softplus of dt ~ log-uniform[dt_min, dt_max] (floored)."""
    dt = torch.exp(torch.rand(bias.shape[0]) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
    dt = dt.clamp(min=dt_floor)
    bias.copy_(dt + torch.log(-torch.expm1(-dt)))


@torch.no_grad()
def rescale_out_proj_(weight: torch.Tensor, n_layer: int) -> None:
    """GPT-2 style rescaling of the residual-branch output projection (Mamba's _init_weights)."""
    nn.init.kaiming_uniform_(weight, a=math.sqrt(5))
    weight /= math.sqrt(n_layer)


def uses_fused_path(fused_mixer: bool, scan_impl: str, x: torch.Tensor) -> bool:
    """Whether a mixer takes the fused CPU path for input x: asked for, on CPU, with the C++ scan.

    On the meta device (predictions) the path follows the scan named: an explicit "cpu_cpp" traces
    the fused CPU path (its ops have fake kernels), anything else the authors' op sequence, so a
    prediction of what runs on a CPU and one of what runs on a GPU can both be traced."""
    if not fused_mixer or x.device.type not in ("cpu", "meta"):
        return False
    return resolve_scan_impl(scan_impl, x.device) == "cpu_cpp"


def conv_and_project(x, conv1d, x_proj, dt_proj_weight, dt_rank: int, d_state: int, *, fused: bool = False,
                     reverse: bool = False):
    """The input side of one Mamba direction on (B, E, L): causal conv + SiLU, then input-dependent
    dt, B, C. Returns x (B, E, L), delta (B, E, L) without its bias (the scan adds it inside the
    softplus), B and C (B, N, L). `fused`: the conv + SiLU as one kernel, its output laid out
    (B, L, E) so x_proj needs no copy; `reverse` (fused only): the anti-causal conv of a direction
    that runs backwards in time."""
    length = x.shape[-1]
    if fused:
        x = causal_conv1d_silu(x, conv1d.weight.squeeze(1), conv1d.bias, reverse)
    else:
        x = F.silu(conv1d(x)[..., :length])  # causal: drop the right-hand padding
    x_dbl = x_proj(x.transpose(1, 2))  # (B, L, R + 2N)
    dt, B, C = torch.split(x_dbl, [dt_rank, d_state, d_state], dim=-1)
    delta = (dt @ dt_proj_weight.t()).transpose(1, 2)  # (B, E, L)
    return x, delta, B.transpose(1, 2), C.transpose(1, 2)


def scan_direction(x, delta, A_log, B, C, D, z, delta_bias, impl: str, reverse: bool = False,
                   addend: torch.Tensor | None = None, out_scale: float = 1.0) -> torch.Tensor:
    """selective_scan with A = -exp(A_log), softplus(delta + bias), gated by SiLU(z): (B, E, L);
    (addend + y) * out_scale when given (the other direction's output, combined in the scan's epilogue)."""
    return selective_scan(
        x, delta, -torch.exp(A_log.float()), B, C, D.float(),
        z=z, delta_bias=delta_bias.float(), delta_softplus=True, impl=impl, reverse=reverse,
        addend=addend, out_scale=out_scale,
    )


class BiMambaMixer(nn.Module):
    """Vim "v2" bidirectional Mamba mixer (mamba_simple.Mamba with bimamba_type="v2")."""

    def __init__(self, d_model: int, *, d_state: int = 16, d_conv: int = 4, expand: int = 2, n_layer: int = 24,
                 scan_impl: str = "auto", fused_mixer: bool = True):
        super().__init__()
        self.d_inner = expand * d_model
        self.d_state = d_state
        self.dt_rank = math.ceil(d_model / 16)
        self.scan_impl = scan_impl
        self.fused_mixer = fused_mixer
        E, N, R = self.d_inner, d_state, self.dt_rank
        self.in_proj = nn.Linear(d_model, 2 * E, bias=False)
        self.conv1d = nn.Conv1d(E, E, d_conv, groups=E, padding=d_conv - 1, bias=True)
        self.x_proj = nn.Linear(E, R + 2 * N, bias=False)
        self.dt_proj = nn.Linear(R, E, bias=True)
        self.conv1d_b = nn.Conv1d(E, E, d_conv, groups=E, padding=d_conv - 1, bias=True)
        self.x_proj_b = nn.Linear(E, R + 2 * N, bias=False)
        self.dt_proj_b = nn.Linear(R, E, bias=True)
        # S4D-real initialisation A = -(1..N) per channel, stored as log; D = 1. Both directions.
        A_log = s4d_real_A_log(E, N)  # (E, N)
        self.A_log = nn.Parameter(A_log.clone())
        self.A_b_log = nn.Parameter(A_log.clone())
        self.D = nn.Parameter(torch.ones(E))
        self.D_b = nn.Parameter(torch.ones(E))
        self.out_proj = nn.Linear(E, d_model, bias=False)
        self._init_weights(n_layer)

    @torch.no_grad()
    def _init_weights(self, n_layer: int, dt_min: float = 1e-3, dt_max: float = 1e-1, dt_floor: float = 1e-4):
        for linear in (self.in_proj, self.x_proj, self.x_proj_b):
            trunc_normal_(linear.weight, std=0.02)
        std = self.dt_rank ** -0.5
        for dt_proj in (self.dt_proj, self.dt_proj_b):
            nn.init.uniform_(dt_proj.weight, -std, std)
        # Only the forward dt_proj gets the inverse-softplus dt bias; Vim's _init_weights then zeroes
        # every other Linear bias, dt_proj_b's included (it lacks the _no_reinit mark). Kept as is.
        init_dt_bias_(self.dt_proj.bias, dt_min, dt_max, dt_floor)
        self.dt_proj_b.bias.zero_()
        rescale_out_proj_(self.out_proj.weight, n_layer)

    def _direction(self, x, z, conv1d, x_proj, dt_proj, A_log, D, *, fused: bool = False, reverse: bool = False,
                   addend: torch.Tensor | None = None, out_scale: float = 1.0):
        """One direction on (B, E, L) tensors: causal conv, input-dependent dt/B/C, selective scan;
        `reverse` (fused path): the same direction run backwards in time, without flipping anything."""
        x, delta, B, C = conv_and_project(x, conv1d, x_proj, dt_proj.weight, self.dt_rank, self.d_state,
                                          fused=fused, reverse=reverse)
        return scan_direction(x, delta, A_log, B, C, D, z, dt_proj.bias, self.scan_impl, reverse,
                              addend, out_scale)  # (B, E, L)

    def forward(self, h: torch.Tensor, reverse: bool = False) -> torch.Tensor:
        """(B, L, D) -> (B, L, D). `reverse=True` is flip(mixer(flip(h))) along L."""
        xz = self.in_proj(h)  # (B, L, 2E)
        if uses_fused_path(self.fused_mixer, self.scan_impl, xz):
            x, z = split_channels(xz)  # (B, E, L) views; d(xz) written in in_proj's layout
            # The "backward" direction runs backwards in time (reverse scan, anti-causal conv) on the
            # unflipped x and z; with reverse=True the two directions swap roles in time.
            # The average (y_f + y_b) / 2 is the second scan's epilogue (same rounding as two ops).
            y_f = self._direction(x, z, self.conv1d, self.x_proj, self.dt_proj, self.A_log, self.D,
                                  fused=True, reverse=reverse)
            y = self._direction(x, z, self.conv1d_b, self.x_proj_b, self.dt_proj_b, self.A_b_log, self.D_b,
                                fused=True, reverse=not reverse, addend=y_f, out_scale=0.5)
            return self.out_proj(y.transpose(1, 2))  # (B, L, D)
        x, z = xz.transpose(1, 2).chunk(2, dim=1)  # (B, E, L) each
        if reverse:
            return self(h.flip(1)).flip(1)
        # The authors' op sequence (keep it as is: its tensor lifetimes are what memory predictions model).
        y_f = self._direction(x, z, self.conv1d, self.x_proj, self.dt_proj, self.A_log, self.D)
        y_b = self._direction(x.flip(-1), z.flip(-1), self.conv1d_b, self.x_proj_b, self.dt_proj_b,
                              self.A_b_log, self.D_b)
        return self.out_proj(((y_f + y_b.flip(-1)) / 2).transpose(1, 2))  # (B, L, D)


class MambaBlock(nn.Module):
    """Vim's non-fused Block: residual = residual + drop_path(h); h = mixer(norm(residual)).

    `norm` defaults to SSAMBA's LayerNorm(eps 1e-5); AuM passes an RMSNorm."""

    def __init__(self, d_model: int, mixer: nn.Module, drop_path: float, norm: nn.Module | None = None):
        super().__init__()
        self.norm = nn.LayerNorm(d_model, eps=1e-5) if norm is None else norm
        self.mixer = mixer
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, h: torch.Tensor, residual: torch.Tensor | None, reverse: bool = False):
        """`reverse=True` (bidirectional mixers): flip(block(flip(h), flip(residual))) along L."""
        residual = h if residual is None else residual + self.drop_path(h)
        x = self.norm(residual.to(self.norm.weight.dtype))
        h = self.mixer(x, reverse=True) if reverse else self.mixer(x)
        return h, residual.float()  # residual_in_fp32


class SSAMBA(ScanImplMixin, AudioModel):
    """SSAMBA backbone + the authors' mean-pooled classification head."""

    family = "ssamba"

    def __init__(self, *, size: str = "custom", embed_dim: int, depth: int = 24, d_state: int = 16,
                 d_conv: int = 4, expand: int = 2, drop_path_rate: float = 0.1, input_frames: int = 1024,
                 fstride: int = 16, tstride: int = 16, n_mels: int = 128, num_classes: int = 527,
                 scan_impl: str = "auto", fused_mixer: bool = True):
        check_scan_impl(scan_impl)
        if depth % 2:
            raise UserInputError(f"SSAMBA runs its blocks in flipped pairs: depth must be even, got {depth}")
        grid = PatchGrid(n_mels=n_mels, fstride=fstride, tstride=tstride)
        super().__init__(size=size, embed_dim=embed_dim, input_frames=input_frames, grid=grid,
                         num_prefix_tokens=1, num_classes=num_classes)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.n_tokens + 1, embed_dim))
        # Vim's stochastic depth: rates [0] + linspace(0, rate, depth); block i takes entry i.
        rates = [0.0] + torch.linspace(0, drop_path_rate, depth, device="cpu").tolist()
        self.layers = nn.ModuleList(
            MambaBlock(embed_dim, BiMambaMixer(embed_dim, d_state=d_state, d_conv=d_conv, expand=expand,
                                               n_layer=depth, scan_impl=scan_impl, fused_mixer=fused_mixer),
                       rates[i])
            for i in range(depth)
        )
        self.drop_path = DropPath(drop_path_rate) if drop_path_rate > 0 else nn.Identity()
        self.norm_f = nn.LayerNorm(embed_dim, eps=1e-5)
        self.requested_scan_impl = scan_impl
        self.init_head()
        trunc_normal_(self.pos_embed, std=0.02)
        trunc_normal_(self.cls_token, std=0.02)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)  # (B, N, D)
        x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1) + self.pos_embed  # (B, N + 1, D)
        h, residual = x, None
        fused = uses_fused_path(self.layers[0].mixer.fused_mixer, self.layers[0].mixer.scan_impl, x)
        for i in range(0, len(self.layers), 2):
            h_f, r_f = self.layers[i](h, residual)
            # Quirk of the original: the two halves are added, not averaged, so the residual doubles.
            if fused:  # block i + 1 on the flipped sequence, flipped back, without a flip (module docstring)
                h_b, r_b = self.layers[i + 1](h, residual, reverse=True)
                h, residual = h_f + h_b, r_f + r_b
            else:
                h_b, r_b = self.layers[i + 1](h.flip(1), None if residual is None else residual.flip(1))
                h, residual = h_f + h_b.flip(1), r_f + r_b.flip(1)
        h = self.norm_f((residual + self.drop_path(h)).to(self.norm_f.weight.dtype))
        return self.norm_f(h)  # quirk of the original: norm_f a second time


SIZES = {
    "tiny": SSAMBAConfig(embed_dim=192),
    "small": SSAMBAConfig(embed_dim=384),
    "base": SSAMBAConfig(embed_dim=768),
    # A fast model for tests only: 4 blocks (2 flipped pairs) of width 32.
    "test": SSAMBAConfig(embed_dim=32, depth=4),
}


def _build(size: str, overrides: dict) -> SSAMBA:
    return build_sized(SSAMBA, size, SIZES[size], overrides)


@register_model
def ssamba_tiny(**overrides) -> SSAMBA:
    return _build("tiny", overrides)


@register_model
def ssamba_small(**overrides) -> SSAMBA:
    return _build("small", overrides)


@register_model
def ssamba_base(**overrides) -> SSAMBA:
    return _build("base", overrides)


@register_model
def test_ssamba(**overrides) -> SSAMBA:
    return _build("test", overrides)
