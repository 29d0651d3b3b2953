"""Mixed precision as people run it, and which attention kernel it actually ran.

`autocast(device, amp)` is torch.autocast around a measured call (the sweep's `amp` axis: bfloat16 or
float16 on float32 weights; "none" = no autocast), and `grad_scaler` the loss scaler float16 training
needs. `sdpa_backend(call)` runs one call under a dispatch mode and names the fused-attention kernel
that F.scaled_dot_product_attention reached (flash, efficient, cudnn, flash_cpu) or "math", its
unfused fallback, because the backend torch picks depends on device, dtype, shapes and autocast, and
a row that says "sdpa" must say which one ran (bench/common/vocabulary.py SDPA_BACKEND_OPS).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch

from bench.common.vocabulary import SDPA_BACKEND_OPS
from bench.measure.memory import measure_tensor_bytes


def autocast(device: str, amp: str) -> contextlib.AbstractContextManager:
    """torch.autocast for `amp` on `device`'s type; a no-op context for "none"."""
    if amp == "none":
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=getattr(torch, amp))


def grad_scaler(device: str, amp: str) -> torch.amp.GradScaler | None:
    """The loss scaler float16 training needs (bfloat16 has float32's range and needs none)."""
    return torch.amp.GradScaler(torch.device(device).type) if amp == "float16" else None


def sdpa_backend(call: Callable[[], object], uses_sdpa: bool, op_names: set[str] | None = None) -> str | None:
    """The fused-attention kernel one `call` ran; "math" when the model calls SDPA (`uses_sdpa`) but no
    fused kernel ran; None for a model without SDPA. `op_names` already recorded from a call of the
    measurement (the CPU's tensor-bytes call sees every op) spare the extra call."""
    if not uses_sdpa:
        return None
    if not op_names:  # the live-tensor counter records every op a call runs (on any device)
        op_names = set()
        measure_tensor_bytes(call, [], op_names=op_names)
    found = sorted({backend for op, backend in SDPA_BACKEND_OPS.items() if op in op_names})
    return ",".join(found) if found else "math"
