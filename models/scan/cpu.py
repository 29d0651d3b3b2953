"""The C++ CPU kernels (csrc/): lazy build, and Python wrappers of the fused selective scan.

One extension holds the selective scan (csrc/selective_scan_cpu.cpp) and the causal conv1d + SiLU
of the Mamba mixer's input side (csrc/causal_conv1d_cpu.cpp, wrapped in causal_conv.py); both share
csrc/cpu_kernel_common.h. The extension is compiled by `torch.utils.cpp_extension.load` (g++ and ninja) on first use, never at
import, with -O3 -march=native and OpenMP (then without -march=native if that fails), and cached
by torch under $TORCH_EXTENSIONS_DIR (default ~/.cache/torch_extensions): tens of seconds once,
then a fraction of a second. The build name carries a hash of the CPU's feature flags, so a cache
shared between different machines never loads code built for another instruction set, and a hash
of the sources (torch's own check does not see the header). A failed
build is a warning, not an error: `cpu_ext_available()` turns False and callers fall back to the
chunked PyTorch scan. Set SSAMBA_SCAN_NO_CPP=1 to skip the build altogether.

Threads: the kernel splits (batch, channel) runs over torch's intra-op pool, so it follows
`torch.set_num_threads`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
import threading
import warnings
from pathlib import Path

import torch

_CSRC = Path(__file__).with_name("csrc")
_SOURCES = (_CSRC / "selective_scan_cpu.cpp", _CSRC / "causal_conv1d_cpu.cpp")
_HEADERS = (_CSRC / "cpu_kernel_common.h",)
# Build attempts, best first: tuned for this CPU, then portable (a compiler without -march=native).
_FLAG_SETS = (("native", ["-O3", "-march=native", "-fopenmp"]), ("generic", ["-O3", "-fopenmp"]))

_lock = threading.Lock()
_state: dict[str, object] = {}  # "ok": bool once a build was attempted, "error": str on failure


def _cpu_tag() -> str:
    """A short hash of this CPU's instruction-set flags (the native build uses -march=native)."""
    text = platform.machine() + platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            text += next((line for line in f if line.startswith(("flags", "Features"))), "")
    except OSError:
        pass
    return hashlib.sha1(text.encode()).hexdigest()[:10]


def _source_tag() -> str:
    """A short hash of the kernel sources, header included."""
    digest = hashlib.sha1()
    for path in (*_SOURCES, *_HEADERS):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:8]


def _build() -> None:
    """Compile (or load the cached build of) the extension; registers torch.ops.ssamba_scan_cpu."""
    # Importing cpp_extension logs a CUDA_HOME notice on CUDA builds of torch without a CUDA
    # runtime; it is irrelevant to a CPU-only extension.
    logger = logging.getLogger("torch.utils.cpp_extension")
    level = logger.level
    logger.setLevel(logging.ERROR)
    errors = []
    try:
        from torch.utils import cpp_extension

        for label, cflags in _FLAG_SETS:
            try:
                cpp_extension.load(
                    name=f"ssamba_scan_cpu_{label}_{_cpu_tag()}_{_source_tag()}",
                    sources=[str(p) for p in _SOURCES],
                    extra_include_paths=[str(_CSRC)],
                    extra_cflags=cflags,
                    extra_ldflags=["-fopenmp"],
                    is_python_module=False,
                    verbose=False,
                )
                return
            except Exception as err:
                errors.append(f"{label} build: {type(err).__name__}: {err}")
    finally:
        logger.setLevel(level)
    raise RuntimeError("; ".join(errors))


def cpu_ext_available() -> bool:
    """Whether the C++ kernel is usable, building it on the first call (tens of seconds, cached)."""
    if "ok" not in _state:
        with _lock:
            if "ok" not in _state:
                if os.environ.get("SSAMBA_SCAN_NO_CPP", "") not in ("", "0"):
                    _state.update(ok=False, error="disabled by SSAMBA_SCAN_NO_CPP")
                else:
                    try:
                        _build()
                        _state["ok"] = True
                    except Exception as err:  # a compiler error, a missing compiler, a bad cache...
                        _state.update(ok=False, error=f"{type(err).__name__}: {err}")
                        warnings.warn(
                            "could not build the C++ CPU selective scan; falling back to the chunked "
                            f"PyTorch scan ({_state['error'][:2000]})",
                            RuntimeWarning,
                            stacklevel=2,
                        )
    return bool(_state["ok"])


def cpu_ext_error() -> str | None:
    """Why the extension is unavailable (None if it is available or was never tried)."""
    return _state.get("error")  # type: ignore[return-value]


