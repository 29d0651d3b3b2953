"""Predict FLOPs, bytes moved and peak device memory of one forward, on meta tensors, for any token count, on a CPU.

The model is built on PyTorch's meta device (shapes only: no memory, no initialisation cost) and run
once under two dispatch modes: torch's FlopCounterMode (the selective scan and fused attention are
custom ops with FLOP formulas, so they are counted like matmuls) and the harness's own live-tensor
counter (bench/measure/memory.py `measure_tensor_bytes`, the very code that measures `tensor_bytes` on
CPU), which adds up the bytes of every live tensor storage. The predicted peak is therefore:

    weights + buffers + input + the largest set of intermediate tensors alive at once

under inference semantics (no autograd graph), as `torch.cuda.max_memory_allocated()` reports after a
reset with the model and input already on the device (the paper's protocol). Kernel semantics:
  - eager attention materialises the (B, H, N, N) scores and their softmax (two buffers at once);
  - fused attention (`sdpa`) allocates only its output and a float32 log-sum-exp per query;
  - the selective scan is predicted as a fused kernel (mamba-ssm, or the suite's C++ CPU kernel):
    only its output (B, E, L); the reference and chunked PyTorch scans allocate far more.
Not modelled: allocator rounding and caching (CUDA's reserved memory), cuBLAS/cuDNN workspaces, and
the CUDA context itself, which `max_memory_allocated` does not count either.

The same pass records every kernel's FLOPs and bytes read + written under the same kernel semantics
(bench/estimate/bytes_moved.py): the input of the roofline latency model (bench/estimate/roofline.py).
"""

from __future__ import annotations

import contextlib

import torch
from torch.utils.flop_counter import FlopCounterMode

from bench.common.vocabulary import ESTIMATE_DTYPES
from bench.estimate.bytes_moved import OpTrace, by_category, grouped
from bench.estimate.fused_attention import sdpa_as_fused_op
from bench.measure.memory import measure_tensor_bytes, model_tensors
from models.errors import UserInputError
from models.registry import create_model
from models.tokenizer import PatchGrid


def resolve_dtype(name: str) -> torch.dtype:
    if name not in ESTIMATE_DTYPES:
        raise UserInputError(f"unknown dtype {name!r}; choose one of {', '.join(ESTIMATE_DTYPES)}")
    return getattr(torch, name)


def meta_model_and_input(model: str, n_tokens: int, batch: int, dtype: str, *, attn_impl: str | None = None,
                         scan_impl: str | None = None, fstride: int = 16, tstride: int = 16, frames: int | None = None,
                         options: dict | None = None):
    """`model` built on the meta device in `dtype` at `n_tokens` (or exactly `frames`), and a meta input
    batch for it: shapes only, no memory, no initialisation cost."""
    if batch < 1:
        raise UserInputError(f"batch must be at least 1, got {batch}")
    if frames is None:
        frames = PatchGrid(fstride=fstride, tstride=tstride).frames_for_tokens(n_tokens)
    torch_dtype = resolve_dtype(dtype)
    with torch.device("meta"):
        net = create_model(model, input_frames=frames, fstride=fstride, tstride=tstride,
                           attn_impl=attn_impl, scan_impl=scan_impl, **(options or {})).to(torch_dtype)
        x = torch.empty(batch, frames, net.grid.n_mels, dtype=torch_dtype)
    return net, x


@contextlib.contextmanager
def too_large_for_any_device(model: str, n_tokens: int, batch: int):
    """A trace whose tensors overflow 64-bit sizes becomes one clear UserInputError."""
    try:
        yield
    except RuntimeError as err:
        if "overflow" not in str(err):
            raise
        # e.g. eager attention's (B, H, N, N) scores past 2^63 elements: no device could hold them
        raise UserInputError(f"{model} at {n_tokens} tokens, batch {batch}: a tensor of the forward would have "
                             f"more than 2^63 bytes; no device holds it (ask for fewer tokens)") from None


def estimate(model: str, n_tokens: int, batch: int = 1, dtype: str = "float32", *, attn_impl: str | None = None,
             scan_impl: str | None = None, fstride: int = 16, tstride: int = 16, frames: int | None = None,
             options: dict | None = None, ops: bool = False) -> dict:
    """FLOPs, bytes moved and predicted peak memory of one no-grad forward of `model` at `n_tokens` patch
    tokens (or at exactly `frames` fbank frames when given); `options` go to the model's constructor
    (e.g. {"mixer": "bi_bi"} for AuM). With `ops`, the result also holds the kernels themselves:
    `op_records` (OpRecord objects, for the roofline model) and `ops` (identical kernels merged, JSON)."""
    net, x = meta_model_and_input(model, n_tokens, batch, dtype, attn_impl=attn_impl, scan_impl=scan_impl,
                                  fstride=fstride, tstride=tstride, frames=frames, options=options)
    net.eval()
    weights_bytes = sum(t.untyped_storage().nbytes() for t in model_tensors(net))
    flop_counter = FlopCounterMode(display=False)
    op_trace = OpTrace()

    def forward():
        # innermost mode: it sees each op as dispatched, before FlopCounterMode decomposes anything
        with op_trace.module_context(), op_trace:
            return net(x)

    with too_large_for_any_device(model, n_tokens, batch), torch.no_grad(), sdpa_as_fused_op(), flop_counter:
        resident_bytes, peak_bytes = measure_tensor_bytes(forward, model_tensors(net, x), device_type="meta")
    info = net.describe()
    records = op_trace.ops
    extra = {"op_records": records, "ops": grouped(records)} if ops else {}
    return {
        "model": model,
        **info,
        "batch": batch,
        "dtype": dtype,
        "scan_impl": info["scan_impl"] and "fused",
        "flops": int(flop_counter.get_total_flops()),
        "peak_mem_bytes": int(peak_bytes),
        "weights_bytes": int(weights_bytes),
        "input_bytes": int(resident_bytes - weights_bytes),
        "activation_peak_bytes": int(peak_bytes - resident_bytes),
        "bytes_moved": sum(r.bytes for r in records),
        "kernels": len(records),
        "by_category": by_category(records),
        "method": "meta-tensor forward: FlopCounterMode + live storage bytes + per-kernel bytes (bench/estimate/trace.py)",
        **extra,
    }

