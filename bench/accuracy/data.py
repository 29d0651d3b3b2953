"""Features of the accuracy tasks for training: normalised fbank tensors, loaded once per process.

A thin cache over `bench.data.load_task` (which verifies the dataset against its manifest and turns a
missing, unbuilt or corrupt cache into a one-line UserInputError naming the build command).
"""

from __future__ import annotations

from functools import lru_cache

import torch

from bench.data import load_task

DIGITS_REAL = "digits-real"  # the real asterisk digits: an out-of-domain test split of a kws model


@lru_cache(maxsize=32)
def features(task: str, split: str, cache: str | None, small: bool, frames: int,
             stats: tuple[float, float] | None = None) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """(x (n, frames, 128) normalised fbank, y (n,), meta) of one split; `stats` default: the task's own
    training statistics (give the kws statistics to evaluate a kws model on digits-real)."""
    x, y, meta = load_task(task, split, cache=cache, small=small, features=True, target_length=frames, stats=stats)
    return x.contiguous(), y, {k: meta[k] for k in ("task", "split", "label_names", "stats")}


def batches(n: int, batch: int, steps: int, generator: torch.Generator):
    """`steps` index batches of size min(batch, n): epochs of seeded permutations, concatenated."""
    batch = min(batch, n)
    order = torch.empty(0, dtype=torch.long)
    for _ in range(steps):
        while len(order) < batch:
            order = torch.cat((order, torch.randperm(n, generator=generator)))
        yield order[:batch]
        order = order[batch:]
