"""Predictions without a GPU: FLOPs, bytes moved and peak device memory of one forward, from a meta-tensor
trace, and its latency on any device of the table (roofline.py, devices.toml, fitted.json).

`estimate(model, n_tokens, ...)` (bench/estimate/trace.py) and `case_metrics`, the sweep's default
extra-metric producer: run.json files name it `bench.estimate:case_metrics`, so it stays importable
under that name. fused_attention.py makes fused attention one countable op in the trace.
"""

from bench.estimate.trace import case_metrics, estimate

__all__ = ["case_metrics", "estimate"]
