"""AuM, Audio Mamba (Erol et al., 2024), as its authors built it (kaistmm/Audio-Mamba-AuM:
src/models/mamba_models.py on their copy of mamba-ssm 1.1.1 with Vim's bidirectional mixers).

The third baseline, differing from SSAMBA in exactly the choices a reader wants separated
(docs/models.md, "AuM"):
  - one cls token in the MIDDLE of the sequence (index N // 2); its positional vector is stored at
    index 0 of `pos_embed` and moved with it (FlexiPosEmbed.insert_to_prefix / insert_from_prefix);
  - 24 sequential blocks, no flipped pairs: residual = residual + drop_path(h); h = mixer(RMSNorm(residual)),
    residual kept in fp32; the final RMSNorm applied once;
  - the mixer is an option (`mixer=`):
      "fo_bi" (default; the paper's base): one forward causal conv, x_proj, dt_proj and D shared by
              both directions, a separate A_b_log only; the backward scan runs over the flipped conv
              output, delta, B, C and z; the two directions are SUMMED (Vim's bimamba "v1");
      "bi_bi" (the paper's ImageNet-initialised small): Vim "v2" exactly as in SSAMBA, with a
              separate backward conv1d/x_proj/dt_proj/A/D; directions AVERAGED;
      "fo_fo": plain causal Mamba, one direction;
  - classification = the final-norm hidden state at the cls position -> Linear(D, n_classes).
Trained supervised in the original (stochastic depth off by default: `--aum_drop_path 0`).
Every scan goes through `models.scan.selective_scan`; the backend is chosen per instance (`scan_impl`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from timm.layers import DropPath, lecun_normal_, trunc_normal_
from torch import nn

from models.base import AudioModel, ScanImplMixin, build_sized, check_scan_impl
from models.errors import UserInputError
from models.registry import register_model
from models.scan.split_channels import split_channels
from models.ssamba import (
    BiMambaMixer,
    MambaBlock,
    conv_and_project,
    init_dt_bias_,
    rescale_out_proj_,
    s4d_real_A_log,
    scan_direction,
    uses_fused_path,
)
from models.tokenizer import PatchGrid


@dataclass(frozen=True)
class AuMConfig:
    embed_dim: int = field(default=192, metadata={"help": "token width D"})
    depth: int = field(default=24, metadata={"help": "Mamba blocks, run one after the other"})
    mixer: str = field(default="fo_bi", metadata={
        "help": "'fo_bi' (shared conv/projections, own A_b, summed), 'bi_bi' (Vim v2, averaged) or 'fo_fo' (causal)"})
    d_state: int = field(default=16, metadata={"help": "SSM state size N"})
    d_conv: int = field(default=4, metadata={"help": "causal depthwise conv kernel"})
    expand: int = field(default=2, metadata={"help": "inner width E = expand * D"})
    drop_path_rate: float = field(default=0.0, metadata={
        "help": "stochastic depth (AuM's default 0; inactive in eval)"})
    input_frames: int = field(default=1024, metadata={"help": "fbank frames T the model is built for"})
    fstride: int = field(default=16, metadata={"help": "patch stride along frequency (AuM's scripts: 16)"})
    tstride: int = field(default=16, metadata={"help": "patch stride along time"})
    n_mels: int = field(default=128, metadata={"help": "mel bins F"})
    num_classes: int = field(default=527, metadata={"help": "classifier outputs; 0 returns the cls feature"})
    scan_impl: str = field(default="auto", metadata={
        "help": "selective-scan backend (models.scan); 'auto' picks the fastest"})
    fused_mixer: bool = field(default=True, metadata={
        "help": "CPU with the cpu_cpp scan: fused conv+SiLU kernel, no materialised flips (same model); "
                "False = the authors' op-by-op path"})


class MambaMixer(nn.Module):
    """Causal Mamba (mamba_simple.Mamba, bimamba_type="none"): AuM's Fo-Fo mixer."""

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
        self.A_log = nn.Parameter(s4d_real_A_log(E, N))  # (E, N)
        self.D = nn.Parameter(torch.ones(E))
        self.out_proj = nn.Linear(E, d_model, bias=False)
        self._init_weights(n_layer)

    @torch.no_grad()
    def _init_weights(self, n_layer: int):
        # mamba_simple: in_proj, x_proj and conv1d keep PyTorch's default init; dt_proj's weight is
        # uniform(+-R^-1/2) and its bias the inverse-softplus dt (marked _no_reinit); the model's
        # _init_weights then rescales out_proj by 1/sqrt(depth).
        std = self.dt_rank ** -0.5
        nn.init.uniform_(self.dt_proj.weight, -std, std)
        init_dt_bias_(self.dt_proj.bias)
        rescale_out_proj_(self.out_proj.weight, n_layer)

    def _project(self, h: torch.Tensor, fused: bool = False):
        """(B, L, D) -> x, z, delta (B, E, L) and B, C (B, N, L) of the forward direction."""
        xz = self.in_proj(h)  # (B, L, 2E)
        # (B, E, L) each; on the fused path d(xz) is written in in_proj's layout (models/scan/split_channels.py)
        x, z = split_channels(xz) if fused else xz.transpose(1, 2).chunk(2, dim=1)
        x, delta, B, C = conv_and_project(x, self.conv1d, self.x_proj, self.dt_proj.weight, self.dt_rank,
                                          self.d_state, fused=fused)
        return x, z, delta, B, C

    def _fused(self, h: torch.Tensor) -> bool:
        return uses_fused_path(self.fused_mixer, self.scan_impl, h)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        x, z, delta, B, C = self._project(h, self._fused(h))
        y = scan_direction(x, delta, self.A_log, B, C, self.D, z, self.dt_proj.bias, self.scan_impl)  # (B, E, L)
        return self.out_proj(y.transpose(1, 2))  # (B, L, D)


