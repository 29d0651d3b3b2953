"""The shared tokenization: fbank front end and the patch-grid arithmetic."""

import math

import pytest
import torch

from models.errors import UserInputError
from models.tokenizer import (
    DATASET_STATS,
    AudioFrontend,
    PatchGrid,
    compute_fbank,
    frames_for_tokens,
    normalize,
    pad_or_crop,
    tokens_for_frames,
)


def test_known_token_counts():
    assert tokens_for_frames(1024) == 512  # pretraining grid: 8 x 64
    assert tokens_for_frames(1024, fstride=10, tstride=10) == 1212  # fine-tuning grid: 12 x 101
    assert PatchGrid(fstride=10, tstride=10).f_dim == 12
    assert tokens_for_frames(16) == 8
    assert tokens_for_frames(44000) == 22000


def test_frames_for_tokens_inverts_token_count():
    assert frames_for_tokens(22000) == 44000
    assert frames_for_tokens(512) == 1024
    for grid in (PatchGrid(), PatchGrid(fstride=10, tstride=10)):
        for wanted in (grid.f_dim, 100, 512, 1212, 22000, 75000):
            frames = grid.frames_for_tokens(wanted)
            assert grid.n_tokens(frames) >= wanted
            assert frames == grid.patch or grid.n_tokens(frames - 1) < wanted  # fewest frames


def test_too_few_frames_or_tokens_is_a_clear_error():
    with pytest.raises(UserInputError, match="fewer than one 16-frame patch"):
        tokens_for_frames(15)
    with pytest.raises(UserInputError, match="at least 8"):
        frames_for_tokens(4)


def test_fbank_matches_kaldi_geometry():
    wav = torch.randn(16000 * 2)  # 2 s at 16 kHz
    fbank = compute_fbank(wav)
    # kaldi frames with snip_edges: 1 + (S - 400) // 160
    assert fbank.shape == (1 + (wav.numel() - 400) // 160, 128)
    assert torch.isfinite(fbank).all()
    # stereo is averaged to mono; 8 kHz input is resampled to 16 kHz first
    assert torch.allclose(compute_fbank(torch.stack([wav, wav])), fbank, atol=1e-4)
    assert compute_fbank(torch.randn(8000), sample_rate=8000).shape == (98, 128)


def test_fbank_removes_dc_offset():
    wav = torch.randn(16000, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(compute_fbank(wav), compute_fbank(wav + 0.5), atol=1e-3)


def test_pad_crop_and_normalisation():
    fbank = torch.randn(100, 128)
    padded = pad_or_crop(fbank, 128)
    assert padded.shape == (128, 128) and torch.equal(padded[:100], fbank) and padded[100:].abs().sum() == 0
    assert torch.equal(pad_or_crop(fbank, 64), fbank[:64])
    mean, std = DATASET_STATS["audioset"]
    assert torch.allclose(normalize(torch.full((2, 2), mean + 2 * std), mean, std), torch.ones(2, 2))


def test_frontend_produces_model_input():
    wav = torch.sin(2 * math.pi * 440 * torch.arange(16000 * 3) / 16000)
    spec = AudioFrontend(target_length=1024)(wav)
    assert spec.shape == (1024, 128)


def test_bad_waveforms():
    with pytest.raises(UserInputError, match="too short"):
        compute_fbank(torch.randn(100))
    with pytest.raises(UserInputError, match="shape"):
        compute_fbank(torch.randn(1, 2, 3))
