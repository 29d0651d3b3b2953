"""The claims report: SSAMBA (and any other family) against SSAST, next to the paper's numbers.

The paper (Shams et al. 2024) reads: SSAMBA-tiny is "92.7% faster" in batch inference and "95.4% more
memory-efficient" than SSAST-tiny at 22k input tokens. Both percentages are reductions,
1 - new / old; the report gives each comparison in that form and as a ratio (old / new), and never
mixes protocols (paper vs steady), SSAST attention kernels (eager vs sdpa), devices, dtypes, autocast
settings (amp) or batch sizes in one comparison. Where a run did not reach 22k tokens (any CPU run), it adds the predictions
of bench/estimate/ at the paper's point, labelled as predictions, beside the measured analogue at
the largest token count the run reached, and the predicted latency on every card of the device table
(a roofline model fitted on measured H100 rows: bench/estimate/roofline.py). Rows of the `train`
protocol (training steps) get a section of their own (bench/report/claims_training.py).

Every number traces back to rows of results.csv: latency is metric `latency_s` (stat `median` for
the steady protocol, `mean` for the paper protocol, as the authors averaged their runs), memory is
metric `peak_mem_bytes` with the memory kind as its stat (`cuda_allocated` on GPUs, what the paper
used; `tensor_bytes` and `cpu_rss` on CPUs). Where both cases of a comparison were metered by a
hardware counter (NVML, RAPL), their energy per call (metric `energy_per_call_j`) stands beside latency.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from bench.common.vocabulary import ACCURACY_PROTOCOLS, HEADLINE_STAT, INFERENCE_PROTOCOLS, MEMORY_KINDS
from bench.report.claims_accuracy import accuracy_section, pipeline_check_configs, reference_accuracy
from bench.report.claims_format import SETTING
from bench.report.claims_training import training_section
from bench.store.run_store import RESULT_FILES
from bench.store.run_store import load_runs as load_result_files
from bench.store.schema import plain, series_families
from models.errors import UserInputError

REFERENCE_FAMILY = "ssast"
PAPER = {
    "source": "Shams et al. 2024 (SSAMBA), efficiency figures; read off at 22k tokens, tiny",
    "n_tokens": 22000,
    "batch": 4,
    "dtype": "float32",
    "device_name": "NVIDIA L40 (48 GB)",
    "protocol": "paper",
    "attn_impl": "eager",
    "latency_reduction": 0.927,
    "memory_reduction": 0.954,
    "ssast_latency_s": 5.1,
    "ssamba_latency_s": 0.37,
    "ssast_peak_mem_gb": 44.7,
    "ssamba_peak_mem_gb": 2.04,
    "ssast_flops": 18.8e12,
    "ssamba_flops": 1.36e12,
}


def load_runs(run_dirs: list[str | Path]) -> pd.DataFrame:
    for run_dir in run_dirs:
        path = Path(run_dir)
        if not path.is_file() and not any((path / name).exists() for name in RESULT_FILES):
            raise UserInputError(f"{run_dir}: no results.jsonl (or results.csv) here; give a run directory "
                                 "written by `ssamba-bench sweep`")
    frames, seen = [], {}
    for run_dir in run_dirs:
        df = load_result_files([run_dir])
        for case_id, model in df.loc[df["metric"] == "latency_s", ["case_id", "model"]].drop_duplicates().values:
            if case_id in seen:  # e.g. one config swept twice, under two cpu_allocator or thread settings
                raise UserInputError(
                    f"case {case_id} ({model}) is in both {seen[case_id]} and {run_dir}: a claims report takes "
                    "each case once; make one report per run, or set the runs side by side with "
                    "`ssamba-bench compare`")
            seen[case_id] = run_dir
        frames.append(df)
    return pd.concat(frames, ignore_index=True)


def case_values(df: pd.DataFrame, latency_stat: str | None = None) -> pd.DataFrame:
    """One row per ok case with its headline latency (or `latency_stat` for every protocol) and each
    memory kind as columns."""
    ok = df[(df["status"] == "ok") & df["value"].notna()].copy()
    ok["amp"] = ok["amp"].fillna("none")  # rows written before the amp axis ran without autocast
    ok["cpu_allocator"] = ok.get("cpu_allocator", pd.Series(index=ok.index, dtype="string")).fillna("glibc")
    keys = ["case_id", "model", "family", "size", "n_tokens", "attn_impl", "scan_impl", *SETTING]
    cases = ok[keys].drop_duplicates("case_id").set_index("case_id")
    if "model_options" in ok:  # a model swept with options is its own series: "aum [mixer=bi_bi]"
        options = ok.drop_duplicates("case_id").set_index("case_id")["model_options"]
        cases["family"] = series_families(cases["family"], options)
    lat = ok[ok["metric"] == "latency_s"]
    wanted = latency_stat if latency_stat else lat["protocol"].map(HEADLINE_STAT)
    lat = lat[lat["stat"] == wanted]
    cases["latency_s"] = lat.set_index("case_id")["value"]
    mem = ok[ok["metric"] == "peak_mem_bytes"].pivot_table(index="case_id", columns="stat", values="value",
                                                            aggfunc="first")
    for kind in MEMORY_KINDS:
        cases[kind] = mem[kind] if kind in mem else float("nan")
    for metric in ("flops", "predicted_peak_mem_bytes", "energy_per_call_j"):
        rows = ok[ok["metric"] == metric]
        cases[metric] = rows.drop_duplicates("case_id").set_index("case_id")["value"] if len(rows) else float("nan")
    return cases.reset_index()


def memory_kind(cases: pd.DataFrame) -> str | None:
    """The headline memory kind of a setting: the first one every case of it has."""
    for kind in MEMORY_KINDS:
        if kind in cases and cases[kind].notna().all() and len(cases):
            return kind
    return None


def comparisons(cases: pd.DataFrame, allow_mixed_devices: bool = False) -> list[dict]:
    """Every (setting, size, n_tokens) pairing of a non-SSAST family with each SSAST attention kernel.

    The device model is part of the setting: rows measured on different GPUs or CPUs are paired only
    with `allow_mixed_devices`, and then each pairing names both (`device_name`, `device_name_ref`)."""
    out = []
    ref = cases[cases["family"] == REFERENCE_FAMILY]
    others = cases[cases["family"] != REFERENCE_FAMILY]
    setting = [s for s in SETTING if s != "device_name"] if allow_mixed_devices else SETTING
    join = [*setting, "size", "n_tokens"]
    pairs = others.merge(ref, on=join, suffixes=("", "_ref"))
    for _, p in pairs.iterrows():
        kind = memory_kind(cases[(cases[SETTING] == p[SETTING]).all(axis=1)])
        row = {k: plain(p[k]) for k in join}
        row.update({
            "family": p["family"], "scan_impl": p["scan_impl"], "attn_impl_ref": p["attn_impl_ref"],
            "case_id": p["case_id"], "case_id_ref": p["case_id_ref"],
            "device_name": p["device_name"], "device_name_ref": p.get("device_name_ref", p["device_name"]),
            "latency_s": p["latency_s"], "latency_s_ref": p["latency_s_ref"],
            "latency_reduction": 1 - p["latency_s"] / p["latency_s_ref"],
            "speedup": p["latency_s_ref"] / p["latency_s"],
            "memory_kind": kind,
        })
        if pd.notna(p["energy_per_call_j"]) and pd.notna(p["energy_per_call_j_ref"]):  # a hardware counter on both
            row.update({"energy_j": p["energy_per_call_j"], "energy_j_ref": p["energy_per_call_j_ref"],
                        "energy_ratio": p["energy_per_call_j_ref"] / p["energy_per_call_j"]})
        if kind:
            row.update({"peak_mem_bytes": p[kind], "peak_mem_bytes_ref": p[f"{kind}_ref"],
                        "memory_reduction": 1 - p[kind] / p[f"{kind}_ref"],
                        "memory_ratio": p[f"{kind}_ref"] / p[kind]})
        out.append({k: plain(v) for k, v in row.items()})
    return out


def crossovers(comps: list[dict]) -> list[dict]:
    """Per setting, size, family and SSAST kernel: the smallest token count from which the family is
    faster at every larger measured count (None when it never is, or is from the start)."""
    out = []
    df = pd.DataFrame(comps)
    if df.empty:
        return out
    group = [*SETTING, "size", "family", "scan_impl", "attn_impl_ref"]
    for key, g in df.groupby(group, dropna=False):
        g = g.sort_values("n_tokens")
        faster = (g["speedup"] > 1).tolist()
        tokens = g["n_tokens"].tolist()
        first = next((t for i, t in enumerate(tokens) if all(faster[i:])), None)
        out.append({**dict(zip(group, map(plain, key))), "tokens_measured": [int(t) for t in tokens],
                    "faster_from_tokens": first, "faster_everywhere": all(faster),
                    "never_faster": not any(faster)})
    return out


def predictions(families: list[str]) -> tuple[list[dict], dict | None]:
    """bench/estimate/ at the paper's point (tiny, 22k tokens, batch 4, fp32) for each family: FLOPs, bytes
    moved and peak memory per model, and the predicted latency of each on every card of the device table
    (bench/estimate/cards.py)."""
    from bench.estimate import estimate
    from bench.estimate.cards import predict_cards
    from models.registry import list_models

    out, traces = [], []
    for family in families:
        name = f"{family}_tiny"
        if name not in list_models():
            continue
        impls = ["eager", "sdpa"] if family == REFERENCE_FAMILY else [None]
        for impl in impls:
            est = estimate(name, PAPER["n_tokens"], PAPER["batch"], PAPER["dtype"], attn_impl=impl, ops=True)
            traces.append(est)
            out.append({k: est[k] for k in ("model", "family", "n_tokens", "batch", "dtype", "attn_impl", "scan_impl",
                                             "flops", "bytes_moved", "peak_mem_bytes")})
    return out, (predict_cards(traces, PAPER["dtype"]) if traces else None)


def build_report(run_dirs: list[str | Path], allow_mixed_devices: bool = False, predict: bool = True) -> dict:
    """The report as a dictionary; `predict=False` leaves out the GPU-free predictions at the paper's point
    (they build the models on meta tensors: the only part that needs torch)."""
    df = load_runs(run_dirs)
    accuracy = accuracy_section(df)  # accuracy runs (bench/report/claims_accuracy.py), None without any
    if accuracy is not None and accuracy["pipeline_check"]:  # never chance-level numbers alone: the reference beside
        accuracy["reference"] = reference_accuracy()
        accuracy["pipeline_configs"] = pipeline_check_configs(run_dirs)
    df = df[~df["protocol"].isin(ACCURACY_PROTOCOLS)]
    if df.empty and accuracy is not None:  # only accuracy runs given: the accuracy section alone
        return {"run_dirs": [str(d) for d in run_dirs], "paper": PAPER, "accuracy": accuracy}
    cases = case_values(df)
    families = sorted(cases["family"].dropna().unique())
    missing = []
    if REFERENCE_FAMILY not in families:
        missing.append(f"no ok {REFERENCE_FAMILY} cases")
    if not [f for f in families if f != REFERENCE_FAMILY]:
        missing.append("no ok cases of another family (e.g. ssamba) to compare with it")
    if missing:
        found = ", ".join(f"{m}" for m in sorted(df["model"].dropna().unique())) or "none"
        raise UserInputError(f"cannot build the claims report from {', '.join(map(str, run_dirs))}: "
                             f"{'; '.join(missing)} (models found: {found}); sweep both families first")
    training = cases[cases["protocol"] == "train"]
    cases = cases[cases["protocol"].isin(INFERENCE_PROTOCOLS)]
    comps = comparisons(cases, allow_mixed_devices)
    train_comps = comparisons(training, allow_mixed_devices)
    if not comps and not train_comps:
        _refuse_mixed_devices(pd.concat([cases, training]))
        raise UserInputError("the run has both families but no (size, token count, protocol, batch, dtype, device) "
                             "measured for both; sweep matching cases")
    statuses = df[df["metric"] == "status"].groupby(["model", "status"]).size().reset_index(name="cases")
    preds, card_preds = predictions(families) if predict and comps else ([], None)
    training_report = training_section(train_comps, crossovers(train_comps), training, families, REFERENCE_FAMILY,
                                       predict)
    return {
        "run_dirs": [str(d) for d in run_dirs],
        "mixed_devices": sorted({f"{c['device_name']} vs {c['device_name_ref']}" for c in comps
                                 if c["device_name"] != c["device_name_ref"]}),
        "paper": PAPER,
        "settings": cases[SETTING].drop_duplicates().to_dict("records"),
        "comparisons": comps,
        "paper_point_measured": [c for c in comps if c["size"] == "tiny" and c["n_tokens"] >= PAPER["n_tokens"]],
        "largest_common": _largest_common(comps),
        "crossovers": crossovers(comps),
        "predictions_at_paper_point": preds,
        "latency_predictions_at_paper_point": card_preds,
        "case_statuses": statuses.to_dict("records"),
        "training": training_report,
        "accuracy": accuracy,
    }


def _refuse_mixed_devices(cases: pd.DataFrame) -> None:
    """Rows of different device models are never paired (device_name is part of SETTING); when that is
    the only reason nothing pairs (e.g. cluster jobs of the two families landed on different GPUs),
    say so instead of the generic message."""
    mixed = comparisons(cases, allow_mixed_devices=True)
    if mixed:
        names = sorted({f"{c['device_name']} vs {c['device_name_ref']}" for c in mixed})
        raise UserInputError(f"the two families were measured on different device models ({'; '.join(names)}); "
                             f"the claims report does not pair measurements across device models: rerun the "
                             f"missing cases on one device model (e.g. pin a Slurm partition or constraint), or pass "
                             f"--allow-mixed-devices to pair them anyway")


def _largest_common(comps: list[dict]) -> list[dict]:
    """Per setting and pairing: the tiny comparison at the largest token count measured for both."""
    df = pd.DataFrame(comps)
    if df.empty:
        return []
    tiny = df[df["size"] == "tiny"] if (df["size"] == "tiny").any() else df
    idx = tiny.groupby([*SETTING, "size", "family", "scan_impl", "attn_impl_ref"], dropna=False)["n_tokens"].idxmax()
    return [{k: plain(v) for k, v in r.items()} for r in tiny.loc[idx].to_dict("records")]


def write_report(run_dirs: list[str | Path], allow_mixed_devices: bool = False,
                 predict: bool = True) -> tuple[Path, Path, dict]:
    from bench.report.claims_markdown import render

    report = build_report(run_dirs, allow_mixed_devices, predict)
    out_dir = Path(run_dirs[0])
    json_path, md_path = out_dir / "claims.json", out_dir / "claims.md"
    tmp = json_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(report, indent=2) + "\n")
    tmp.replace(json_path)
    tmp = md_path.with_suffix(".md.tmp")
    tmp.write_text(render(report))
    tmp.replace(md_path)
    return md_path, json_path, report
