"""The tidy result schema: the columns of a results row, the metric record, and the check of a table.

The files of a run directory are bench/store/run_store.py's; the schema in prose is docs/results-schema.md.

Long format: one row per (case, metric, stat).

Metrics (unit in the `unit` column):
    status                    one per case, value null: the case's status is always visible
    latency_s                 stats median, iqr, p10, p90, mean, min, max (steady); mean, median, min,
                              max, std (paper: mean of the runs, cold run included, is the headline)
    latency_cold_s            value: the first call on a freshly built model
    throughput_tokens_per_s   batch * n_tokens / latency (stat median for steady, mean for paper)
    peak_mem_bytes            stat says which memory: cpu_rss, tensor_bytes, cuda_allocated,
                              cuda_reserved, nvml_process (bench/common/vocabulary.py MEMORY_KINDS)
    base_mem_bytes            the same kinds just before the measured forward(s): weights, input, runtime
    build_time_s, warmup_calls   bookkeeping of the measurement
    loadavg_1m                the machine's 1-minute load average after the case (a busy machine
                              makes CPU timings unreliable: compare it with the core count)
    (any metric an extra-metric producer adds, e.g. flops, bytes_moved, predicted_peak_mem_bytes)
A failed case has its status row (value null, `error` holds the message) and nothing else.

Every row carries `attempt_rows`, the number of rows its attempt wrote (status row included): a case
is finished only when all of them are in the file (bench/store/run_store.py `read_rows`). What a
reader accepts as a row at all is `row_problem`'s definition.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timezone

from bench.common.vocabulary import ACCURACY_PROTOCOLS, STATS, STATUSES

SCHEMA_VERSION = 1
INT64_RANGE = (-(2**63), 2**63 - 1)  # what an Int64 column holds

# column -> (pandas dtype, meaning). Order is the export's column order.
COLUMNS: dict[str, tuple[str, str]] = {
    "schema_version": ("Int64", "version of this schema"),
    "run_id": ("string", "id of the run directory (same across resumed sessions)"),
    "case_id": ("string", "hash of the case parameters only: same case, same id, any run or machine"),
    "attempt_id": ("string", "id of one execution of the case (a retried case has several)"),
    "attempt_rows": ("Int64", "rows written by this attempt, status row included: fewer in the file means the "
                              "write was cut short and the case is not finished (null in rows written before "
                              "this column: counted as complete)"),
    "timestamp": ("string", "UTC ISO time the case finished"),
    "git_sha": ("string", "commit of the suite (null outside git)"),
    "git_dirty": ("boolean", "uncommitted changes to tracked files"),
    "host": ("string", "machine name"),
    "model": ("string", "registry name"),
    "family": ("string", "model family (ssast, ssamba, ...)"),
    "size": ("string", "model size (tiny, small, base, test)"),
    "model_options": ("string", "constructor options of the case (config model_options), e.g. mixer=bi_bi; "
                                "null: the model's defaults"),
    "params": ("Int64", "parameters incl. the classification head"),
    "n_tokens": ("Int64", "patch tokens per example"),
    "frames": ("Int64", "fbank frames per example"),
    "batch": ("Int64", "batch size"),
    "dtype": ("string", "float32 | float16 | bfloat16"),
    "device": ("string", "cpu | cuda | cuda:N"),
    "device_name": ("string", "CPU model or GPU name"),
    "attn_impl": ("string", "eager | sdpa (null for models without attention)"),
    "scan_impl": ("string", "concrete selective-scan backend (null for models without a scan)"),
    "scan_impl_requested": ("string", "scan backend as configured (e.g. auto); part of the case id"),
    "protocol": ("string", "steady | paper | train (benchmark rows); finetune (accuracy rows)"),
    "amp": ("string", "autocast dtype around the measured call (bfloat16 | float16), or none; null in rows "
                      "written before this column (no autocast)"),
    "sdpa_backend": ("string", "the fused-attention kernel F.scaled_dot_product_attention ran (flash, flash_cpu, "
                               "efficient, cudnn) or math (its unfused fallback); null: the model made no SDPA call"),
    "threads": ("Int64", "torch intra-op threads of the measuring process"),
    "cpu_allocator": ("string", "glibc | pinned | retain: the measuring process's malloc settings "
                                "(bench/measure/allocator.py); "
                                "null in rows written before this column (glibc)"),
    "memory_cap_bytes": ("Int64", "emulated device capacity (null: none)"),
    "metric": ("string", "what was measured (see module docstring)"),
    "stat": ("string", "which statistic, or for memory which memory"),
    "value": ("Float64", "the number (null for status rows and failed cases)"),
    "unit": ("string", "s, tokens/s, bytes, count, ..."),
    "n_samples": ("Int64", "measurements behind the value"),
    "method": ("string", "how it was measured (timer, memory source)"),
    "status": ("string", "|".join(STATUSES)),
    "error": ("string", "one-line message for failed cases"),
    "torch_version": ("string", ""),
    "timm_version": ("string", ""),
    "torchaudio_version": ("string", ""),
    "cuda_version": ("string", "CUDA torch was built with (null: CPU-only build)"),
    "driver_version": ("string", "NVIDIA driver (null without a GPU)"),
    "tf32_matmul": ("boolean", "torch.backends.cuda.matmul.allow_tf32"),
    "tf32_cudnn": ("boolean", "torch.backends.cudnn.allow_tf32"),
    "python_version": ("string", ""),
    # Accuracy rows (protocol "finetune", bench/accuracy/rows.py); null in benchmark rows.
    "task": ("string", "accuracy task the model was trained on (kws, speakers, events, ...)"),
    "split": ("string", "evaluation split of an accuracy row (val, test, or digits-real for a kws model)"),
    "init": ("string", "pretrained | scratch: how the fine-tuned model was initialised"),
    "train_steps": ("Int64", "fine-tuning optimiser steps"),
    "n_classes": ("Int64", "classes the fine-tuned classifier chooses from (chance = 1 / n_classes)"),
    "purpose": ("string", "result | pipeline_check: what the accuracy run's budget is for (its config's `purpose`)"),
}

# Columns every row has, never null: what identifies the row and its case (`validate`, `row_problem`).
REQUIRED_COLUMNS = ("run_id", "case_id", "attempt_id", "timestamp", "model", "family", "size", "n_tokens", "frames",
                    "batch", "dtype", "device", "protocol", "metric", "stat", "status")
# Columns a results table must have (`value` may be null, in status rows and failed cases).
TABLE_COLUMNS = (*REQUIRED_COLUMNS, "value")

# Environment facts copied into every row (from env.row_fields); the rest live in env.json.
ENV_COLUMNS = ("git_sha", "git_dirty", "host", "torch_version", "timm_version", "torchaudio_version",
               "cuda_version", "driver_version", "python_version")


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def new_attempt_id() -> str:
    return uuid.uuid4().hex[:12]


@dataclass(frozen=True)
class Metric:
    """One measurement, before the case columns are added: the per-measurement columns of a row."""

    name: str  # the `metric` column
    stat: str
    value: float | None
    unit: str
    n_samples: int | None = 1
    method: str | None = None
    split: str | None = None  # accuracy rows: the evaluation split
    status: str | None = None  # set when this metric alone failed (an extra-metric producer); else the case's
    error: str | None = None

    def row(self) -> dict:
        return {"metric": self.name, "stat": self.stat, "value": None if self.value is None else float(self.value),
                "unit": self.unit, "n_samples": self.n_samples, "method": self.method, "split": self.split}


def case_rows(case, *, run_id: str, env: dict, status: str, metrics: list[Metric] = (), error: str | None = None,
              info: dict | None = None, attempt_id: str | None = None,
              memory_cap_bytes: int | None = None) -> list[dict]:
    """All rows of one case: its status row first, then one per metric.

    `info` is what the measuring process learnt (model.describe(), threads, device name, TF32 flags);
    without it (a child killed before building) the case's own parameters fill the columns.
    """
    info = info or {}
    base = {
        "schema_version": SCHEMA_VERSION,
        "run_id": run_id,
        "case_id": case.case_id,
        "attempt_id": attempt_id or new_attempt_id(),
        "timestamp": now_iso(),
        **{k: env.get(k) for k in ENV_COLUMNS},
        "model": case.model,
        "family": case.family,
        "size": case.size,
        "model_options": getattr(case, "options_label", None),
        "params": info.get("params"),
        "n_tokens": info.get("n_tokens", case.n_tokens),
        "frames": info.get("frames", case.frames),
        "batch": case.batch,
        "dtype": case.dtype,
        "device": case.device,
        "device_name": info.get("device_name", env.get("device_names", {}).get(case.device)),
        "attn_impl": info.get("attn_impl", case.attn_impl),
        "scan_impl": info.get("scan_impl", case.scan_impl),
        "scan_impl_requested": case.scan_impl,
        "protocol": case.protocol,
        "amp": getattr(case, "amp", "none"),
        "sdpa_backend": info.get("sdpa_backend"),
        "threads": info.get("threads", env.get("threads")),
        "cpu_allocator": info.get("cpu_allocator"),
        "memory_cap_bytes": memory_cap_bytes,
        "tf32_matmul": info.get("tf32_matmul", env.get("tf32_matmul")),
        "tf32_cudnn": info.get("tf32_cudnn", env.get("tf32_cudnn")),
    }
    rows = [{**base, **Metric("status", "value", None, "", None).row(), "status": status, "error": error}]
    for m in metrics:
        rows.append({**base, **m.row(), "status": m.status or status, "error": m.error})
    # every row says how many rows its attempt has: a reader can tell a case whose write was cut short
    return [{**{col: row.get(col) for col in COLUMNS}, "attempt_rows": len(rows)} for row in rows]


_TYPE_WORDS = {"Int64": "an integer", "Float64": "a number", "string": "a string", "boolean": "true or false"}


def _fits(dtype: str, v) -> bool:
    """Whether a JSON value can sit in a column of `dtype` (null always can)."""
    if v is None:
        return True
    if dtype == "Int64":
        return type(v) is int and INT64_RANGE[0] <= v <= INT64_RANGE[1]
    if dtype == "Float64":  # NaN and infinities are JSON (json.dumps writes them) and floats
        return type(v) is float or (type(v) is int and INT64_RANGE[0] <= v <= INT64_RANGE[1])
    if dtype == "boolean":
        return type(v) is bool
    return isinstance(v, str)


def row_problem(record: dict) -> str | None:
    """Why a parsed JSON object is not a results row, or None when it is one.

    A row has every REQUIRED_COLUMNS value and a `value` key, a known status, and in each column of
    the schema a value of that column's type (keys outside the schema are ignored). This is what lets
    every reader index a row and build a typed table without ever failing on a line.
    """
    for col in REQUIRED_COLUMNS:
        if is_missing(record.get(col)):
            return f"no {col}"
    if "value" not in record:
        return "no value"
    for col, v in record.items():
        if col in COLUMNS and not _fits(COLUMNS[col][0], v):
            return f"{col} is not {_TYPE_WORDS[COLUMNS[col][0]]}"
    if record["status"] not in STATUSES:
        return f"unknown status {str(record['status'])[:20]!r}"
    if record.get("attempt_rows") is not None and record["attempt_rows"] < 1:
        return "attempt_rows below 1"
    return None


def to_frame(rows: list[dict]):
    """Rows -> a DataFrame with the schema's columns and dtypes."""
    import pandas as pd

    df = pd.DataFrame(rows, columns=list(COLUMNS))
    return df.astype({col: dtype for col, (dtype, _) in COLUMNS.items()})


