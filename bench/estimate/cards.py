"""Predicted latency of traced forwards on every card of the device table: the claims report's per-card view.

Input: results of `estimate(..., ops=True)` (bench/estimate/trace.py), e.g. SSAST-tiny eager and sdpa and
SSAMBA-tiny at the paper's point. Output per card: each model's predicted latency, what bounds it
(compute, bandwidth or launch overhead, and the category that takes most of the time), whether its
predicted peak memory fits the card, and each non-SSAST model's predicted reduction against each SSAST
kernel (1 - new/old). Parameters: the GPU set of bench/estimate/fitted.json (fitted on H100 rows, where
SSAMBA ran the suite's Triton scan); a model with a scan is also predicted with the scan as efficient as
the elementwise kernels (a what-if for a fused scan such as mamba-ssm's, which the paper used).
"""

from __future__ import annotations

from bench.estimate.devices import device, gpu_names
from bench.estimate.fit import fitted
from bench.estimate.roofline import Workload, predict

REFERENCE_FAMILY = "ssast"


def _label(est: dict, variant: str | None = None) -> str:
    impl = est["attn_impl"] or variant
    return f"{est['model']} ({impl})" if impl else est["model"]


def predict_cards(traces: list[dict], dtype: str = "float32") -> dict:
    gpu = fitted()["gpu"]
    # What-if for models with a scan: the scan as efficient as the elementwise kernels (a fused,
    # bandwidth-bound scan such as mamba-ssm's) instead of the Triton scan the H100 rows measured.
    efficient_scan = {**gpu["params"], "scan": gpu["params"]["other_bandwidth"]}
    variants = []
    for est in traces:
        work = Workload.from_records(est["op_records"])
        variants.append((est, work, _label(est), gpu["params"]))
        if est["by_category"]["scan"]["kernels"]:
            variants.append((est, work, _label(est, "efficient scan, what-if"), efficient_scan))
    cards = []
    for key in gpu_names():
        dev = device(key)
        models = []
        for est, work, label, params in variants:
            p = predict(work, dev, params, dtype)
            top = max(p["by_category"].items(), key=lambda kv: kv[1]["time_s"])
            models.append({"label": label, "model": est["model"], "family": est["family"],
                           "attn_impl": est["attn_impl"], "latency_s": p["latency_s"], "bound": p["bound"],
                           "top_category": top[0], "top_share": top[1]["time_s"] / p["latency_s"],
                           "top_bound": top[1]["bound"],
                           "fits_in_memory": dev.memory_bytes is None or est["peak_mem_bytes"] <= dev.memory_bytes})
        models.sort(key=lambda m: m["family"] != REFERENCE_FAMILY)  # SSAST's kernels first
        refs = [m for m in models if m["family"] == REFERENCE_FAMILY]
        reductions = [{"label": m["label"], "vs_attn_impl": r["attn_impl"],
                       "reduction": 1 - m["latency_s"] / r["latency_s"], "speedup": r["latency_s"] / m["latency_s"],
                       "fits_in_memory": m["fits_in_memory"] and r["fits_in_memory"]}
                      for m in models if m["family"] != REFERENCE_FAMILY for r in refs]
        cards.append({"device": key, "device_name": dev.name, "fp32_flops": dev.fp32_flops,
                      "bandwidth": dev.bandwidth, "memory_bytes": dev.memory_bytes, "models": models,
                      "reductions": reductions})
    return {"method": "per-kernel roofline over datasheet peaks (bench/estimate/roofline.py), efficiencies fitted "
                      f"on {gpu['n_rows']} measured {gpu['fitted_on']} rows (bench/estimate/fitted.json); the scan "
                      "as the suite's Triton scan ran there (~5% of bandwidth); 'efficient scan, what-if': the scan "
                      "as efficient as the elementwise kernels, like a fused kernel such as mamba-ssm's",
            "dtype": dtype, "params": gpu["params"], "cards": cards}
