"""Predict the peak memory and FLOPs of one training step, on meta tensors, for any token count, on a CPU.

The `train` protocol's own step (bench/measure/train_step.py: forward, cross-entropy, zero_grad,
backward, Adam) runs on the meta device under the same live-tensor counter that measures
`tensor_bytes` on CPU, after one untraced step (so that, as in every measured step after the first,
the previous gradients and Adam's two moments exist). The peak is therefore

    weights + buffers + gradients + Adam state + batch + the largest set of tensors alive at once

where the tensors alive include everything autograd saves for the backward. Kernel semantics:
  - eager attention saves its (B, H, N, N) softmax for the backward (quadratic in tokens);
  - fused attention (`sdpa`) saves q, k, v, its output and a float32 log-sum-exp, as flash kernels do
    (bench/estimate/fused_attention.py);
  - the selective scan is the C++ kernel's op (forward and backward allocate only outputs and input
    gradients, as mamba-ssm's fused kernels do);
  - `target="cpu"` traces the Mamba mixer as it runs on a CPU (the fused conv + SiLU and reversed-scan
    path, models/scan/causal_conv.py); `target="cuda"` the authors' op-by-op sequence, as it runs on a
    GPU (flips, conv1d, SiLU as separate ops). A model built with fused_mixer=False is traced op by op.
Not modelled, as for inference: allocator caching and rounding, library workspaces, the CUDA context;
and on CUDA without mamba-ssm the suite's scan backward recomputes the forward in chunks, whose
transient memory this fused-kernel prediction leaves out.
"""

from __future__ import annotations

from torch.utils.flop_counter import FlopCounterMode

from bench.estimate.fused_attention import sdpa_as_fused_op
from bench.estimate.trace import meta_model_and_input, too_large_for_any_device
from bench.measure.memory import measure_tensor_bytes, model_tensors
from bench.measure.train_step import make_train_step
from models.errors import UserInputError

TARGETS = ("cpu", "cuda")


def estimate_train(model: str, n_tokens: int, batch: int = 1, dtype: str = "float32", *, attn_impl: str | None = None,
                   scan_impl: str | None = None, target: str = "cuda", fstride: int = 16, tstride: int = 16,
                   frames: int | None = None, options: dict | None = None) -> dict:
    """Peak memory and FLOPs of one training step of `model` at `n_tokens` (or exactly `frames`), as it
    runs on `target` (module docstring). `scan_impl` is accepted for symmetry with `estimate`: the scan
    is always predicted as a fused kernel."""
    if target not in TARGETS:
        raise UserInputError(f"unknown target {target!r} for a training prediction; choose one of {', '.join(TARGETS)}")
    probe, _ = meta_model_and_input(model, n_tokens, 1, dtype, attn_impl=attn_impl, frames=frames,
                                    fstride=fstride, tstride=tstride, options=options)
    options = dict(options or {})
    if probe.scan_impl is not None:
        scan_impl = "cpu_cpp"  # fused-kernel semantics; on meta it also selects the CPU mixer path
        if target == "cuda" and any(hasattr(m, "fused_mixer") for m in probe.modules()):
            options["fused_mixer"] = False
    net, x = meta_model_and_input(model, n_tokens, batch, dtype, attn_impl=attn_impl, scan_impl=scan_impl,
                                  fstride=fstride, tstride=tstride, frames=frames, options=options)
    weights_bytes = sum(t.untyped_storage().nbytes() for t in model_tensors(net))
    train = make_train_step(net, x)
    flop_counter = FlopCounterMode(display=False)
    with too_large_for_any_device(model, n_tokens, batch), sdpa_as_fused_op():
        # The first step, run for real on meta tensors: it leaves what every later step starts with
        # (gradients, Adam's moments, and whatever the forward keeps between calls; making only the first
        # two by hand predicted 0.5-1% less than measured on CPU).
        train.step()
        with flop_counter:
            resident_bytes, peak_bytes = measure_tensor_bytes(train.step, train.live_tensors(), device_type="meta")
    info = net.describe()
    return {
        "model": model,
        **info,
        "batch": batch,
        "dtype": dtype,
        "target": target,
        "scan_impl": info["scan_impl"] and "fused",
        "flops": int(flop_counter.get_total_flops()),
        "peak_mem_bytes": int(peak_bytes),
        "weights_bytes": int(weights_bytes),
        "resident_bytes": int(resident_bytes),  # weights, gradients, Adam state, batch: alive between steps
        "activation_peak_bytes": int(peak_bytes - resident_bytes),
        "method": f"meta-tensor training step ({target} kernels): FlopCounterMode + live storage bytes "
                  f"(bench/estimate/train_trace.py)",
    }
