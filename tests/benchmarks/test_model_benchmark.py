"""Hot-path benchmarks (pytest-benchmark) of the models and the tokenizer.

Opt-in: `pytest -m benchmark --benchmark-enable tests/benchmarks` (the default run deselects the
`benchmark` marker). Save a run and compare a later one against it:

    pytest -m benchmark --benchmark-enable tests/benchmarks --benchmark-save=before
    pytest -m benchmark --benchmark-enable tests/benchmarks --benchmark-compare --benchmark-compare-fail=median:20%

Each benchmark's extra_info holds the model, token count, parameter count and attention/scan kernel,
so saved runs stay self-describing.
"""

from __future__ import annotations

import math

import pytest
import torch

from models import create_model
from models.tokenizer import AudioFrontend, frames_for_tokens

pytestmark = pytest.mark.benchmark

FORWARDS = [
    ("ssast_tiny", {"attn_impl": "eager"}),
    ("ssast_tiny", {"attn_impl": "sdpa"}),
    ("ssamba_tiny", {"scan_impl": "auto"}),
    ("aum_tiny", {"scan_impl": "auto"}),
]


@pytest.mark.parametrize("tokens", [256, 1024, 4096])
@pytest.mark.parametrize("name,options", FORWARDS, ids=lambda v: v if isinstance(v, str) else "-".join(v.values()))
def test_forward(benchmark, name, options, tokens):
    torch.manual_seed(0)
    model = create_model(name, input_frames=frames_for_tokens(tokens), **options).eval()
    x = torch.randn(1, model.input_frames, 128)
    benchmark.extra_info.update(model=name, tokens=model.n_tokens, params=model.num_parameters(include_head=True),
                                attn_impl=model.attn_impl, scan_impl=model.scan_impl)

    def forward():
        with torch.inference_mode():
            return model(x)

    benchmark.pedantic(forward, rounds=5 if tokens < 4096 else 2, warmup_rounds=1)


def test_tokenizer(benchmark):
    t = torch.arange(16000 * 10) / 16000
    wav = torch.sin(2 * math.pi * 440 * t) * (1 + 0.5 * torch.sin(2 * math.pi * 3 * t))
    frontend = AudioFrontend(target_length=1024)
    benchmark.extra_info.update(seconds=10, frames=1024)
    benchmark.pedantic(lambda: frontend(wav), rounds=10, warmup_rounds=1)