def cpu_ops():
    """torch.ops.ssamba_scan_cpu (fwd, bwd, conv_fwd, conv_bwd), building the extension if needed."""
    if not cpu_ext_available():
        raise RuntimeError(f"the C++ CPU selective scan is unavailable: {cpu_ext_error()}")
    return torch.ops.ssamba_scan_cpu


def _compute_dtype(u: torch.Tensor) -> torch.dtype:
    return torch.float64 if u.dtype == torch.float64 else torch.float32


def _is_lanes(t: torch.Tensor) -> bool:
    """Whether a (B, E, L) tensor lies channel-contiguous (unit stride along E, not along L)."""
    return t.shape[2] > 1 and t.stride(2) != 1 and (t.shape[1] <= 1 or t.stride(1) == 1)


def as_lanes(t: torch.Tensor) -> torch.Tensor:
    """(B, E, L) with unit stride along E: `t` itself when it already lies so, else a copy."""
    if t.shape[2] <= 1 or t.shape[1] <= 1 or t.stride(1) == 1:
        return t
    return t.transpose(1, 2).contiguous().transpose(1, 2)


def _seq(t: torch.Tensor, dtype: torch.dtype, reverse: bool = False) -> torch.Tensor:
    """(B, E, L) in `dtype` with unit stride along L or along E: the kernel reads both layouts, so
    the model's channel-contiguous delta and z (transposed Linear outputs) are never copied. A
    reverse scan reads lanes only (it walks L through a negative stride)."""
    t = t.to(dtype)
    if reverse:
        return as_lanes(t)
    if t.shape[2] <= 1 or t.stride(2) == 1 or _is_lanes(t):
        return t
    return t.contiguous()


def output_is_lanes(u: torch.Tensor, z: torch.Tensor | None, reverse: bool = False) -> bool:
    """The kernel's output layout: that of z (the gate), or of u without z; always lanes for a
    reverse scan. In SSAMBA z comes from a transposed Linear, so y is channel-contiguous and
    `out_proj(y.transpose(1, 2))` needs no copy. The op's fake implementation allocates the same layout."""
    return reverse or _is_lanes(z if z is not None else u)  # _seq keeps this layout, or makes rows


def _prepare(u, delta, A, B, C, D, z, delta_bias, reverse=False):
    dtype = _compute_dtype(u)
    if A.is_complex():
        raise NotImplementedError("the C++ CPU selective scan supports real A only")
    B4 = B.unsqueeze(1) if B.dim() == 3 else B  # (B, G, N, L), any strides
    C4 = C.unsqueeze(1) if C.dim() == 3 else C
    return (
        _seq(u, dtype, reverse),
        _seq(delta, dtype, reverse),
        A.to(dtype).contiguous(),
        B4.to(dtype),
        C4.to(dtype),
        None if D is None else D.to(dtype).contiguous(),
        None if z is None else _seq(z, dtype, reverse),
        None if delta_bias is None else delta_bias.to(dtype).contiguous(),
    )


def selective_scan_cpu(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
    return_last_state: bool = False,
    initial_state: torch.Tensor | None = None,
    reverse: bool = False,
    addend: torch.Tensor | None = None,
    out_scale: float = 1.0,
):
    """Forward only (no autograd; `selective_scan(impl="cpu_cpp")` adds it). Shapes as reference.py.
    `reverse` scans from the last step to the first (flip, scan, flip back; no copy is made); the
    result is (addend + y) * out_scale, computed in the kernel's epilogue."""
    args = _prepare(u, delta, A, B, C, D, z, delta_bias, reverse)
    h0 = None if initial_state is None else initial_state.to(args[0].dtype).contiguous()
    if addend is not None:
        addend = _seq(addend, args[0].dtype, reverse)
    y, last = cpu_ops().fwd(*args, delta_softplus, h0, return_last_state, output_is_lanes(u, z, reverse), reverse,
                            addend, out_scale)
    y = y.to(u.dtype)
    return (y, last) if return_last_state else y


def selective_scan_cpu_backward(dout, u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                                reverse=False, out_scale=1.0):
    """Gradients (du, ddelta, dA, dB, dC, dD, dz, ddelta_bias), each shaped and typed like its input
    (None for an absent input), for the loss whose gradient w.r.t. the scan output is `dout`
    (w.r.t. y * out_scale when the forward scaled its output)."""
    args = _prepare(u, delta, A, B, C, D, z, delta_bias, reverse)
    dout = _seq(dout, args[0].dtype, reverse)
    grads = cpu_ops().bwd(dout, *args, delta_softplus, reverse, out_scale)
    originals = (u, delta, A, B, C, D, z, delta_bias)
    return tuple(
        None if x is None else g.reshape(x.shape).to(x.dtype) for g, x in zip(grads, originals)
    )
