"""mamba-ssm's compiled scan (`selective_scan_cuda`) called without the mamba_ssm package.

scripts/mamba_kernel.py builds only the extension module from mamba-ssm's source distribution (the
package's Python side needs tilelang, quack-kernels and transformers, which a machine without
network cannot install). This module calls that extension exactly as mamba-ssm 2.3.2.post1's
`SelectiveScanFn` does (mamba_ssm/ops/selective_scan_interface.py): unit stride along L, B and C
given a group axis when they have none, `fwd` returning (out, x, out_z), and `bwd` from the saved
(u, delta, A, B, C, D, z, delta_bias, x, out). The kernels are theirs; only this call is ours.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import torch

ENV_VAR = "SSAMBA_BENCH_MAMBA_KERNEL"  # the folder scripts/mamba_kernel.py built selective_scan_cuda*.so in


def load_extension(folder: str | Path) -> ModuleType:
    """Import `selective_scan_cuda` from the file in `folder` (not whatever sys.path finds under that name);
    torch must be imported first, as it loads the libraries the extension links against."""
    folder = Path(folder)
    for suffix in importlib.machinery.all_suffixes():  # the compiled .so, or a .py stand-in (tests)
        path = folder / f"selective_scan_cuda{suffix}"
        if path.is_file():
            spec = importlib.util.spec_from_file_location("selective_scan_cuda", path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            sys.modules["selective_scan_cuda"] = module
            return module
    raise FileNotFoundError(f"no selective_scan_cuda module in {folder}: build it with "
                            f"`python scripts/mamba_kernel.py build`")


def unit_stride(t):
    return t if t is None or t.stride(-1) == 1 else t.contiguous()


class SelectiveScanExtension(torch.autograd.Function):
    """mamba-ssm's SelectiveScanFn with the extension module passed in (not imported at module level)."""

    @staticmethod
    def forward(ctx, module, u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
        u, delta, B, C, z = (unit_stride(t) for t in (u, delta, B, C, z))
        D = None if D is None else D.contiguous()
        ctx.squeeze_B, ctx.squeeze_C = B.dim() == 3, C.dim() == 3
        B = B.unsqueeze(1) if ctx.squeeze_B else B  # "b dstate l -> b 1 dstate l", as theirs
        C = C.unsqueeze(1) if ctx.squeeze_C else C
        out, x, *rest = module.fwd(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
        ctx.module, ctx.delta_softplus, ctx.has_z = module, delta_softplus, z is not None
        ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, x, out if z is not None else None)
        return rest[0] if z is not None else out

    @staticmethod
    def backward(ctx, dout):
        u, delta, A, B, C, D, z, delta_bias, x, out = ctx.saved_tensors
        du, ddelta, dA, dB, dC, dD, ddelta_bias, *rest = ctx.module.bwd(
            u, delta, A, B, C, D, z, delta_bias, unit_stride(dout), x, out, None, ctx.delta_softplus,
            False,  # theirs: the option to recompute out_z, unused
        )
        dB = dB.squeeze(1) if ctx.squeeze_B else dB
        dC = dC.squeeze(1) if ctx.squeeze_C else dC
        return (None, du, ddelta, dA, dB, dC, dD if D is not None else None, rest[0] if ctx.has_z else None,
                ddelta_bias if delta_bias is not None else None, None)


def extension_scan_fn(module: ModuleType) -> Callable:
    """A function with `selective_scan_fn`'s signature running `module`'s kernels."""

    def selective_scan_fn(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
        return SelectiveScanExtension.apply(module, u, delta, A, B, C, D, z, delta_bias, delta_softplus)

    selective_scan_fn.source = f"selective_scan_cuda extension ({getattr(module, '__file__', module)})"
    return selective_scan_fn
