"""FLOPs and bytes moved per operator of one forward, recorded during the meta-tensor trace.

A TorchDispatchMode (the mechanism of torch's own FlopCounterMode, torch/utils/flop_counter.py) sees
every aten op, and the suite's custom ops, that the forward dispatches after autograd's
decompositions: one record per kernel an eager device launches. Per op:

- FLOPs: torch's registered formula for the op (`torch.utils.flop_counter.flop_registry`: mm, addmm,
  bmm, convolution, sdpa, ...), including the custom ops' own (the selective scan's 9·B·L·E·N,
  models/scan/op.py; the causal conv's, models/scan/causal_conv.py; fused attention's,
  bench/estimate/fused_attention.py). Ops without a formula (elementwise, norms, softmax) count 0:
  they are bandwidth-bound on every device, which is how the roofline model treats them.
- bytes: every tensor input's elements as viewed (a broadcast dimension, stride 0, counts once) plus
  every output's elements, times the element size. A kernel reads its inputs and writes its outputs
  once. That is what eager attention does (the scores and the probabilities go through memory as
  tensors of their own: the score matmul writes them, softmax reads and writes, the value matmul
  reads them) and what fused attention and the fused scans do (inputs in, output out; their
  intermediates stay on chip). Caches are not modelled: a tensor read twice counts twice.
- a category, for the roofline's efficiency factors and the report's breakdown: `gemm` (matmuls and
  the ops inside an nn.Linear), `attention` (fused attention, and everything inside an attention
  module that is not one of its linear projections: the score matmuls, softmax, scaling, the
  head-splitting copies), `scan` (the selective scan), `conv` (convolutions, the causal conv1d) and
  `elementwise` (the rest: norms, activations, additions, copies).

Views and metadata ops (view, transpose, expand, size, ...) and allocations (empty) move nothing and
launch nothing: they are not recorded.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from dataclasses import asdict, dataclass

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import flop_registry

CATEGORIES = ("gemm", "attention", "scan", "conv", "elementwise")

_GEMM = {"mm", "addmm", "bmm", "baddbmm", "addbmm", "matmul", "linear", "_scaled_mm"}
_CONV = {"convolution", "_convolution", "cudnn_convolution", "convolution_overrideable", "_slow_conv2d_forward",
         "causal_conv1d_silu"}
_SCAN = {"selective_scan"}
FUSED_ATTENTION_OPS = {"fused_attention", "_scaled_dot_product_flash_attention", "_scaled_dot_product_efficient_attention",
              "_scaled_dot_product_cudnn_attention", "_flash_attention_forward", "_efficient_attention_forward",
              "_scaled_dot_product_flash_attention_for_cpu"}
# Ops that are neither views by their schema nor work: shape-only results and allocations.
_NO_WORK = {"_unsafe_view", "empty", "empty_like", "new_empty", "empty_strided", "new_empty_strided", "detach",
            "lift_fresh", "_reshape_alias", "alias", "is_same_size", "size", "sym_size", "stride", "sym_stride",
            "storage_offset", "sym_storage_offset", "numel", "sym_numel", "dim", "is_contiguous",
            "sym_is_contiguous", "is_strides_like_format", "is_non_overlapping_and_dense", "layout", "device",
            "_local_scalar_dense", "set_"}
# In-place ops that overwrite their first argument without reading it.
_OVERWRITE_FIRST = {"copy_", "fill_", "zero_", "normal_", "uniform_", "bernoulli_", "random_"}


@dataclass(frozen=True)
class OpRecord:
    """One kernel of the forward: what it computes and what it moves through memory."""

    op: str  # namespace::name, e.g. aten::bmm, ssamba_bench::selective_scan
    category: str
    flops: int
    bytes_read: int
    bytes_written: int

    @property
    def bytes(self) -> int:
        return self.bytes_read + self.bytes_written


def viewed_bytes(t: torch.Tensor) -> int:
    """Bytes of the elements a view reaches: numel x element size, a broadcast (stride-0) dimension once."""
    if t.numel() == 0:
        return 0
    n = 1
    for size, stride in zip(t.shape, t.stride()):
        if stride != 0:
            n *= size
    return n * t.element_size()


def _tensors(tree) -> list[torch.Tensor]:
    return [x for x in tree_flatten(tree)[0] if isinstance(x, torch.Tensor)]


def _is_attention_module(module: torch.nn.Module) -> bool:
    # timm's Attention (SSAST) and anything named like it; `fused_attn` is timm's switch between kernels.
    return "Attention" in type(module).__name__ or hasattr(module, "fused_attn")


def categorize(name: str, in_linear: bool, in_attention: bool) -> str:
    """The roofline category of op `name` (without namespace), given the modules it runs inside."""
    if name in _SCAN:
        return "scan"
    if name in FUSED_ATTENTION_OPS:
        return "attention"
    if name in _CONV:
        return "conv"
    if in_linear:
        return "gemm"
    if in_attention:
        return "attention"
    return "gemm" if name in _GEMM else "elementwise"


class OpTrace(TorchDispatchMode):
    """Records an OpRecord per kernel while active (use with `module_context()` for the categories)."""

    def __init__(self):
        super().__init__()
        self.ops: list[OpRecord] = []
        self.linear_depth = 0
        self.attention_depth = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if not isinstance(func, torch._ops.OpOverload):
            return out
        name = func._opname
        if func.is_view or name in _NO_WORK:
            return out
        formula = flop_registry.get(func._overloadpacket)
        flops = int(formula(*args, **kwargs, out_val=out)) if formula is not None else 0
        inputs = _tensors((args[1:] if name in _OVERWRITE_FIRST else args, kwargs))
        read = sum(viewed_bytes(t) for t in inputs)
        written = sum(t.numel() * t.element_size() for t in _tensors(out))
        if flops == 0 and read == 0 and written == 0:
            return out
        category = categorize(name, self.linear_depth > 0, self.attention_depth > 0)
        self.ops.append(OpRecord(f"{func._namespace}::{name}", category, flops, read, written))
        return out

    @contextlib.contextmanager
    def module_context(self):
        """Track whether ops run inside an nn.Linear or an attention module (global module hooks, removed
        afterwards; they only count depths)."""
        from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook

        def enter(module, args):
            self.linear_depth += isinstance(module, torch.nn.Linear)
            self.attention_depth += _is_attention_module(module)

        def leave(module, args, output):
            self.linear_depth -= isinstance(module, torch.nn.Linear)
            self.attention_depth -= _is_attention_module(module)

        handles = [register_module_forward_pre_hook(enter), register_module_forward_hook(leave, always_call=True)]
        try:
            yield self
        finally:
            for h in handles:
                h.remove()


def by_category(ops: list[OpRecord]) -> dict[str, dict]:
    """Per category: kernels, FLOPs, bytes read and written (every category present, zeros included)."""
    out = {c: {"kernels": 0, "flops": 0, "bytes_read": 0, "bytes_written": 0} for c in CATEGORIES}
    for r in ops:
        row = out[r.category]
        row["kernels"] += 1
        row["flops"] += r.flops
        row["bytes_read"] += r.bytes_read
        row["bytes_written"] += r.bytes_written
    return out


def grouped(ops: list[OpRecord]) -> list[dict]:
    """Identical kernels merged, with their count (a 24-block model repeats each block's kernels): the
    per-op list `estimate --json` prints, in order of first appearance."""
    counts = Counter(ops)
    seen, out = set(), []
    for r in ops:
        if r in seen:
            continue
        seen.add(r)
        out.append({**asdict(r), "count": counts[r]})
    return out
