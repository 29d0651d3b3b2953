"""Adapter to mamba-ssm's fused CUDA selective scan (`selective_scan_fn`, state-spaces/mamba).

mamba-ssm is optional: it is imported lazily, only when a CUDA tensor asks for it, and any failure
to import it (not installed, a CUDA/ABI mismatch, ...) means "unavailable", never an ImportError.
Vim's fork used by SSAMBA keeps the same `selective_scan_fn` signature.

The kernel function is looked up through `mamba_scan_fn()`; tests replace it with
`use_mamba_scan_fn(selective_scan_reference)` (same signature) to check the wiring on CPU.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator

import torch

_MISSING = object()
_fn: object = _MISSING  # the kernel in use: a callable, None (unavailable) or not looked up yet


def mamba_scan_fn() -> Callable | None:
    """mamba-ssm's `selective_scan_fn`, or None if mamba-ssm cannot be imported."""
    global _fn
    if _fn is _MISSING:
        try:
            from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
        except Exception:  # ImportError, or OSError/RuntimeError from a broken CUDA build
            selective_scan_fn = None
        _fn = selective_scan_fn
    return _fn  # type: ignore[return-value]


def mamba_ssm_available(device: torch.device | str = "cuda") -> bool:
    """Whether mamba-ssm's kernel can run on `device` (a CUDA device with mamba-ssm importable)."""
    return torch.device(device).type == "cuda" and mamba_scan_fn() is not None


@contextlib.contextmanager
def use_mamba_scan_fn(fn: Callable | None) -> Iterator[None]:
    """Use `fn` in place of mamba-ssm's `selective_scan_fn` inside the block (for tests)."""
    global _fn
    previous, _fn = _fn, fn
    try:
        yield
    finally:
        _fn = previous


def selective_scan_mamba(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    """Call mamba-ssm's kernel with inputs in the form it requires; shapes as reference.py.

    The CUDA kernel wants unit stride along L for u, delta, z, B and C, and float32 A, D and
    delta_bias whatever the activation dtype; it has no float64 path, so float64 inputs go to the
    chunked scan instead (with a warning).
    """
    fn = mamba_scan_fn()
    if fn is None:
        raise RuntimeError("mamba-ssm is not importable; use another scan backend")
    if u.dtype == torch.float64:
        from models.scan.chunked import selective_scan_chunked

        warnings.warn("mamba-ssm has no float64 kernel; using the chunked scan", RuntimeWarning, stacklevel=2)
        return selective_scan_chunked(u, delta, A, B, C, D, z, delta_bias, delta_softplus)

    def unit_stride(t):
        return t if t is None or t.stride(-1) == 1 else t.contiguous()

    def fp32(t):
        return None if t is None else t.float().contiguous()

    return fn(
        unit_stride(u),
        unit_stride(delta),
        fp32(A),
        unit_stride(B),
        unit_stride(C),
        fp32(D),
        unit_stride(z),
        fp32(delta_bias),
        delta_softplus,
    )
