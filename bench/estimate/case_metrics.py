"""The sweep's default extra-metric producer: each case's predictions beside its measurements.

`case_metrics(model, inputs, case)` (named `bench.estimate:case_metrics` in configs and run.json) adds
to every case the FLOPs and the predicted peak memory of what the case measured: one inference forward
(bench/estimate/trace.py, with its bytes moved) or, for the `train` protocol, one training step as it
runs on the case's device (bench/estimate/train_trace.py). So every results table holds measured and
predicted memory side by side. Under autocast (`amp`) only the FLOPs are given: the meta device has
no autocast, so the traces cannot know which tensors autocast keeps in which precision, and a memory
prediction of the float32 program would be presented beside a measurement of another one.
"""

from __future__ import annotations

from bench.estimate.trace import estimate
from bench.estimate.train_trace import estimate_train


def case_metrics(model, inputs, case) -> list[dict]:
    options = dict(getattr(case, "options", ()))
    rows = _train_metrics(case, options) if case.protocol == "train" else _inference_metrics(case, options)
    if getattr(case, "amp", "none") != "none":
        return [{**r, "method": f"{r['method']} (the float32 program's count: FLOPs do not depend on autocast)"}
                for r in rows if r["metric"] == "flops"]
    return rows


def _train_metrics(case, options: dict) -> list[dict]:
    target = "cuda" if case.device.startswith("cuda") else "cpu"
    est = estimate_train(case.model, case.n_tokens, case.batch, case.dtype, attn_impl=case.attn_impl,
                         scan_impl=case.scan_impl, frames=case.frames, options=options, target=target)
    how = f"one training step ({target} kernels) on meta tensors (bench/estimate/train_trace.py)"
    return [
        {"metric": "flops", "stat": "value", "value": est["flops"], "unit": "flop",
         "method": f"FlopCounterMode, forward + backward, {how}"},
        {"metric": "predicted_peak_mem_bytes", "stat": "tensor_bytes", "value": est["peak_mem_bytes"],
         "unit": "bytes", "method": f"live tensor bytes incl. gradients and Adam state, {how}"},
    ]


def _inference_metrics(case, options: dict) -> list[dict]:
    est = estimate(case.model, case.n_tokens, case.batch, case.dtype, attn_impl=case.attn_impl,
                   scan_impl=case.scan_impl, frames=case.frames, options=options)
    how = "predicted on meta tensors (bench/estimate/trace.py)"
    return [
        {"metric": "flops", "stat": "value", "value": est["flops"], "unit": "flop", "method": f"FlopCounterMode, {how}"},
        {"metric": "bytes_moved", "stat": "value", "value": est["bytes_moved"], "unit": "bytes",
         "method": f"bytes read + written per kernel (bench/estimate/bytes_moved.py), {how}"},
        {"metric": "predicted_peak_mem_bytes", "stat": "tensor_bytes", "value": est["peak_mem_bytes"], "unit": "bytes",
         "method": f"live tensor bytes, fused scan/attention semantics, {how}"},
    ]
