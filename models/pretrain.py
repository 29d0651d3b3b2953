"""Masked spectrogram patch modelling (MSPM): the self-supervised pretraining of SSAST and SSAMBA.

Follows Gong et al., "SSAST: Self-Supervised Audio Spectrogram Transformer" (AAAI 2022;
YuanGongND/ssast src/models/ast_models.py: `gen_maskid_patch`, `mpc`, `mpg`) and SSAMBA (Shams et al.
2024), which reuses that recipe unchanged. It wraps ANY registered model (the `AudioModel`
contract: `patch_embed`, `forward_features`, `patch_tokens`, `grid`, `n_tokens`, `embed_dim`):

- cluster masking: per clip a cluster size c in {3, 4, 5}; repeatedly a random start patch and the
  c x c block `start + t_dim * i + j` on the frequency-major flat index (patch 0 never masked; the
  flat arithmetic wraps across grid rows, as the original does) until at least `mask_patch` patches
  are masked; the `mask_patch` smallest indices are kept (what the original's `list(set(ids))[:n]`
  gives for small ints in CPython);
- the masked patch embeddings are replaced by a learnable `mask_embed` (1, 1, D) BEFORE the prefix
  tokens and the positional embedding are added. The wrapper does this generically with a forward
  hook on `model.patch_embed`, so no model needs a pretraining code path and the models' own
  `encode` stays exactly what is benchmarked;
- targets: the raw normalised 16x16 input patches, 256 values each, via `nn.Unfold` in the same
  frequency-major order as the patch tokens;
- discriminative (`mpc`): `cpredlayer` on the encoder output at masked positions; per clip
  scores = targets @ preds^T (raw dot products: no temperature, no L2 normalisation), InfoNCE =
  mean of -log_softmax(scores, -1)[i, i]; negatives are the clip's other masked patches. Accuracy, as
  the original computes it: softmax(scores, -1), then for each prediction the argmax over targets is
  its own patch (chance 1 / mask_patch);
- generative (`mpg`): `gpredlayer` of the same shape, MSE between prediction and raw patch;
- joint (`forward`): `nce + 10 * mse`, each from its own forward pass with its own mask.

The attribute names `v`, `cpredlayer`, `gpredlayer` and `mask_embed` are the authors', so
`models.checkpoints.load_pretraining_heads` and `to_original_state_dict(model.v, pretraining_state())`
read and write the original checkpoint layout.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from models.errors import UserInputError

CLUSTER_SIZES = (3, 4, 5)
MSE_WEIGHT = 10.0  # the original joint loss: nce + 10 * mse


def prediction_head(embed_dim: int, out_dim: int) -> nn.Sequential:
    """The authors' `cpredlayer` / `gpredlayer`: Linear(D, D) -> ReLU -> Linear(D, out_dim)."""
    return nn.Sequential(nn.Linear(embed_dim, embed_dim), nn.ReLU(), nn.Linear(embed_dim, out_dim))


def check_mask_patch(n_tokens: int, mask_patch: int) -> None:
    if not 1 <= mask_patch < n_tokens:
        raise UserInputError(f"mask_patch must be between 1 and {n_tokens - 1} (patch 0 is never masked) "
                             f"for {n_tokens} patch tokens, got {mask_patch}")


def cluster_mask(n_tokens: int, t_dim: int, mask_patch: int, generator: torch.Generator | None = None
                 ) -> torch.Tensor:
    """Sorted indices (mask_patch,) of the masked patches of one clip (the authors' gen_maskid_patch)."""
    check_mask_patch(n_tokens, mask_patch)
    c = CLUSTER_SIZES[int(torch.randint(len(CLUSTER_SIZES), (1,), generator=generator))]
    offsets = (torch.arange(c).unsqueeze(1) * t_dim + torch.arange(c)).flatten()  # (c*c,) c x c block
    masked = torch.zeros(n_tokens, dtype=torch.bool)
    while int(masked.sum()) < mask_patch:
        start = int(torch.randint(n_tokens, (1,), generator=generator))
        cand = start + offsets
        masked[cand[(cand > 0) & (cand < n_tokens)]] = True
    return masked.nonzero().squeeze(1)[:mask_patch]  # ascending: the smallest mask_patch indices


@dataclass(frozen=True)
class PretrainOutput:
    """One joint step: `loss` = nce + 10 * mse (backpropagate this), and its parts as tensors."""

    loss: torch.Tensor
    nce: torch.Tensor
    mse: torch.Tensor
    accuracy: torch.Tensor  # masked-patch accuracy of the discriminative head (chance 1 / mask_patch)