def is_missing(v) -> bool:
    """None, NaN or pandas' NA (without importing pandas)."""
    return v is None or type(v).__name__ == "NAType" or (isinstance(v, float) and v != v)


def plain(v):
    """A numpy/pandas scalar as plain Python for JSON; NaN and NA become None."""
    if hasattr(v, "item"):
        v = v.item()
    return None if is_missing(v) else v


def series_families(family, model_options) -> list:
    """Family labels with the case's model options: a model swept with options is its own series,
    "aum [mixer=bi_bi]" (claims, figures, accuracy tables)."""
    return [f if is_missing(o) else f"{f} [{o}]" for f, o in zip(family, model_options)]


def validate(df) -> list[str]:
    """Problems with a results table, [] when it follows the schema."""
    problems = []
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        return [f"missing columns: {', '.join(missing)}"]
    if (df["schema_version"] != SCHEMA_VERSION).any():
        problems.append(f"schema_version other than {SCHEMA_VERSION}")
    for col in REQUIRED_COLUMNS:
        if df[col].isna().any():
            problems.append(f"null values in {col}")
    bad_status = set(df["status"].dropna()) - set(STATUSES)
    if bad_status:
        problems.append(f"unknown status values: {sorted(bad_status)}")
    bad_stat = set(df["stat"].dropna()) - set(STATS)
    if bad_stat:
        problems.append(f"unknown stat values: {sorted(bad_stat)}")
    if not df["case_id"].str.fullmatch(r"[0-9a-f]{16}").all():
        problems.append("case_id is not 16 hex digits")
    status_rows = df[df["metric"] == "status"]
    per_case = status_rows.groupby("case_id").size()
    if (per_case != 1).any():
        problems.append(f"cases without exactly one status row: {list(per_case[per_case != 1].index)[:5]}")
    if set(df["case_id"]) != set(status_rows["case_id"]):
        problems.append("cases with measurements but no status row")
    measured = df[df["metric"] != "status"]
    if measured["unit"].isna().any():
        problems.append("measurement rows without a unit")
    ok_cases = set(status_rows.loc[status_rows["status"] == "ok", "case_id"])
    failed = status_rows.loc[status_rows["status"] != "ok"]
    if failed["error"].isna().any():
        problems.append("failed cases without an error message")
    lat = measured[(measured["metric"] == "latency_s") & measured["value"].notna()]
    accuracy_cases = set(status_rows.loc[status_rows["protocol"].isin(ACCURACY_PROTOCOLS), "case_id"])
    if not ok_cases - accuracy_cases <= set(lat["case_id"]):
        problems.append("ok cases without a latency_s value")
    if (measured.loc[measured["case_id"].isin(ok_cases) & (measured["status"] == "ok"), "value"].isna()).any():
        problems.append("ok measurement rows with a null value")
    if measured["case_id"].isin(set(failed["case_id"])).any():
        problems.append("failed cases with measurement rows")
    declared = df.dropna(subset=["attempt_rows"]).groupby("attempt_id")["attempt_rows"].agg(["max", "size"])
    if (declared["max"] != declared["size"]).any():
        problems.append("attempts whose row count differs from their attempt_rows")
    dup = df.duplicated(subset=["case_id", "metric", "stat", "split"])  # split: accuracy rows, one per split
    if dup.any():
        problems.append(f"{int(dup.sum())} duplicated (case_id, metric, stat, split) rows")
    return problems
