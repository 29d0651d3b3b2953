"""The paper's figures and a few more, from one run directory: PNG and SVG in RUN_DIR/figures/.

- latency_vs_tokens / memory_vs_tokens: one panel per model size, one curve per family and kernel
  (the paper's two figures: linear axes, tokens on x); a curve that ended in an out-of-memory or a
  timeout is marked with an x at the token count that failed.
- latency_loglog / memory_loglog: the same on log-log axes with the slope fitted over the longer half
  of each curve in the legend (about 1 for SSAMBA, about 2 for eager SSAST at long lengths).
- ratios_vs_tokens: speed-up and memory ratio of each family over each SSAST kernel.
- memory_measured_vs_predicted: predicted peak (bench/estimate/trace.py) against the measured peak tensor
  bytes of the same cases, when the run recorded predictions.
- predicted_reduction_per_card: the predicted latency reduction at the paper's point (22k tokens) on each
  card of the device table (bench/estimate/roofline.py), beside the paper's 92.7%, when the run's
  claims.json holds those predictions (`ssamba-bench claims` first, as run_all.sh does).
One set per protocol; protocols, devices, dtypes and batch sizes are never drawn on one axis. The
`train` protocol's set is the training section: time and peak memory per training step (gradients and
Adam state included) against tokens, its ratios and crossover, and its measured-vs-predicted memory
(bench/estimate/train_trace.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402,F401  (used as matplotlib.ticker)
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from bench.common.vocabulary import MEMORY_KINDS  # noqa: E402
from bench.report.claims import case_values, comparisons, load_runs  # noqa: E402
from models.errors import UserInputError  # noqa: E402

SIZE_ORDER = ["test", "tiny", "small", "base"]
FAILED = ("oom", "timeout")


def curve_label(row) -> str:
    impl = row["attn_impl"] if isinstance(row["attn_impl"], str) else row["scan_impl"]
    return f"{row['family']} ({impl})" if isinstance(impl, str) else str(row["family"])


def series_colors(labels) -> dict[str, str]:
    """One colour per curve label, fixed across a figure's panels (sorted labels, tab10 order), so
    "ssamba (triton)" is the same colour in the tiny and the small panel."""
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    return {label: cycle[i % len(cycle)] for i, label in enumerate(sorted(set(labels)))}


def fitted_slope(tokens: np.ndarray, values: np.ndarray) -> float | None:
    """Slope of log(value) against log(tokens) over the longer half of a curve (at least 2 points)."""
    keep = tokens >= np.median(tokens)
    if keep.sum() < 2:
        return None
    return float(np.polyfit(np.log(tokens[keep]), np.log(values[keep]), 1)[0])


def _failures(df: pd.DataFrame) -> pd.DataFrame:
    status = df[(df["metric"] == "status") & df["status"].isin(FAILED)].copy()
    status["amp"] = status["amp"].fillna("none")
    return status[["model", "family", "size", "n_tokens", "attn_impl", "scan_impl", "protocol", "amp", "batch",
                   "status"]]


def _panels(sizes):
    fig, axes = plt.subplots(1, len(sizes), figsize=(5.2 * len(sizes), 4.2), squeeze=False)
    return fig, dict(zip(sizes, axes[0]))


def _save(fig, out_dir: Path, stem: str) -> list[Path]:
    fig.tight_layout()
    paths = [out_dir / f"{stem}.png", out_dir / f"{stem}.svg"]
    for p in paths:
        fig.savefig(p, dpi=130)
    plt.close(fig)
    return paths


def _curve_plot(cases, failures, column, ylabel, title, loglog, scale=1.0):
    sizes = [s for s in SIZE_ORDER if s in set(cases["size"])] or sorted(set(cases["size"]))
    fig, panels = _panels(sizes)
    colors = series_colors(cases.apply(curve_label, axis=1)) if len(cases) else {}
    for size, ax in panels.items():
        sub = cases[cases["size"] == size]
        for label, g in sorted(sub.groupby(sub.apply(curve_label, axis=1)), key=lambda kv: kv[0]):
            g = g.dropna(subset=[column]).sort_values("n_tokens")
            if g.empty:
                continue
            x, y = g["n_tokens"].to_numpy(float), g[column].to_numpy(float) / scale
            legend = label
            if loglog:
                slope = fitted_slope(x, y)
                legend += f", slope {slope:.2f}" if slope is not None else ""
            line, = ax.plot(x, y, marker="o", ms=3, label=legend, color=colors[label])
            fails = failures[(failures["size"] == size) & (failures.apply(curve_label, axis=1) == label)]
            for _, f in fails.iterrows():
                ax.plot([f["n_tokens"]], [y.max()], marker="x", ms=9, mew=2, color=line.get_color(), ls="none")
                ax.annotate(f["status"].upper(), (f["n_tokens"], y.max()), textcoords="offset points",
                            xytext=(4, 4), fontsize=7, color=line.get_color())
        if loglog:
            ax.set_xscale("log")
            ax.set_yscale("log")
        ax.set_title(f"{size}")
        ax.set_xlabel("input tokens")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3, which="both" if loglog else "major")
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    return fig


def _ratio_plot(comps: pd.DataFrame, title: str):
    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(10.5, 4.2))
    for key, g in comps.groupby(["size", "family", "scan_impl", "attn_impl_ref"], dropna=False):
        g = g.sort_values("n_tokens")
        scan = f" ({key[2]})" if isinstance(key[2], str) else ""
        label = f"{key[0]}: {key[1]}{scan} / ssast ({key[3]})"
        ax_t.plot(g["n_tokens"], g["speedup"], marker="o", ms=3, label=label)
        if g["memory_ratio"].notna().any():
            ax_m.plot(g["n_tokens"], g["memory_ratio"], marker="o", ms=3, label=label)
    for ax, name in ((ax_t, "speed-up (SSAST latency / latency)"), (ax_m, "memory ratio (SSAST peak / peak)")):
        ax.axhline(1, color="grey", lw=0.8, ls="--")
        ax.set_xscale("log")
        ax.set_yscale("log")
        # Ticks at 1, 2, 5 x 10^k labelled plainly (0.5, 2, 20), no crowded minor labels.
        ax.yaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel("input tokens")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    return fig


def _predicted_plot(cases: pd.DataFrame, kind: str, title: str):
    sub = cases.dropna(subset=["predicted_peak_mem_bytes", kind])
    if sub.empty:
        return None
    fig, ax = plt.subplots(figsize=(5.5, 5))
    labels = sub.apply(curve_label, axis=1)
    colors = series_colors(labels)
    for label, g in sub.groupby(labels):
        ax.scatter(g[kind] / 1e6, g["predicted_peak_mem_bytes"] / 1e6, s=14, label=label, color=colors[label])
    lo, hi = sub[[kind, "predicted_peak_mem_bytes"]].min().min() / 1e6, sub[[kind, "predicted_peak_mem_bytes"]].max().max() / 1e6
    ax.plot([lo, hi], [lo, hi], color="grey", lw=0.8, ls="--", label="predicted = measured")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(f"measured peak ({kind}, MB)")
    ax.set_ylabel("predicted peak (MB)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    ax.set_title(title.replace(": ", ":\n", 1), fontsize=10)
    return fig


def _card_plot(cards: dict, paper: dict):
    """Bars: predicted reduction of each non-SSAST model against each SSAST kernel, per card."""
    pairs = [(r["label"], r["vs_attn_impl"]) for r in cards["cards"][0]["reductions"]]
    if not pairs:
        return None
    names = [c["device_name"].replace("NVIDIA ", "").replace("GeForce ", "") for c in cards["cards"]]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(names) + 2), 6.0))
    width = 0.8 / len(pairs)
    x = np.arange(len(names))
    for i, pair in enumerate(pairs):
        rows = [next(r for r in c["reductions"] if (r["label"], r["vs_attn_impl"]) == pair) for c in cards["cards"]]
        bars = ax.bar(x + (i - (len(pairs) - 1) / 2) * width, [100 * r["reduction"] for r in rows], width,
                      label=f"{pair[0]} vs ssast_tiny ({pair[1]})")
        for bar, r in zip(bars, rows):
            if not r.get("fits_in_memory", True):  # the card cannot hold the forward: hatched, not a result
                bar.set_hatch("///")
                bar.set_alpha(0.45)
    ax.axhline(100 * paper["latency_reduction"], color="black", lw=1, ls="--",
               label=f"paper, measured on its L40: {100 * paper['latency_reduction']:.1f}%")
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xticks(x, names, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("predicted latency reduction (%)")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.3), ncol=2,
              title="hatched: the predicted peak memory exceeds the card (out of memory)", title_fontsize=7)
    ax.set_title(f"Predicted at {paper['n_tokens']:,} tokens, batch {paper['batch']}, {cards['dtype']} "
                 f"(roofline fitted on H100 rows; predictions, not measurements)", fontsize=9)
    return fig


def card_figure(run_dir: Path, out_dir: Path) -> list[Path]:
    """The per-card prediction figure from the run's claims.json, [] when it has none."""
    path = run_dir / "claims.json"
    if not path.exists():
        return []
    report = json.loads(path.read_text())
    cards = report.get("latency_predictions_at_paper_point")
    fig = _card_plot(cards, report["paper"]) if cards else None
    return _save(fig, out_dir, "predicted_reduction_per_card") if fig is not None else []


