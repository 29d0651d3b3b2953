"""Number formats and the comparison table shared by the claims report's sections (claims_markdown.py,
claims_training.py): percentages, ratios, seconds, bytes, a setting's one-line description."""

from __future__ import annotations

GB = 1e9


SETTING = ["protocol", "device", "device_name", "dtype", "amp", "batch", "cpu_allocator"]  # compared only within one


def fmt_pct(x):
    return "n/a" if x is None else f"{100 * x:.1f}%"


def fmt_ratio(x):
    return "n/a" if x is None else f"{x:.2f}x"


def fmt_seconds(x):
    if x is None:
        return "n/a"
    return f"{x:.3f} s" if x >= 1 else f"{x * 1e3:.2f} ms"


def fmt_bytes(x):
    if x is None:
        return "n/a"
    return f"{x / GB:.2f} GB" if x >= GB else f"{x / 1e6:.2f} MB"


def fmt_setting(c: dict) -> str:
    amp = c.get("amp")
    autocast = f", autocast {amp}" if amp and amp != "none" else ""
    heap = {"retain": ", heap retained", "pinned": ", malloc pinned"}.get(c.get("cpu_allocator"), "")
    return (f"protocol `{c['protocol']}`, {c['device']} ({c['device_name']}), {c['dtype']}{autocast}, "
            f"batch {c['batch']}{heap}")


def fmt_joules(x):
    if x is None:
        return "n/a"
    return f"{x:.3g} J" if x >= 1 else f"{x * 1e3:.3g} mJ"


def pairing(c: dict) -> str:
    """Which two kernels a comparison sets against each other: "ssamba (scan `triton`) vs SSAST (`eager`)"."""
    scan = f" (scan `{c['scan_impl']}`)" if isinstance(c.get("scan_impl"), str) else ""
    return f"{c['family']}{scan} vs SSAST (`{c['attn_impl_ref']}`)"


def comparison_table(rows: list[dict], family: str, what: str = "latency") -> list[str]:
    """One comparison per row; energy columns only where some row was metered (NVML, RAPL)."""
    kind = rows[0].get("memory_kind")
    energy = any(c.get("energy_j") is not None for c in rows)
    head = (f"| size | tokens | SSAST {what} | {family} {what} | {what} reduction | speed-up | "
            f"SSAST memory ({kind}) | {family} memory | memory reduction | memory ratio |")
    lines = [head + (f" SSAST energy | {family} energy | energy ratio |" if energy else ""),
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|" + ("---:|---:|---:|" if energy else "")]
    for c in rows:
        line = (f"| {c['size']} | {c['n_tokens']} | {fmt_seconds(c['latency_s_ref'])} | {fmt_seconds(c['latency_s'])} | "
                f"{fmt_pct(c['latency_reduction'])} | {fmt_ratio(c['speedup'])} | {fmt_bytes(c.get('peak_mem_bytes_ref'))} | "
                f"{fmt_bytes(c.get('peak_mem_bytes'))} | {fmt_pct(c.get('memory_reduction'))} | "
                f"{fmt_ratio(c.get('memory_ratio'))} |")
        if energy:
            line += (f" {fmt_joules(c.get('energy_j_ref'))} | {fmt_joules(c.get('energy_j'))} | "
                     f"{fmt_ratio(c.get('energy_ratio'))} |")
        lines.append(line)
    return lines