class MaskedPatchPretrainer(nn.Module):
    """A registered model (`v`) plus the authors' pretraining heads and mask embedding."""

    def __init__(self, model: nn.Module, *, mask_patch: int = 400):
        super().__init__()
        for attr in ("patch_embed", "forward_features", "patch_tokens", "grid", "n_tokens", "embed_dim"):
            if not hasattr(model, attr):
                raise UserInputError(f"{type(model).__name__} lacks `{attr}`: masked-patch pretraining needs "
                                     "the AudioModel contract (models/base.py)")
        grid = model.grid
        if grid.n_tokens(model.input_frames) != model.n_tokens:
            raise UserInputError("model.n_tokens does not match its grid")
        self.v = model
        self.mask_patch = mask_patch
        check_mask_patch(model.n_tokens, mask_patch)
        patch_dim = grid.patch * grid.patch
        self.cpredlayer = prediction_head(model.embed_dim, patch_dim)
        self.gpredlayer = prediction_head(model.embed_dim, patch_dim)
        self.mask_embed = nn.Parameter(torch.zeros(1, 1, model.embed_dim))
        nn.init.xavier_normal_(self.mask_embed)  # as the original
        self.unfold = nn.Unfold(kernel_size=(grid.patch, grid.patch), stride=(grid.fstride, grid.tstride))

    @property
    def t_dim(self) -> int:
        return self.v.grid.t_dim(self.v.input_frames)

    def gen_mask(self, batch: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """(B, mask_patch) masked patch indices, one independent cluster mask per clip."""
        return torch.stack([cluster_mask(self.v.n_tokens, self.t_dim, self.mask_patch, generator)
                            for _ in range(batch)])

    def patch_targets(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, F) normalised input -> (B, N, patch*patch) raw patches in token order."""
        spec = x.transpose(1, 2).unsqueeze(1)  # (B, 1, F, T), as PatchEmbed sees it
        return self.unfold(spec).transpose(1, 2)  # (B, N, 256), blocks row-major = frequency-major

    def encode_masked(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Patch tokens (B, N, D) of the encoder with the `mask` (B, M) patch embeddings replaced."""
        fired = []

        def replace(module, inputs, tokens):  # tokens (B, N, D): before prefix tokens / pos_embed
            fired.append(True)
            is_masked = torch.zeros(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
            is_masked.scatter_(1, mask.to(tokens.device), True)
            return torch.where(is_masked.unsqueeze(-1), self.mask_embed.to(tokens.dtype), tokens)

        handle = self.v.patch_embed.register_forward_hook(replace)
        try:
            features = self.v.forward_features(x)
        finally:
            handle.remove()
        if len(fired) != 1:
            raise UserInputError(f"{type(self.v).__name__}.encode called patch_embed {len(fired)} times; masked "
                                 "pretraining needs exactly one call")
        return self.v.patch_tokens(features)  # (B, N, D)

    def _masked(self, x, mask, generator):
        if torch.is_tensor(x) and x.dim() == 3 and x.shape[0] == 0:
            # The losses are means over clips and masked patches: undefined (NaN) for no clips.
            raise UserInputError("masked-patch pretraining got an empty batch (0 clips); its losses are "
                                 "means over clips, so give at least one")
        if mask is None:
            mask = self.gen_mask(x.shape[0], generator).to(x.device)
        tokens = self.encode_masked(x, mask)  # (B, N, D)
        index = mask.unsqueeze(-1)
        hidden = tokens.gather(1, index.expand(-1, -1, tokens.shape[-1]))  # (B, M, D)
        targets = self.patch_targets(x)
        targets = targets.gather(1, index.expand(-1, -1, targets.shape[-1]))  # (B, M, 256)
        return hidden, targets

    def mpc(self, x: torch.Tensor, mask: torch.Tensor | None = None,
            generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Discriminative loss: (InfoNCE, masked-patch accuracy)."""
        hidden, targets = self._masked(x, mask, generator)
        preds = self.cpredlayer(hidden)  # (B, M, 256)
        scores = torch.bmm(targets, preds.transpose(1, 2))  # (B, M, M): [j, k] = target_j . pred_k
        nce = -torch.diagonal(scores.log_softmax(dim=-1), dim1=1, dim2=2).mean()
        order = torch.arange(scores.shape[1], device=scores.device)
        # The original's accuracy: softmax over predictions (dim -1), then for each prediction k the
        # argmax over targets j (dim 1) must be k itself.
        accuracy = (scores.softmax(dim=-1).argmax(dim=1) == order).float().mean()
        return nce, accuracy.detach()

    def mpg(self, x: torch.Tensor, mask: torch.Tensor | None = None,
            generator: torch.Generator | None = None) -> torch.Tensor:
        """Generative loss: MSE between `gpredlayer` at masked positions and the raw patches."""
        hidden, targets = self._masked(x, mask, generator)
        return torch.mean((self.gpredlayer(hidden) - targets) ** 2)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> PretrainOutput:
        """Joint loss nce + 10 * mse: two forward passes, each with its own mask."""
        nce, accuracy = self.mpc(x, generator=generator)
        mse = self.mpg(x, generator=generator)
        return PretrainOutput(loss=nce + MSE_WEIGHT * mse, nce=nce, mse=mse, accuracy=accuracy)

    def pretraining_state(self) -> dict[str, torch.Tensor]:
        """cpredlayer.*, gpredlayer.*, mask_embed: the `pretraining_state` of the checkpoint writers."""
        state = {f"{head}.{k}": v for head in ("cpredlayer", "gpredlayer")
                 for k, v in getattr(self, head).state_dict().items()}
        state["mask_embed"] = self.mask_embed.detach()
        return state
