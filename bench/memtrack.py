"""Peak live tensor bytes, counted deterministically by watching every tensor storage an op creates.

A TorchDispatchMode sees the outputs of every ATen (and custom) operator; each storage seen for the
first time is added to the live total, and a finaliser subtracts it when the storage dies. The peak
of that total is the CPU analogue of CUDA's `max_memory_allocated`, without allocator rounding or
caching: the same forward gives the same number on any machine. It works on real CPU tensors and on
meta tensors alike, which is what lets the estimator predict memory for token counts no machine here
could run.

What it counts: storages created by operators while the mode is active, plus whatever is registered
up front with `track` (the harness and the estimator register the weights, buffers and input, so the
peak includes them, as `max_memory_allocated` after a reset with the model on the device does).
Storages allocated inside an operator and freed before it returns (a fused kernel's scratch) are not
seen: that is exactly the semantics of a fused kernel, whose scratch lives in registers or workspace.
"""

from __future__ import annotations

import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_map_only


class LiveTensorTracker(TorchDispatchMode):
    """Counts live storage bytes; `peak_bytes` is the high-water mark since entering (or `reset_peak`)."""

    def __init__(self):
        super().__init__()
        self.live_bytes = 0
        self.peak_bytes = 0
        self._sizes: dict[int, int] = {}

    def track(self, tensor: torch.Tensor) -> None:
        """Count `tensor`'s storage as live (once) until it is freed."""
        storage = tensor.untyped_storage()
        key = storage._cdata
        if key in self._sizes:
            return
        nbytes = storage.nbytes()
        self._sizes[key] = nbytes
        self.live_bytes += nbytes
        self.peak_bytes = max(self.peak_bytes, self.live_bytes)
        weakref.finalize(storage, self._release, key)

    def track_module(self, module: torch.nn.Module) -> None:
        for tensor in (*module.parameters(), *module.buffers()):
            self.track(tensor)

    def reset_peak(self) -> None:
        self.peak_bytes = self.live_bytes

    def _release(self, key: int) -> None:
        self.live_bytes -= self._sizes.pop(key, 0)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        tree_map_only(torch.Tensor, self.track, out)
        return out
