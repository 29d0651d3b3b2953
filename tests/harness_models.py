"""Models for the harness tests, loaded as a sweep plugin (`plugins = ["tests/harness_models.py"]`).

Not a test module (no `test_` prefix): the parent and every child process of a sweep import it, so
the models exist on both sides of the process boundary.

  test_faulty  the test-size SSAST with failures injected by (batch, tokens): at batch 1, 128 tokens
               raises; at batch 2, 192 tokens kills its own process (SIGKILL) and 256 hangs
               (sleeps 60 s). Everything else runs the real model, so a memory cap makes it OOM for real.
  test_sleep   a forward of known duration: sleeps SLEEP_S and returns zeros (timing tests).
"""

from __future__ import annotations

import os
import signal
import time

import torch

from models.base import AudioModel, build_sized
from models.registry import register_model
from models.ssast import SIZES, SSAST
from models.tokenizer import PatchGrid

SLEEP_S = 0.05


class FaultySSAST(SSAST):
    family = "faulty"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch = x.shape[0]
        if (batch, self.n_tokens) == (1, 128):
            raise RuntimeError("injected failure at 128 tokens")
        if (batch, self.n_tokens) == (2, 192):
            os.kill(os.getpid(), signal.SIGKILL)
        if (batch, self.n_tokens) == (2, 256):
            time.sleep(60)
        return super().forward(x)


@register_model
def test_faulty(**overrides) -> FaultySSAST:
    return build_sized(FaultySSAST, "test", SIZES["test"], overrides)


class SleepModel(AudioModel):
    family = "sleep"

    def __init__(self, *, size: str = "test", input_frames: int = 1024, num_classes: int = 2, sleep_s: float = SLEEP_S):
        super().__init__(size=size, embed_dim=8, input_frames=input_frames, grid=PatchGrid(),
                         num_prefix_tokens=0, num_classes=num_classes)
        self.sleep_s = sleep_s
        self.init_head()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        time.sleep(self.sleep_s)
        return torch.zeros(x.shape[0], self.num_classes, device=x.device)


@register_model
def test_sleep(**overrides) -> SleepModel:
    return SleepModel(**overrides)

