"""The one spectrogram tokenization every model in ssamba-bench shares.

waveform -> kaldi fbank -> pad/crop -> dataset normalisation, and the patch-grid arithmetic that
turns a number of frames into a number of 16x16 patch tokens (and back). Follows SSAST's and
SSAMBA's dataloaders (YuanGongND/ssast src/dataloader.py; SiavashShams/ssamba) exactly: the fbank
arguments, the `(x - mean) / (2 * std)` normalisation (the 2 is theirs) and the frequency-major patch
grid of `Conv2d(1, D, 16, stride=(fstride, tstride))` on a `(B, 1, 128, T)` input.

Nothing else in the suite recomputes token counts: models, the harness and the estimates call
`PatchGrid` (or the two module-level helpers).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from models.errors import UserInputError

SAMPLE_RATE = 16000
N_MELS = 128
PATCH = 16

# Published (mean, std) of the fbank features, from the authors' recipes. A new dataset computes its own.
DATASET_STATS: dict[str, tuple[float, float]] = {
    "audioset": (-4.2677393, 4.5689974),
    "librispeech": (-4.2677393, 4.5689974),
    "esc50": (-6.6268077, 5.358466),
    "speechcommands": (-6.845978, 5.5654526),
}


@dataclass(frozen=True)
class PatchGrid:
    """Geometry of the patch tokens of a (T, n_mels) spectrogram; tokens are frequency-major."""

    n_mels: int = N_MELS
    patch: int = PATCH
    fstride: int = PATCH
    tstride: int = PATCH

    def __post_init__(self):
        for name in ("n_mels", "patch", "fstride", "tstride"):
            if getattr(self, name) < 1:
                raise UserInputError(f"{name} must be a positive integer, got {getattr(self, name)}")
        if self.n_mels < self.patch:
            raise UserInputError(f"n_mels ({self.n_mels}) must be at least the patch size ({self.patch})")

    @property
    def f_dim(self) -> int:
        """Patches along frequency: 8 at stride 16, 12 at stride 10 (128 mel bins)."""
        return (self.n_mels - self.patch) // self.fstride + 1

    def t_dim(self, frames: int) -> int:
        """Patches along time for `frames` frames."""
        if frames < self.patch:
            raise UserInputError(
                f"{frames} frames is fewer than one {self.patch}-frame patch; give at least {self.patch} frames"
            )
        return (frames - self.patch) // self.tstride + 1

    def n_tokens(self, frames: int) -> int:
        """Patch tokens for `frames` frames (prefix tokens such as cls not included)."""
        return self.f_dim * self.t_dim(frames)

    def frames_for_tokens(self, n_tokens: int) -> int:
        """Fewest frames giving at least `n_tokens` patch tokens (exactly n_tokens when it is a
        multiple of f_dim). At stride 16: 22,000 tokens -> 44,000 frames."""
        if n_tokens < self.f_dim:
            raise UserInputError(
                f"{n_tokens} tokens is fewer than one column of patches ({self.f_dim} at "
                f"fstride {self.fstride}); ask for at least {self.f_dim}"
            )
        t_dim = math.ceil(n_tokens / self.f_dim)
        return (t_dim - 1) * self.tstride + self.patch


def tokens_for_frames(frames: int, *, fstride: int = PATCH, tstride: int = PATCH, n_mels: int = N_MELS) -> int:
    """Patch tokens for `frames` frames: 1024 -> 512 at stride 16, 1024 -> 1212 at stride 10."""
    return PatchGrid(n_mels=n_mels, fstride=fstride, tstride=tstride).n_tokens(frames)


def frames_for_tokens(n_tokens: int, *, fstride: int = PATCH, tstride: int = PATCH, n_mels: int = N_MELS) -> int:
    """Fewest frames giving at least `n_tokens` patch tokens."""
    return PatchGrid(n_mels=n_mels, fstride=fstride, tstride=tstride).frames_for_tokens(n_tokens)


def compute_fbank(waveform: torch.Tensor, sample_rate: int = SAMPLE_RATE, n_mels: int = N_MELS) -> torch.Tensor:
    """Log-mel filterbank (T, n_mels) of a waveform (S,) or (channels, S), as the authors computed it.

    Multi-channel audio is averaged to mono; other sample rates are resampled to 16 kHz first (the
    authors' loaders assumed 16 kHz input).
    """
    import torchaudio  # imported here: the models never need torchaudio, only the front end does

    if not torch.is_tensor(waveform) or waveform.dim() not in (1, 2):
        raise UserInputError("waveform must be a tensor of shape (samples,) or (channels, samples)")
    wav = waveform.float()
    if wav.dim() == 2:
        wav = wav.mean(dim=0)
    if sample_rate != SAMPLE_RATE:
        wav = torchaudio.functional.resample(wav, sample_rate, SAMPLE_RATE)
    if wav.numel() < 400:  # one 25 ms window at 16 kHz
        # soundfile and numpy give (samples, channels): name that mix-up rather than report "2 samples".
        hint = ("; it looks like (samples, channels): pass waveform.T"
                if waveform.dim() == 2 and waveform.shape[0] > waveform.shape[1] else "")
        raise UserInputError(f"waveform too short: {wav.numel()} samples at 16 kHz, need at least 400 (25 ms){hint}")
    wav = wav - wav.mean()
    return torchaudio.compliance.kaldi.fbank(
        wav.unsqueeze(0),
        htk_compat=True,
        sample_frequency=SAMPLE_RATE,
        use_energy=False,
        window_type="hanning",
        num_mel_bins=n_mels,
        dither=0.0,
        frame_shift=10,
    )  # (T, n_mels)


def pad_or_crop(fbank: torch.Tensor, target_length: int) -> torch.Tensor:
    """Zero-pad at the end (log-mel domain, as the authors did) or cut to `target_length` frames."""
    missing = target_length - fbank.shape[0]
    if missing > 0:
        return torch.nn.functional.pad(fbank, (0, 0, 0, missing))
    return fbank[:target_length]


def normalize(fbank: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    """The authors' normalisation: (x - mean) / (2 * std)."""
    return (fbank - mean) / (2 * std)


@dataclass(frozen=True)
class AudioFrontend:
    """Waveform -> normalised (target_length, n_mels) model input, with one dataset's statistics."""

    target_length: int = 1024
    mean: float = DATASET_STATS["audioset"][0]
    std: float = DATASET_STATS["audioset"][1]
    n_mels: int = N_MELS

    def __call__(self, waveform: torch.Tensor, sample_rate: int = SAMPLE_RATE) -> torch.Tensor:
        fbank = compute_fbank(waveform, sample_rate, self.n_mels)
        return normalize(pad_or_crop(fbank, self.target_length), self.mean, self.std)


def check_model_input(x: torch.Tensor, n_mels: int, frames: int) -> None:
    """Raise one clear error when `x` is not the (B, frames, n_mels) input a model was built for."""
    if not torch.is_tensor(x):
        raise UserInputError(f"model input must be a torch.Tensor of shape (B, T, {n_mels}), got {type(x).__name__}")
    if x.dim() != 3:
        raise UserInputError(
            f"model input must have shape (B, T, {n_mels}) (batch, frames, mel bins), got {tuple(x.shape)}"
        )
    if x.shape[2] != n_mels:
        # (B, F, T), the layout of torchaudio's MelSpectrogram, is the likely mix-up: name it.
        hint = ("; it looks like (B, mel bins, frames): pass x.transpose(1, 2)"
                if x.shape[1] == n_mels and x.shape[2] == frames else "")
        raise UserInputError(f"model input has {x.shape[2]} mel bins in its last dimension; expected {n_mels}{hint}")
    if x.shape[1] != frames:
        raise UserInputError(
            f"model was built for {frames} frames but got {x.shape[1]}; pad/crop the input "
            f"(models.tokenizer.pad_or_crop) or create the model with input_frames={x.shape[1]}"
        )
    if not x.is_floating_point():
        raise UserInputError(
            f"model input has dtype {x.dtype}; the models take a floating-point spectrogram (the normalised "
            f"fbank of models.tokenizer.AudioFrontend), e.g. x.float()"
        )