class FoBiMixer(MambaMixer):
    """AuM's Fo-Bi mixer (Vim's bimamba "v1", `bimamba_inner_fn`): the causal Mamba's conv, x_proj,
    dt_proj and D serve both directions; only A differs (`A_b_log`). The backward scan runs over the
    flipped conv output, delta, B, C and z, and the two directions are summed, not averaged."""

    def __init__(self, d_model: int, *, d_state: int = 16, d_conv: int = 4, expand: int = 2, n_layer: int = 24,
                 scan_impl: str = "auto", fused_mixer: bool = True):
        super().__init__(d_model, d_state=d_state, d_conv=d_conv, expand=expand, n_layer=n_layer, scan_impl=scan_impl,
                         fused_mixer=fused_mixer)
        self.A_b_log = nn.Parameter(s4d_real_A_log(self.d_inner, d_state))  # (E, N)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        fused = self._fused(h)
        x, z, delta, B, C = self._project(h, fused)
        bias = self.dt_proj.bias
        if fused:  # the backward scan walks the same tensors backwards in time; the sum is its epilogue
            y_f = scan_direction(x, delta, self.A_log, B, C, self.D, z, bias, self.scan_impl)
            y = scan_direction(x, delta, self.A_b_log, B, C, self.D, z, bias, self.scan_impl, reverse=True, addend=y_f)
            return self.out_proj(y.transpose(1, 2))  # summed (no /2, unlike bi_bi): (B, L, D)
        y_f = scan_direction(x, delta, self.A_log, B, C, self.D, z, bias, self.scan_impl)
        y_b = scan_direction(x.flip(-1), delta.flip(-1), self.A_b_log, B.flip(-1), C.flip(-1), self.D, z.flip(-1),
                             bias, self.scan_impl)
        return self.out_proj((y_f + y_b.flip(-1)).transpose(1, 2))  # summed (no /2, unlike bi_bi): (B, L, D)


# bi_bi reuses SSAMBA's mixer as is. Its from-scratch init follows SSAMBA's code (trunc-normal in_proj
# and x_proj, uniform dt_proj_b) where AuM's mamba_simple leaves PyTorch's defaults; shapes, names and
# the forward are AuM's, so checkpoints and measurements are unaffected.
MIXERS = {"fo_bi": FoBiMixer, "bi_bi": BiMambaMixer, "fo_fo": MambaMixer}


