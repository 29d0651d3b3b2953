"""Run each tiny model once on the fbank of a generated waveform: a smoke test of the whole front end.

The waveform is a deterministic 10.24 s synthetic signal (a gliding harmonic tone with amplitude
modulation and a little seeded noise), turned into the model input by the shared tokenizer exactly
as real audio is: kaldi fbank, pad/crop to 1024 frames, (x - mean) / (2 * std).
"""

from __future__ import annotations

import argparse
import math
import time

import torch

from models.registry import create_model, list_models
from models.tokenizer import SAMPLE_RATE, AudioFrontend


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pattern", default="*_tiny", help="which models to run (shell pattern)")
    parser.add_argument("--frames", type=int, default=1024, help="fbank frames per clip")


def synthetic_waveform(seconds: float = 10.24, seed: int = 0) -> torch.Tensor:
    """A speech-like test signal: harmonics of a gliding pitch, syllable-rate modulation, noise."""
    t = torch.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    pitch = 140 + 60 * torch.sin(2 * math.pi * 0.3 * t)  # Hz
    phase = 2 * math.pi * torch.cumsum(pitch, 0) / SAMPLE_RATE
    tone = sum(torch.sin(k * phase) / k for k in range(1, 8))
    envelope = 0.5 * (1 + torch.sin(2 * math.pi * 4 * t))
    noise = torch.randn(t.shape, generator=torch.Generator().manual_seed(seed))
    return 0.3 * envelope * tone + 0.01 * noise


def run(args) -> int:
    frontend = AudioFrontend(target_length=args.frames)
    spec = frontend(synthetic_waveform()).unsqueeze(0)  # (1, T, 128)
    print(f"input: fbank of a generated waveform, shape {tuple(spec.shape)}, "
          f"mean {spec.mean():.3f}, std {spec.std():.3f}")
    for name in list_models(args.pattern):
        torch.manual_seed(0)
        model = create_model(name, input_frames=args.frames).eval()
        start = time.perf_counter()
        with torch.inference_mode():
            out = model(spec)
        elapsed = time.perf_counter() - start
        impl = model.attn_impl or model.scan_impl
        print(f"{name:<14} tokens={model.n_tokens:<5} impl={impl:<10} out={tuple(out.shape)} "
              f"finite={bool(torch.isfinite(out).all())} time={elapsed:.2f}s")
    return 0
