"""Predictions without a GPU: FLOPs, bytes moved and peak device memory of one forward, and peak memory
and FLOPs of one training step, from meta-tensor traces; latency on any device of the table
(roofline.py, devices.toml, fitted.json).

`estimate(model, n_tokens, ...)` (bench/estimate/trace.py), `estimate_train` (train_trace.py) and
`case_metrics` (case_metrics.py), the sweep's default extra-metric producer: run.json files name it
`bench.estimate:case_metrics`, so it stays importable under that name. fused_attention.py makes fused
attention one countable op (forward and backward) in the traces.
"""

from bench.estimate.case_metrics import case_metrics
from bench.estimate.trace import estimate
from bench.estimate.train_trace import estimate_train

__all__ = ["case_metrics", "estimate", "estimate_train"]