def make_figures(run_dirs) -> list[Path]:
    """Figures of one or more run directories (one set per setting), written to the first one's figures/."""
    run_dirs = [run_dirs] if isinstance(run_dirs, (str, Path)) else list(run_dirs)
    run_dir = Path(run_dirs[0])
    df = load_runs(run_dirs)
    cases = case_values(df)
    if cases.empty:
        raise UserInputError(f"{run_dir} has no successful cases to plot")
    out_dir = run_dir / "figures"
    out_dir.mkdir(exist_ok=True)
    failures = _failures(df)
    written = []
    settings = cases.groupby(["protocol", "device", "dtype", "amp", "batch"], dropna=False)
    for (protocol, device, dtype, amp, batch), sub in settings:
        autocast = "" if amp == "none" else f"_amp-{amp}"
        tag = (f"{protocol}" if len(settings) == len({k[0] for k in settings.groups})
               else f"{protocol}_{device}_{dtype}{autocast}_b{batch}")
        where = (f"protocol {protocol}, {device} ({sub['device_name'].iloc[0]}), {dtype}"
                 f"{'' if amp == 'none' else f', autocast {amp}'}, batch {batch}")
        fails = failures[(failures["protocol"] == protocol) & (failures["batch"] == batch)
                         & (failures["amp"] == amp)]
        kind = next((k for k in MEMORY_KINDS if sub[k].notna().any()), None)
        for loglog in (False, True):
            suffix = "loglog" if loglog else "vs_tokens"
            what = "time per training step" if protocol == "train" else "latency"
            fig = _curve_plot(sub, fails, "latency_s", f"{what} (s)", f"{what.capitalize()}: {where}", loglog)
            written += _save(fig, out_dir, f"latency_{suffix}_{tag}")
            if kind:
                fig = _curve_plot(sub, fails, kind, f"peak memory ({kind}, MB)", f"Peak memory: {where}", loglog, 1e6)
                written += _save(fig, out_dir, f"memory_{suffix}_{tag}")
        comps = pd.DataFrame(comparisons(sub))
        if not comps.empty:
            written += _save(_ratio_plot(comps, f"Ratios over SSAST: {where}"), out_dir, f"ratios_vs_tokens_{tag}")
        if kind:
            fig = _predicted_plot(sub, "tensor_bytes" if sub["tensor_bytes"].notna().any() else kind,
                                  f"Predicted vs measured peak memory: {where}")
            if fig is not None:
                written += _save(fig, out_dir, f"memory_measured_vs_predicted_{tag}")
    return written + card_figure(run_dir, out_dir)
