"""The accuracy half of the claims report: "as accurate or better" next to "much cheaper".

Reads the accuracy rows of the result schema (protocol "finetune", written by `ssamba-bench accuracy`
/ `finetune`, bench/accuracy/rows.py): per (task, split, model, init) the accuracy and macro-F1 with
the training budget that produced them (steps, batch, wall time). For every non-SSAST family it pairs
the same task, split, size and initialisation with SSAST and gives the difference in accuracy points.
Real out-of-domain rows (split `digits-real`) stay rows of their own: nothing is averaged across
splits or tasks.
"""

from __future__ import annotations

import pandas as pd

from bench.common.vocabulary import ACCURACY_PROTOCOLS
from bench.store.schema import plain, series_families

REFERENCE_FAMILY = "ssast"
SPLIT_ORDER = {"val": 0, "test": 1, "digits-real": 2}


def accuracy_rows(df: pd.DataFrame) -> pd.DataFrame:
    """The accuracy rows of a results table (any protocol in ACCURACY_PROTOCOLS), ok cases only."""
    return df[df["protocol"].isin(ACCURACY_PROTOCOLS) & (df["status"] == "ok")]


def accuracy_section(df: pd.DataFrame) -> dict | None:
    """{"results": [...], "pairs": [...], "failed": [...]} of the accuracy rows in `df`, None without any."""
    acc_all = df[df["protocol"].isin(ACCURACY_PROTOCOLS)]
    if acc_all.empty:
        return None
    failed = acc_all[(acc_all["metric"] == "status") & (acc_all["status"] != "ok")]
    acc = accuracy_rows(df)
    series = ["task", "model", "family", "size", "init"]
    if "model_options" in acc:
        acc = acc.assign(family=series_families(acc["family"], acc["model_options"]))
    per_case = acc.drop_duplicates("case_id").set_index("case_id")
    wall = acc[acc["metric"] == "train_time_s"].drop_duplicates("case_id").set_index("case_id")["value"]
    scores = acc[acc["metric"].isin(["accuracy", "macro_f1"])]
    table = scores.pivot_table(index=["case_id", "split"], columns="metric", values="value", aggfunc="first")
    evaluated = scores.drop_duplicates(["case_id", "split"]).set_index(["case_id", "split"])["n_samples"]
    results = []
    for (case_id, split), row in table.iterrows():
        c = per_case.loc[case_id]
        results.append({
            **{k: plain(c[k]) for k in series}, "split": split, "case_id": case_id,
            "accuracy": plain(row.get("accuracy")), "macro_f1": plain(row.get("macro_f1")),
            "n_eval": plain(evaluated.get((case_id, split))), "train_steps": plain(c["train_steps"]),
            "batch": plain(c["batch"]), "train_time_s": plain(wall.get(case_id)), "scan_impl": plain(c["scan_impl"]),
            "device_name": plain(c["device_name"]),
        })
    results.sort(key=lambda r: (str(r["task"]), SPLIT_ORDER.get(r["split"], 9), str(r["size"]), str(r["init"]),
                                str(r["family"]) != REFERENCE_FAMILY, str(r["family"])))
    return {"results": results, "pairs": _pairs(results),
            "failed": [{k: plain(r[k]) for k in ("model", "task", "init", "error")} for _, r in failed.iterrows()]}


def _pairs(results: list[dict]) -> list[dict]:
    """Each non-SSAST family against SSAST on the same task, split, size and init: against the SSAST
    case at the same step budget where there is one, else against each SSAST budget present (an
    equal-time comparison), the steps and training times of both sides kept for the report to state."""
    df = pd.DataFrame(results)
    if df.empty:
        return []
    key = ["task", "split", "size", "init"]
    ref = df[df["family"] == REFERENCE_FAMILY]
    pairs = df[df["family"] != REFERENCE_FAMILY].merge(ref, on=key, suffixes=("", "_ref"))
    same = pairs["train_steps"] == pairs["train_steps_ref"]
    has_same = same.groupby([pairs["case_id"], pairs["split"]]).transform("any")
    pairs = pairs[same | ~has_same]
    fields = ("accuracy", "train_steps", "train_time_s")
    return [{**{k: plain(p[k]) for k in key}, "family": p["family"],
             **{f: plain(p[f]) for f in fields}, **{f"{f}_ref": plain(p[f"{f}_ref"]) for f in fields},
             "difference_points": plain(100 * (p["accuracy"] - p["accuracy_ref"]))}
            for _, p in pairs.iterrows()]


def _budget_note(p: dict) -> str:
    """'' at equal steps; otherwise both sides' steps and training time (an unequal-steps pair)."""
    if p["train_steps"] == p["train_steps_ref"]:
        return ""
    return (f"; {p['train_steps']} vs {p['train_steps_ref']} steps, {_secs(p['train_time_s'])} vs "
            f"{_secs(p['train_time_s_ref'])} of training")


def render_accuracy(section: dict) -> list[str]:
    """Markdown lines of the accuracy section."""
    out = ["## Accuracy", "",
           "Fine-tuned with one shared recipe (bench/configs/accuracy*.toml; `pretrained`: after the suite's",
           "masked-patch pretraining, `scratch`: random init); each row states its step budget and training",
           "time, and a pair at unequal steps (an equal-time comparison) says so. `digits-real` is real",
           "recorded speech scored by a keyword model: out of domain, never averaged with the rest.", ""]
    results = section["results"]
    for task in sorted({r["task"] for r in results}):
        rows = [r for r in results if r["task"] == task]
        out += [f"### {task}", "",
                "| model | init | split | accuracy | macro-F1 | clips | steps x batch | train time |",
                "|---|---|---|---:|---:|---:|---:|---:|"]
        for r in rows:
            label = r["model"] + (f" [{r['family'].split('[', 1)[1]}" if "[" in str(r["family"]) else "")
            out.append(f"| {label} | {r['init']} | {r['split']} | {_frac(r['accuracy'])} | {_frac(r['macro_f1'])} | "
                       f"{r['n_eval'] if r['n_eval'] is not None else '-'} | {r['train_steps']} x {r['batch']} | "
                       f"{_secs(r['train_time_s'])} |")
        pairs = [p for p in section["pairs"] if p["task"] == task]
        if pairs:
            out += ["", "Against SSAST (same task, split, size and init; accuracy points):", ""]
            out += [f"- {p['family']} {p['size']} {p['init']}, {p['split']}: {_frac(p['accuracy'])} vs "
                    f"{_frac(p['accuracy_ref'])} ({p['difference_points']:+.1f} points{_budget_note(p)})" for p in pairs]
        out.append("")
    if section["failed"]:
        out += ["Failed accuracy cases:", ""]
        out += [f"- {f['model']} {f['task']} {f['init']}: {f['error']}" for f in section["failed"]]
        out.append("")
    return out


def _frac(x) -> str:
    return "-" if x is None else f"{x:.3f}"


def _secs(x) -> str:
    return "-" if x is None else (f"{x:.0f} s" if x >= 10 else f"{x:.1f} s")
