"""Adapter to mamba-ssm's fused CUDA selective scan (`selective_scan_fn`, state-spaces/mamba).

mamba-ssm is optional: it is imported lazily, only when a CUDA tensor asks for it, and any failure
to import it (not installed, a CUDA/ABI mismatch, ...) means "unavailable", never an ImportError.
Vim's fork used by SSAMBA keeps the same `selective_scan_fn` signature. Two places are looked in,
in order: the installed mamba_ssm package (`pip install -e .[cuda]`), then the bare compiled kernel
that scripts/mamba_kernel.py builds from mamba-ssm's source distribution, in the folder named by
SSAMBA_BENCH_MAMBA_KERNEL (mamba_extension.py calls it as mamba-ssm does). `mamba_scan_source()`
says which one runs; every benchmark's environment record carries it.

The kernel function is looked up through `mamba_scan_fn()`; tests replace it with
`use_mamba_scan_fn(selective_scan_reference)` (same signature) to check the wiring on CPU.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Callable, Iterator

import torch

from models.scan.mamba_extension import ENV_VAR, extension_scan_fn, load_extension, unit_stride

_MISSING = object()
_fn: object = _MISSING  # the kernel in use: a callable, None (unavailable) or not looked up yet
_source = "not looked up"


def mamba_scan_fn() -> Callable | None:
    """mamba-ssm's `selective_scan_fn` (package, else the built extension), or None if neither imports."""
    global _fn, _source
    if _fn is _MISSING:
        _fn, _source = _look_up()
    return _fn  # type: ignore[return-value]


def mamba_scan_source() -> str:
    """Which mamba-ssm kernel `mamba_scan_fn()` runs, in words ("unavailable: ..." when none)."""
    mamba_scan_fn()
    return _source


def _look_up() -> tuple[Callable | None, str]:
    reasons = []
    try:
        from mamba_ssm import __version__
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
        return selective_scan_fn, f"mamba_ssm package {__version__}"
    except Exception as err:  # ImportError, or OSError/RuntimeError from a broken CUDA build
        reasons.append(f"mamba_ssm package: {type(err).__name__}: {err}")
    folder = os.environ.get(ENV_VAR, "")
    if folder:
        try:
            module = load_extension(folder)
            fn = extension_scan_fn(module)
            return fn, fn.source
        except Exception as err:
            reasons.append(f"{ENV_VAR}={folder}: {type(err).__name__}: {err}")
    else:
        reasons.append(f"{ENV_VAR} not set")
    return None, "unavailable (" + "; ".join(reasons) + ")"


def mamba_ssm_available(device: torch.device | str = "cuda") -> bool:
    """Whether mamba-ssm's kernel can run on `device` (a CUDA device with mamba-ssm importable)."""
    return torch.device(device).type == "cuda" and mamba_scan_fn() is not None


@contextlib.contextmanager
def use_mamba_scan_fn(fn: Callable | None) -> Iterator[None]:
    """Use `fn` in place of mamba-ssm's `selective_scan_fn` inside the block (for tests)."""
    global _fn, _source
    previous, _fn = (_fn, _source), fn
    _source = f"replaced by {getattr(fn, '__name__', fn)}"
    try:
        yield
    finally:
        _fn, _source = previous


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