class AuM(ScanImplMixin, AudioModel):
    """Audio Mamba backbone + its cls-token head (no LayerNorm, no mean pooling)."""

    family = "aum"

    def __init__(self, *, size: str = "custom", embed_dim: int, depth: int = 24, mixer: str = "fo_bi",
                 d_state: int = 16, d_conv: int = 4, expand: int = 2, drop_path_rate: float = 0.0,
                 input_frames: int = 1024, fstride: int = 16, tstride: int = 16, n_mels: int = 128,
                 num_classes: int = 527, scan_impl: str = "auto", fused_mixer: bool = True):
        check_scan_impl(scan_impl)
        if mixer not in MIXERS:
            raise UserInputError(f"unknown AuM mixer {mixer!r}; choose one of {', '.join(MIXERS)}")
        grid = PatchGrid(n_mels=n_mels, fstride=fstride, tstride=tstride)
        # One cls token; it sits in the middle of the sequence, not in front (see patch_tokens, pool).
        super().__init__(size=size, embed_dim=embed_dim, input_frames=input_frames, grid=grid,
                         num_prefix_tokens=1, num_classes=num_classes)
        self.mixer = mixer
        self.cls_position = self.n_tokens // 2
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        # Index 0 holds the cls token's vector (AuM's FlexiPosEmbed keeps prefix tokens in front).
        self.pos_embed = nn.Parameter(torch.zeros(1, self.n_tokens + 1, embed_dim))
        # Vim's stochastic depth: rates [0] + linspace(0, rate, depth); block i takes entry i.
        rates = [0.0] + torch.linspace(0, drop_path_rate, depth, device="cpu").tolist()
        self.layers = nn.ModuleList(
            MambaBlock(embed_dim, MIXERS[mixer](embed_dim, d_state=d_state, d_conv=d_conv, expand=expand,
                                                n_layer=depth, scan_impl=scan_impl, fused_mixer=fused_mixer),
                       rates[i], norm=nn.RMSNorm(embed_dim, eps=1e-5))
            for i in range(depth)
        )
        self.drop_path = DropPath(drop_path_rate) if drop_path_rate > 0 else nn.Identity()
        self.norm_f = nn.RMSNorm(embed_dim, eps=1e-5)
        self.requested_scan_impl = scan_impl
        self.init_head()
        trunc_normal_(self.pos_embed, std=0.02)
        trunc_normal_(self.cls_token, std=0.02)
        # FlexiPatchEmbed: lecun-normal weight, zero bias.
        lecun_normal_(self.patch_embed.proj.weight)
        nn.init.zeros_(self.patch_embed.proj.bias)

    def init_head(self) -> None:
        """AuM's head is one Linear on the cls feature (segm_init_weights: trunc-normal 0.02, zero bias)."""
        if not self.num_classes:
            self.head = nn.Identity()
            return
        self.head = nn.Linear(self.embed_dim, self.num_classes)
        trunc_normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)  # (B, N, D)
        k = self.cls_position
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        pe = self.pos_embed
        pos = torch.cat((pe[:, 1:1 + k], pe[:, :1], pe[:, 1 + k:]), dim=1)  # cls vector moved to index k
        x = torch.cat((x[:, :k], cls, x[:, k:]), dim=1) + pos  # (B, N + 1, D), cls at index k
        h, residual = x, None
        for layer in self.layers:
            h, residual = layer(h, residual)
        return self.norm_f((residual + self.drop_path(h)).to(self.norm_f.weight.dtype))  # once (unlike SSAMBA)

    def patch_tokens(self, features: torch.Tensor) -> torch.Tensor:
        k = self.cls_position
        return torch.cat((features[:, :k], features[:, k + 1:]), dim=1)  # (B, N, D)

    def pool(self, features: torch.Tensor) -> torch.Tensor:
        return features[:, self.cls_position]  # (B, D): the cls token's final state

    def describe(self) -> dict:
        return {**super().describe(), "mixer": self.mixer}


SIZES = {
    "tiny": AuMConfig(embed_dim=192),
    "small": AuMConfig(embed_dim=384),
    "base": AuMConfig(embed_dim=768),
    # A fast model for tests only: 4 blocks of width 32.
    "test": AuMConfig(embed_dim=32, depth=4),
}


def _build(size: str, overrides: dict) -> AuM:
    return build_sized(AuM, size, SIZES[size], overrides)


@register_model
def aum_tiny(**overrides) -> AuM:
    return _build("tiny", overrides)


@register_model
def aum_small(**overrides) -> AuM:
    return _build("small", overrides)


@register_model
def aum_base(**overrides) -> AuM:
    return _build("base", overrides)


@register_model
def test_aum(**overrides) -> AuM:
    return _build("test", overrides)
