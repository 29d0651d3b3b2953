"""Regression check of one results table against another, trustworthy on noisy shared machines.

Cases are matched by case_id (a hash of the case's parameters only). What is gated, and how, comes
from a policy file (bench/policies/*.toml):
  - deterministic metrics (parameters, FLOPs, predicted memory, peak live tensor bytes) and the
    implementation columns of each case must not change at all;
  - allocator/OS memory (CUDA allocated/reserved, NVML, RSS) within a relative tolerance;
  - latency only when the change exceeds a threshold AND the two runs' raw samples differ
    significantly (two-sided Mann-Whitney U); a large change without significance is AMBIGUOUS;
  - within-run ratios (a family's latency over SSAST's, measured side by side in each run) within a
    tolerance, which survives a machine that is uniformly slower today;
  - a case that was ok and is now oom/timeout/error is a regression.
Verdicts: SAME, FASTER, SLOWER, AMBIGUOUS, FAILED, MISSING (in the baseline only), NEW (in the new
table only), and EMPTY: nothing was comparable (no status or metric of a common case had something
to compare), which fails the check: a gate that compared nothing cannot pass. SLOWER means "worse"
for memory and FLOPs too.

A policy file is checked like a config (bench/common/config_fields.py): its sections and keys are
the dataclasses below, with their defaults; numbers must be finite and in range.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from bench.common.config_fields import build, read_toml
from bench.common.vocabulary import HEADLINE_STAT
from bench.report.claims import case_values, comparisons
from bench.report.stats import mann_whitney_u_pvalue
from bench.store.jsonl import read_jsonl
from bench.store.run_store import load
from models.errors import UserInputError

POLICY_DIR = Path(__file__).resolve().parent.parent / "policies"
CASE_COLUMNS = ("params", "attn_impl", "scan_impl", "n_tokens", "frames")
REPORTED_ONLY = ("MISSING", "NEW")  # verdicts about a case's presence, not a comparison of it


@dataclass(frozen=True)
class DeterministicPolicy:
    metrics: tuple[str, ...] = field(default=(), metadata={"help": "metric or metric:stat names that must not change"})
    rtol: float = field(default=0.0, metadata={"help": "relative change still counted as no change"})
    gate: bool = field(default=True, metadata={"help": "a change fails the check"})


@dataclass(frozen=True)
class MemoryPolicy:
    metrics: tuple[str, ...] = field(default=(), metadata={"help": "allocator/OS memory metrics (metric:stat)"})
    rtol: float = field(default=0.05, metadata={"help": "relative tolerance"})
    gate: bool = field(default=True, metadata={"help": "growth beyond rtol fails the check"})


@dataclass(frozen=True)
class LatencyPolicy:
    metric: str = field(default="latency_s", metadata={"help": "the latency metric (its protocol's headline stat)"})
    threshold: float = field(default=1.1, metadata={"help": "new/old ratio (either way) that counts as a change"})
    alpha: float = field(default=0.01, metadata={"help": "significance level of the Mann-Whitney U test"})
    gate: bool = field(default=True, metadata={"help": "SLOWER fails the check"})


@dataclass(frozen=True)
class RatiosPolicy:
    tolerance: float = field(default=1.25, metadata={"help": "factor a within-run speed-up may move (either way)"})
    gate: bool = field(default=True, metadata={"help": "a ratio that got worse fails the check"})


@dataclass(frozen=True)
class StatusPolicy:
    gate: bool = field(default=True, metadata={"help": "a case ok in the baseline and failed now fails the check"})


@dataclass(frozen=True)
class Policy:
    deterministic: DeterministicPolicy = field(default_factory=DeterministicPolicy)
    memory: MemoryPolicy = field(default_factory=MemoryPolicy)
    latency: LatencyPolicy = field(default_factory=LatencyPolicy)
    ratios: RatiosPolicy = field(default_factory=RatiosPolicy)
    status: StatusPolicy = field(default_factory=StatusPolicy)


@dataclass
class Table:
    """A results table with its raw latency samples (case_id -> seconds), when the run kept them."""

    source: str
    df: pd.DataFrame
    samples: dict[str, list[float]] = field(default_factory=dict)


@dataclass
class Verdict:
    verdict: str
    case: str
    metric: str
    baseline: float | str | None = None
    new: float | str | None = None
    change: float | None = None  # new / baseline
    gated: bool = False  # True: this verdict fails the check
    note: str = ""


def load_policy(path: str | Path | None) -> dict:
    """A policy file (or a built-in one by name), checked, as a dict of sections with every default filled."""
    path = Path(path) if path else POLICY_DIR / "default.toml"
    if not path.exists() and (POLICY_DIR / f"{path}.toml").exists():
        path = POLICY_DIR / f"{path}.toml"
    if not path.exists():
        raise UserInputError(f"policy file {path} not found (built-in: {', '.join(p.stem for p in POLICY_DIR.glob('*.toml'))})")
    table = read_toml(path)
    if not table:  # an empty (or emptied) file would silently compare with every default
        raise UserInputError(f"{path}: an empty policy (no sections); give a policy file, or a built-in one: "
                             f"{', '.join(sorted(p.stem for p in POLICY_DIR.glob('*.toml')))}")
    policy = build(Policy, table, str(path))
    check_policy(policy, str(path))
    return dataclasses.asdict(policy)


def check_policy(policy: Policy, where: str) -> None:
    """Ranges the types alone do not say (the validator already refused nan and infinities)."""
    for name, section in (("deterministic", policy.deterministic), ("memory", policy.memory)):
        if section.rtol < 0:
            raise UserInputError(f"{where}: [{name}] rtol must be >= 0, got {section.rtol:g}")
    if policy.latency.threshold < 1:
        raise UserInputError(f"{where}: [latency] threshold must be >= 1 (a new/old ratio, either way), "
                             f"got {policy.latency.threshold:g}")
    if not 0 < policy.latency.alpha <= 1:
        raise UserInputError(f"{where}: [latency] alpha must be in (0, 1], got {policy.latency.alpha:g}")
    if policy.ratios.tolerance < 1:
        raise UserInputError(f"{where}: [ratios] tolerance must be >= 1 (a factor, either way), "
                             f"got {policy.ratios.tolerance:g}")


def _samples_problem(record: dict) -> str | None:
    """Why a samples.jsonl record cannot give raw latencies (None: it can, or it holds none)."""
    if not isinstance(record.get("case_id"), str):
        return "no case_id"
    for key in ("samples_s", "runs_s"):
        values = record.get(key)
        if values is not None and not (isinstance(values, list) and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values)):
            return f"{key} is not a list of finite numbers"
    return None


def load_table(path: str | Path) -> Table:
    """A run directory or a results CSV/Parquet/JSON-lines file; raw samples from samples.jsonl beside it.
    Anything `load` cannot make a results table of is its UserInputError; a samples record without
    usable numbers is skipped (with one warning)."""
    path = Path(path)
    if not path.exists():
        raise UserInputError(f"{path} does not exist; give a run directory or a results .csv/.parquet/.jsonl file")
    df = load(path)
    run_dir = path if path.is_dir() else path.parent
    samples = {}
    cases = set(df["case_id"])
    for rec in read_jsonl(run_dir / "samples.jsonl", check=_samples_problem, what="timing samples"):
        values = rec.get("samples_s") or rec.get("runs_s")
        if values and rec["case_id"] in cases:
            samples[rec["case_id"]] = values  # later attempts overwrite earlier ones
    return Table(str(path), df, samples)


def _matches(metric: str, stat: str, names: list[str]) -> bool:
    return metric in names or f"{metric}:{stat}" in names


def _label(row) -> str:
    impl = row["attn_impl"] if isinstance(row["attn_impl"], str) else row["scan_impl"]
    return f"{row['model']} {impl} {row['protocol']} b{row['batch']} {row['n_tokens']}tok"


def compare(base: Table, new: Table, policy: dict) -> list[Verdict]:
    versions = {int(v) for v in base.df["schema_version"].dropna().unique()}, {int(v) for v in new.df["schema_version"].dropna().unique()}
    if versions[0] != versions[1]:
        raise UserInputError(f"schema versions differ: baseline {sorted(versions[0])}, new {sorted(versions[1])}; "
                             "regenerate the baseline with this version of the suite (`ssamba-bench baseline update`)")
    b_status = base.df[base.df["metric"] == "status"].drop_duplicates("case_id").set_index("case_id")
    n_status = new.df[new.df["metric"] == "status"].drop_duplicates("case_id").set_index("case_id")
    common = b_status.index.intersection(n_status.index)
    if common.empty:
        raise UserInputError(f"no common cases between {base.source} and {new.source}: were they made from the same "
                             "sweep configuration?")
    out = [Verdict("MISSING", _label(b_status.loc[c]), "case", b_status.loc[c, "status"], None,
                   note="in the baseline only") for c in b_status.index.difference(n_status.index)]
    out += [Verdict("NEW", _label(n_status.loc[c]), "case", None, n_status.loc[c, "status"],
                    note="in the new table only") for c in n_status.index.difference(b_status.index)]
    det, mem, lat = policy.get("deterministic", {}), policy.get("memory", {}), policy.get("latency", {})
    ok_both = []
    for case in common:
        b, n = b_status.loc[case], n_status.loc[case]
        label = _label(n)
        if b["status"] == "ok" and n["status"] != "ok":
            out.append(Verdict("FAILED", label, "status", "ok", n["status"], gated=policy.get("status", {}).get("gate", True),
                               note=str(n["error"] or "")[:120]))
            continue
        if b["status"] != "ok" or n["status"] != "ok":
            verdict = "SAME" if b["status"] == n["status"] else "FASTER"  # a failure that went away
            out.append(Verdict(verdict, label, "status", b["status"], n["status"]))
            continue
        ok_both.append(case)
        for col in CASE_COLUMNS:
            if str(b[col]) != str(n[col]):
                out.append(Verdict("SLOWER", label, col, str(b[col]), str(n[col]), gated=det.get("gate", True),
                                   note="case implementation changed"))
    bm = base.df[base.df["case_id"].isin(ok_both) & (base.df["metric"] != "status")]
    nm = new.df[new.df["case_id"].isin(ok_both) & (new.df["metric"] != "status")]
    merged = bm.merge(nm, on=["case_id", "metric", "stat"], suffixes=("_b", "_n"))
    for _, r in merged.iterrows():
        metric, stat = r["metric"], r["stat"]
        old, cur = r["value_b"], r["value_n"]
        if pd.isna(old) or pd.isna(cur):
            continue
        label = _label({k: r[f"{k}_n"] for k in ("model", "attn_impl", "scan_impl", "protocol", "batch", "n_tokens")})
        name = f"{metric}:{stat}"
        change = cur / old if old else (1.0 if cur == old else math.inf)
        if _matches(metric, stat, det.get("metrics", [])):
            if abs(cur - old) > det.get("rtol", 0.0) * abs(old):
                out.append(Verdict("SLOWER" if cur > old else "FASTER", label, name, old, cur, change,
                                   gated=det.get("gate", True), note="deterministic metric changed"))
            else:
                out.append(Verdict("SAME", label, name, old, cur, change))
        elif _matches(metric, stat, mem.get("metrics", [])):
            rtol = mem.get("rtol", 0.05)
            verdict = "SLOWER" if change > 1 + rtol else "FASTER" if change < 1 - rtol else "SAME"
            out.append(Verdict(verdict, label, name, old, cur, change, gated=verdict == "SLOWER" and mem.get("gate", True)))
        elif metric == lat.get("metric", "latency_s") and stat == HEADLINE_STAT.get(r["protocol_n"]):
            out.append(_latency_verdict(label, name, old, cur, change, base.samples.get(r["case_id"]),
                                        new.samples.get(r["case_id"]), lat))
    out += _ratio_verdicts(base.df, new.df, policy.get("ratios", {}))
    if all(v.verdict in REPORTED_ONLY for v in out):
        out.append(Verdict("EMPTY", f"{len(common)} common case(s)", "-", gated=True,
                           note="nothing was comparable: no status or metric value of a common case in both tables "
                                "that the policy compares"))
    return out


def _latency_verdict(label, name, old, cur, change, b_samples, n_samples, lat: dict) -> Verdict:
    threshold, alpha = lat.get("threshold", 1.1), lat.get("alpha", 0.01)
    if b_samples and n_samples:
        p = mann_whitney_u_pvalue(b_samples, n_samples)
        significance = f"p={p:.2g}, n={len(b_samples)}/{len(n_samples)}"
        significant = p < alpha
    else:
        significance, significant = "no raw samples", False
    big = change > threshold or change < 1 / threshold
    if big and significant:
        verdict = "SLOWER" if change > 1 else "FASTER"
    elif big:
        verdict = "AMBIGUOUS"
    else:
        verdict = "SAME"
    return Verdict(verdict, label, name, old, cur, change, gated=verdict == "SLOWER" and lat.get("gate", True),
                   note=significance)


def _ratio_verdicts(base_df: pd.DataFrame, new_df: pd.DataFrame, ratios: dict) -> list[Verdict]:
    """Geometric-mean speed-up of each family over each SSAST kernel, per setting and size, in each run.

    Built on each case's fastest call (stat `min`): contention on a shared machine only ever adds
    time, so the minimum is the statistic least moved by it."""
    tol = ratios.get("tolerance", 1.25)
    group = ["protocol", "device", "dtype", "batch", "size", "family", "scan_impl", "attn_impl_ref"]

    def geo(df):
        comps = pd.DataFrame(comparisons(case_values(df, latency_stat="min")))
        if comps.empty:
            return pd.Series(dtype=float)
        return comps.groupby(group, dropna=False)["speedup"].apply(lambda s: float(np.exp(np.log(s.astype(float)).mean())))

    b, n = geo(base_df), geo(new_df)
    out = []
    for key in b.index.intersection(n.index):
        change = n[key] / b[key]
        protocol, device, dtype, batch, size, family, scan, impl = key
        scan = f" [{scan}]" if isinstance(scan, str) else ""
        label = f"{family}_{size}{scan} / ssast_{size} ({impl}) {protocol} b{batch} {device}"
        verdict = "SLOWER" if change < 1 / tol else "FASTER" if change > tol else "SAME"
        out.append(Verdict(verdict, label, "speedup_geomean:min", b[key], n[key], change,
                           gated=verdict == "SLOWER" and ratios.get("gate", True),
                           note=f"within-run ratio, tolerance {tol}x"))
    return out


def render(verdicts: list[Verdict], show_same: bool = False) -> str:
    counts = pd.Series([v.verdict for v in verdicts]).value_counts()
    lines = ["  ".join(f"{k}={counts.get(k, 0)}" for k in ("SAME", "FASTER", "SLOWER", "AMBIGUOUS", "FAILED", "MISSING", "NEW"))]
    shown = [v for v in verdicts if show_same or v.verdict != "SAME"]
    shown.sort(key=lambda v: (not v.gated, v.verdict, v.case, v.metric))
    if shown:
        lines.append(f"{'verdict':<10} {'gate':<5} {'case':<44} {'metric':<28} {'baseline':>12} {'new':>12} {'new/old':>8}  note")
    for v in shown:
        lines.append(f"{v.verdict:<10} {'FAIL' if v.gated else '':<5} {v.case[:44]:<44} {v.metric[:28]:<28} "
                     f"{_fmt(v.baseline):>12} {_fmt(v.new):>12} {_fmt(v.change):>8}  {v.note}")
    gated = [v for v in verdicts if v.gated]
    empty = next((v for v in verdicts if v.verdict == "EMPTY"), None)
    if empty is not None:
        lines.append(f"FAIL: {empty.note} ({empty.case})")
    else:
        lines.append(f"FAIL: {len(gated)} gated regression(s)" if gated else "PASS: no gated regression")
    return "\n".join(lines)


def _fmt(x) -> str:
    if x is None:
        return "-"
    if isinstance(x, str):
        return x[:12]
    if isinstance(x, float) and (math.isinf(x) or math.isnan(x)):
        return str(x)
    return f"{x:.4g}"


def verdicts_json(verdicts: list[Verdict]) -> str:
    return json.dumps([v.__dict__ for v in verdicts], default=str, indent=1)
