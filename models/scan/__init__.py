"""Selective scan behind one function, whatever computes it.

Every model calls `selective_scan`; the backend (`impl`) is chosen per call and recorded by the model
as `scan_impl` (the concrete name `resolve_scan_impl` returns), so a benchmark row can say which scan
produced it. Backends, all with mamba-ssm's `selective_scan_fn` semantics and autograd:

  - "reference": the sequential PyTorch loop in reference.py (ground truth, O(L) Python steps).
  - "chunked":   two-level chunked PyTorch scan (chunked.py), O(sqrt(L)) Python steps, any device.
  - "cpu_cpp":   fused C++ kernel for CPU (cpu.py, csrc/), built on first use; forward and backward.
  - "mamba_ssm": mamba-ssm's fused CUDA kernel (mamba.py): the installed package's, else the compiled
                 kernel scripts/mamba_kernel.py builds from its sdist; when u is on CUDA.
  - "triton":    fused Triton kernels for CUDA where mamba-ssm is missing: forward (triton_scan.py,
                 triton_scan_chunks.py) and backward (triton_scan_backward.py).

"auto" picks cpu_cpp on CPU and mamba_ssm on CUDA (else triton), and chunked where those are
unavailable (no compiler, no mamba-ssm or Triton, another device). An explicit backend that cannot run on the device falls
back the same way, with a warning. Every call goes through the custom op in op.py, so FlopCounterMode
and fake/meta tensors see the scan as one operator.
"""

from __future__ import annotations

import warnings

import torch

from models.scan.chunked import selective_scan_chunked
from models.scan.cpu import cpu_ext_available, selective_scan_cpu
from models.scan.mamba import mamba_ssm_available, selective_scan_mamba
from models.scan.op import BACKENDS, scan_flops, selective_scan_op
from models.scan.reference import selective_scan_reference
from models.scan.triton_scan import selective_scan_triton, triton_available

SCAN_IMPLS = ("auto", *BACKENDS)

__all__ = [
    "SCAN_IMPLS",
    "resolve_scan_impl",
    "scan_flops",
    "selective_scan",
    "selective_scan_chunked",
    "selective_scan_cpu",
    "selective_scan_mamba",
    "selective_scan_reference",
    "selective_scan_triton",
]

_warned: set[tuple[str, str, str]] = set()


def _auto(device_type: str) -> str:
    if device_type == "cpu":
        return "cpu_cpp" if cpu_ext_available() else "chunked"
    if device_type == "cuda":
        if mamba_ssm_available("cuda"):
            return "mamba_ssm"
        return "triton" if triton_available() else "chunked"
    return "chunked"


def resolve_scan_impl(impl: str, device: torch.device | str = "cpu", needs_grad: bool = False) -> str:
    """The concrete backend name `impl` stands for on this device ("auto" picks the fastest).

    Every backend supports autograd, so `needs_grad` does not change the choice today; it is part of
    the contract for backends that might not. On the meta device nothing runs (the op's fake kernel
    answers), so an explicit name is kept as is there. Resolving "auto" or "cpu_cpp" on a CPU builds
    the C++ kernel if it was not built yet.
    """
    if impl not in SCAN_IMPLS:
        raise ValueError(f"unknown scan_impl {impl!r}; choose one of {', '.join(SCAN_IMPLS)}")
    device_type = torch.device(device).type
    if impl == "auto":
        return _auto(device_type)
    if device_type == "meta":
        return impl
    usable = {
        "cpu_cpp": device_type == "cpu" and cpu_ext_available(),
        "mamba_ssm": mamba_ssm_available(device_type),
        "triton": device_type == "cuda" and triton_available(),
    }.get(impl, True)
    if usable:
        return impl
    fallback = _auto(device_type)
    if (impl, device_type, fallback) not in _warned:
        _warned.add((impl, device_type, fallback))
        warnings.warn(
            f"scan_impl={impl!r} cannot run on {device_type}; using {fallback!r}", RuntimeWarning, stacklevel=2
        )
    return fallback


def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=True, impl="auto",
                   reverse=False, addend=None, out_scale=1.0):
    """mamba-ssm's `selective_scan_fn` semantics: u, delta, z (B, E, L); A (E, N); B, C (B, N, L) or
    (B, G, N, L); D, delta_bias (E,). Returns y (B, E, L) in u's dtype (computed in float32, or
    float64 for float64 inputs). `reverse=True` scans from the last step to the first: the result is
    flip(selective_scan(flipped u, delta, B, C, z)) along L, without the flipped copies on cpu_cpp.
    With `addend` (B, E, L) and `out_scale` the result is (addend + y) * out_scale (fused on cpu_cpp)."""
    needs_grad = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (u, delta, A, B, C, D, z, delta_bias)
    )
    name = resolve_scan_impl(impl, u.device, needs_grad)
    return selective_scan_op(u, delta, A, B, C, D, z, delta_bias, delta_softplus, name, reverse, addend,
                             float(out_scale))
