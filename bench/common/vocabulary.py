"""The words every layer of the suite shares: dtypes, protocols, statuses, stats, memory kinds.

One definition each, standard library only, so the config loader, the result store, the measuring
child, the estimator and the reports agree by construction (docs/results-schema.md lists what each
word means in a results table).
"""

from __future__ import annotations

# --- dtypes ----------------------------------------------------------------------------------------
# Canonical names are torch attribute names (`getattr(torch, name)`); configs also accept the aliases.
SWEEP_DTYPES = ("float32", "float16", "bfloat16")
ESTIMATE_DTYPES = SWEEP_DTYPES + ("float64",)  # the estimator also predicts float64 (tests use it)
DTYPE_ALIASES = {"float32": "float32", "fp32": "float32", "float16": "float16", "fp16": "float16",
                 "half": "float16", "bfloat16": "bfloat16", "bf16": "bfloat16"}


# Autocast (mixed precision as people train and serve with it): the `amp` axis of a sweep, beside the
# pure `dtype` one. "none" = no autocast; otherwise torch.autocast(device, dtype) around the measured call
# (weights stay float32). Canonical names are torch's; configs also accept the dtype aliases.
AMP_MODES = ("none", "bfloat16", "float16")


def amp_name(alias: str) -> str:
    """'bf16' -> 'bfloat16', 'none' -> 'none'."""
    return alias if alias == "none" else DTYPE_ALIASES[alias]


def dtype_name(alias: str) -> str:
    """'fp16' -> 'float16'; a canonical name passes through."""
    return DTYPE_ALIASES[alias]


# --- protocols -------------------------------------------------------------------------------------
PROTOCOLS = ("steady", "paper", "train")  # benchmark protocols (docs/protocols.md); train: training steps
ACCURACY_PROTOCOLS = ("finetune",)  # accuracy rows: no latency, metrics accuracy / macro_f1
# The latency statistic each protocol reports as its headline: the steady protocol's median of warm
# calls; the paper's mean over fresh-model runs, cold run included (what the authors reported); the
# train protocol's median of warm training steps.
HEADLINE_STAT = {"steady": "median", "paper": "mean", "train": "median"}
# Protocols whose rows describe inference (one forward); the claims and figures of inference never mix
# in training rows, which have their own section.
INFERENCE_PROTOCOLS = ("steady", "paper")

# Which fused-attention kernel a row's F.scaled_dot_product_attention ran (its `sdpa_backend` column),
# by the aten op the dispatcher reached; "math" when SDPA ran but none of them (the unfused fallback).
SDPA_BACKEND_OPS = {
    "_scaled_dot_product_flash_attention": "flash",
    "_scaled_dot_product_flash_attention_for_cpu": "flash_cpu",
    "_scaled_dot_product_efficient_attention": "efficient",
    "_scaled_dot_product_cudnn_attention": "cudnn",
    "_scaled_dot_product_fused_attention_overrideable": "overrideable",
}

# --- case statuses ---------------------------------------------------------------------------------
STATUSES = ("ok", "oom", "timeout", "error", "skipped_after_oom", "skipped_after_timeout")
# A failure that makes the larger token counts of its series pointless, and the status they get.
SKIP_AFTER = {"oom": "skipped_after_oom", "timeout": "skipped_after_timeout"}

# --- memory ----------------------------------------------------------------------------------------
# The `stat` of a peak_mem_bytes / base_mem_bytes row names which memory it is. Ordered by preference
# when one number must stand for a case's memory (claims, figures): the device's allocated bytes first.
MEMORY_KINDS = {
    "cuda_allocated": "torch.cuda.max_memory_allocated: weights + input + activations (the paper's number)",
    "tensor_bytes": "peak live CPU tensor storage bytes, counted per aten op (CPU twin of cuda_allocated)",
    "cpu_rss": "peak resident set size of the measuring process (interpreter, libraries, caches included)",
    "cuda_reserved": "torch.cuda.max_memory_reserved: what the caching allocator held",
    "nvml_process": "NVML's used memory of the process (CUDA context + reserved pool)",
}

# Every `stat` a results row may carry.
STATS = ("median", "mean", "p10", "p90", "iqr", "min", "max", "std", "value", *MEMORY_KINDS)

# --- accuracy runs ---------------------------------------------------------------------------------
# What an accuracy run is for (its config's `purpose`, recorded in every row's `purpose` column):
# "result": its numbers are results at the stated budget; "pipeline_check": its budget only proves
# that pretraining, fine-tuning and evaluation run end to end (e.g. the main job's accuracy_ci run,
# whose accuracies are at chance), so reports must never show its numbers as results.
ACCURACY_PURPOSES = ("result", "pipeline_check")
# An accuracy counts as evidence of learning from this multiple of chance (1 / classes) on: below it
# the claims report marks the row instead of presenting it as a result (the main job's accuracy issue).
LEARNED_X_CHANCE = 3.0
# Classes of each full accuracy task (bench/data/, docs/datasets.md); rows record their own classifier's
# `n_classes` (a `--small` build has fewer); this is only the fallback for rows written before they did.
TASK_CLASSES = {"kws": 35, "kws10": 10, "speakers": 15, "events": 18}
