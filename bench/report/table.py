"""The short table of a run: models as rows, token counts as columns, latency and peak memory.

Latency is the protocol's headline statistic (steady: median; paper: mean of the runs). Memory is the
device's "allocated" number by default: tensor_bytes on CPU, cuda_allocated on CUDA (see
bench/common/vocabulary.py MEMORY_KINDS); `--memory cpu_rss` shows the process's peak RSS instead. Failed cases show their
status: OOM, T/O (timeout), ERR, skip. A latency marked * is noisy: its IQR is more than 20% of the
median (steady protocol, at least 3 samples). A run in which nothing succeeded is a table of statuses.
Two cases that print the same label (e.g. scan_impl_requested `auto` and the backend it resolved to)
share a row: the first one's cell is shown.
"""

from __future__ import annotations

from bench.common.vocabulary import HEADLINE_STAT

NOISY_REL_IQR = 0.2
_SHORT = {"oom": "OOM", "timeout": "T/O", "error": "ERR", "skipped_after_oom": "skip", "skipped_after_timeout": "skip"}


def _row_label(row, multi_device: bool) -> str:
    parts = [row["model"]]
    parts += [str(row[c]) for c in ("model_options", "attn_impl", "scan_impl") if isinstance(row.get(c), str)]
    if row["batch"] != 1:
        parts.append(f"b{row['batch']}")
    if row["dtype"] != "float32":
        parts.append(row["dtype"])
    if isinstance(row.get("amp"), str) and row["amp"] != "none":
        parts.append(f"amp-{row['amp']}")
    if row["protocol"] != "steady":
        parts.append(row["protocol"])
    if multi_device:
        parts.append(row["device"])
    return " ".join(parts)


def _fmt_latency(v: float) -> str:
    return f"{v:.3g}" if v >= 0.001 else f"{v:.2e}"


def _fmt_mib(v: float) -> str:
    return f"{v / 2**20:.4g}"


def short_table(df, memory: str | None = None) -> str:
    """The two blocks (latency, memory) as text; `df` is a results table (latest attempts)."""
    import pandas as pd

    if df.empty:
        return "(no results)"
    df = df.copy()
    multi_device = df["device"].nunique() > 1
    df["label"] = [_row_label(r, multi_device) for _, r in df.iterrows()]
    cell = ["label", "n_tokens"]
    status = df[df["metric"] == "status"].drop_duplicates(cell).set_index(cell)["status"]
    headline = df["protocol"].map(HEADLINE_STAT).fillna(HEADLINE_STAT["steady"])
    measured = (df["status"] == "ok") & df["value"].notna()
    lat = df[(df["metric"] == "latency_s") & (df["stat"] == headline) & measured].copy()
    iqr = df[(df["metric"] == "latency_s") & (df["stat"] == "iqr")].drop_duplicates("case_id").set_index("case_id")
    # astype: mapping an empty column (no case succeeded) keeps its string dtype, which cannot divide
    rel_iqr = lat["case_id"].map(iqr["value"]).astype("Float64") / lat["value"]
    # The paper protocol records no IQR: its cells are never marked (NA counts as not noisy).
    lat["noisy"] = ((rel_iqr > NOISY_REL_IQR) & (lat["n_samples"] >= 3)).fillna(False).astype(bool)
    mem_rows = df[(df["metric"] == "peak_mem_bytes") & measured]
    if memory:
        mem = mem_rows[mem_rows["stat"] == memory]
        kinds = memory
    else:
        want = df["device"].map(lambda d: "cuda_allocated" if str(d).startswith("cuda") else "tensor_bytes")
        mem = mem_rows[mem_rows["stat"] == want[mem_rows.index]]
        if mem.empty:
            mem = mem_rows[mem_rows["stat"] == "cpu_rss"]
        kinds = "/".join(sorted(set(mem["stat"]))) or "none recorded"
    labels = list(dict.fromkeys(df["label"]))
    tokens = sorted(df["n_tokens"].unique())

    def block(values, fmt) -> list[str]:
        values = values.drop_duplicates(cell).set_index(cell)
        table = values["value"]
        noisy = values["noisy"] if "noisy" in values else None
        width = max(len(lbl) for lbl in labels)
        lines = [f"{'':<{width}} " + " ".join(f"{t:>8}" for t in tokens)]
        for lbl in labels:
            cells = []
            for t in tokens:
                if (lbl, t) in table.index:
                    mark = "*" if noisy is not None and bool(noisy[(lbl, t)]) else ""
                    cells.append(fmt(float(table[(lbl, t)])) + mark)
                elif (lbl, t) in status.index:
                    cells.append(_SHORT.get(status[(lbl, t)], "?"))
                else:
                    cells.append("")
            lines.append(f"{lbl:<{width}} " + " ".join(f"{c:>8}" for c in cells))
        return lines

    out = ["latency (s): median (steady) / mean (paper); columns = tokens; * = noisy (IQR > 20% of median)"]
    out += block(pd.DataFrame(lat), _fmt_latency)
    out += ["", f"peak memory (MiB, {kinds}); columns = tokens"]
    out += block(pd.DataFrame(mem), _fmt_mib)
    return "\n".join(out)
