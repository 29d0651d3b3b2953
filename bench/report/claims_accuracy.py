"""The accuracy half of the claims report: "as accurate or better" next to "much cheaper".

Reads the accuracy rows of the result schema (protocol "finetune", written by `ssamba-bench accuracy`
/ `finetune`, bench/accuracy/rows.py): per (task, split, model, init) the accuracy and macro-F1 with
the training budget that produced them (steps, batch, wall time). For every non-SSAST family it pairs
the same task, split, size and initialisation with SSAST and gives the difference in accuracy points.
Real out-of-domain rows (split `digits-real`) stay rows of their own: nothing is averaged across
splits or tasks.

Chance-level numbers are never presented as results. Every row states its multiple of chance (chance
= 1 / the classes its classifier chooses from, the row's `n_classes`); a row below LEARNED_X_CHANCE
(3x) is marked as not evidence of learning, and a pair with such a side says so. Rows of a run whose
config says `purpose = "pipeline_check"` (the main job's short accuracy_ci run: its budget only proves
that pretraining, fine-tuning and evaluation run end to end) are shown apart, labelled "pipeline
check, not a result", never paired; and the report then adds the committed reference accuracy table
(REFERENCE_ACCURACY, from results/reference/), labelled with its source, machine and budget.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from bench.common.vocabulary import ACCURACY_PROTOCOLS, LEARNED_X_CHANCE, TASK_CLASSES
from bench.store.run_store import load_runs
from bench.store.schema import plain, series_families

REFERENCE_FAMILY = "ssast"
SPLIT_ORDER = {"val": 0, "test": 1, "digits-real": 2}
PIPELINE_CHECK = "pipeline_check"
REPO_ROOT = Path(__file__).resolve().parents[2]
# The committed reference accuracy runs the report shows beside a pipeline check (test split): real
# `ssamba-bench accuracy` runs, their configs (config.toml) and logs beside their rows.
REFERENCE_ACCURACY = (
    {"title": "Full table: kws, events, speakers; pretrained and scratch",
     "dirs": ("results/reference/accuracy-table-cpu-2core",),
     "budget": "config `bench/configs/accuracy.toml`: pretraining 64 steps x 32 clips; fine-tuning 600 steps x 32 "
               "(kws), 150 x 32 (events, speakers), patch stride 10",
     "note": "the scratch kws rows' wall times were shared with another job (alone: ~0.9 s/step SSAST, ~2.7 s/step "
             "SSAMBA)"},
    {"title": "kws at equal training time (~48 min each)",
     "dirs": ("results/reference/accuracy-kws-3000-cpu-2core", "results/reference/accuracy-kws-equal-time-cpu-2core"),
     "budget": "configs `bench/configs/accuracy_kws_3000.toml` (SSAST-tiny, 3000 steps x 32) and "
               "`bench/configs/accuracy_kws_equal_time.toml` (SSAMBA-tiny, 1000 steps x 32), both after the "
               "same 64-step pretraining",
     "note": ""},
)


def chance_of(task, n_classes) -> float | None:
    """1 / the classes the classifier chooses from: the row's `n_classes`, else the full task's."""
    n = plain(n_classes)
    n = TASK_CLASSES.get(str(task)) if n is None else n
    return 1.0 / n if n else None


def _purpose(value) -> str:
    return "result" if value is None or pd.isna(value) else str(value)


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
    for col in ("n_classes", "purpose"):  # rows written before these columns existed
        if col not in acc:
            acc = acc.assign(**{col: None})
    per_case = acc.drop_duplicates("case_id").set_index("case_id")
    wall = acc[acc["metric"] == "train_time_s"].drop_duplicates("case_id").set_index("case_id")["value"]
    scores = acc[acc["metric"].isin(["accuracy", "macro_f1"])]
    table = scores.pivot_table(index=["case_id", "split"], columns="metric", values="value", aggfunc="first")
    evaluated = scores.drop_duplicates(["case_id", "split"]).set_index(["case_id", "split"])["n_samples"]
    results = []
    for (case_id, split), row in table.iterrows():
        c = per_case.loc[case_id]
        accuracy, chance = plain(row.get("accuracy")), chance_of(c["task"], c["n_classes"])
        x_chance = accuracy / chance if accuracy is not None and chance else None
        results.append({
            **{k: plain(c[k]) for k in series}, "split": split, "case_id": case_id,
            "accuracy": accuracy, "macro_f1": plain(row.get("macro_f1")),
            "n_eval": plain(evaluated.get((case_id, split))), "train_steps": plain(c["train_steps"]),
            "batch": plain(c["batch"]), "train_time_s": plain(wall.get(case_id)), "scan_impl": plain(c["scan_impl"]),
            "device_name": plain(c["device_name"]), "purpose": _purpose(c["purpose"]), "chance": chance,
            "x_chance": x_chance, "learned": None if x_chance is None else bool(x_chance >= LEARNED_X_CHANCE),
        })
    results.sort(key=lambda r: (str(r["task"]), SPLIT_ORDER.get(r["split"], 9), str(r["size"]), str(r["init"]),
                                str(r["family"]) != REFERENCE_FAMILY, str(r["family"])))
    failed_cases = [{k: plain(r[k]) for k in ("model", "task", "init", "error")} for _, r in failed.iterrows()]
    return {"results": results, "pairs": _pairs([r for r in results if r["purpose"] != PIPELINE_CHECK]),
            "failed": failed_cases, "pipeline_check": any(r["purpose"] == PIPELINE_CHECK for r in results),
            "learned_x_chance": LEARNED_X_CHANCE}


def pipeline_check_configs(run_dirs) -> list[dict]:
    """What each given pipeline-check run was configured to do, from its run.json (the accuracy config
    it recorded): models, tasks, inits, pretraining and fine-tuning budgets. Unreadable ones are skipped:
    the rows alone still say steps x batch."""
    out = []
    for d in run_dirs:
        try:
            manifest = json.loads((Path(d) / "run.json").read_text())
            cfg = manifest["config"]
            if cfg.get("purpose") != PIPELINE_CHECK:
                continue
            out.append({"run_dir": str(d), "config_name": str(manifest.get("config_name")),
                        "models": list(cfg["models"]), "size": cfg["size"], "tasks": list(cfg["tasks"]),
                        "inits": list(cfg["inits"]), "pretrain_steps": int(cfg["pretrain"]["steps"]),
                        "pretrain_batch": int(cfg["pretrain"]["batch"]), "finetune_steps": int(cfg["finetune"]["steps"]),
                        "finetune_batch": int(cfg["finetune"]["batch"])})
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return out


def reference_accuracy(root: Path = REPO_ROOT, sources=REFERENCE_ACCURACY) -> list[dict]:
    """The committed reference accuracy runs (test split), each with its source directories, machine,
    budget and when it was measured; a source that is not there is reported as missing, not raised."""
    out = []
    for src in sources:
        block = {k: src[k] for k in ("title", "budget", "note")} | {"dirs": list(src["dirs"])}
        missing = [d for d in src["dirs"] if not (root / d / "results.jsonl").is_file()]
        if missing:
            out.append({**block, "missing": missing, "results": []})
            continue
        df = load_runs([root / d for d in src["dirs"]])
        section = accuracy_section(df) or {"results": []}
        ok = accuracy_rows(df)
        stamps = ok["timestamp"].dropna().astype(str).str[:10]
        block.update(
            machine=", ".join(sorted({str(v) for v in ok["device_name"].dropna().unique()})) or "unknown",
            threads=sorted({int(v) for v in ok["threads"].dropna().unique()}),
            torch_version=", ".join(sorted({str(v) for v in ok["torch_version"].dropna().unique()})) or "unknown",
            measured=f"{stamps.min()}" + (f" to {stamps.max()}" if stamps.max() != stamps.min() else ""),
            results=[r for r in section["results"] if r["split"] == "test"])
        out.append(block)
    return out


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
    fields = ("accuracy", "train_steps", "train_time_s", "learned", "model")
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
    """Markdown lines of the accuracy section (and of the reference table beside a pipeline check)."""
    bar = section.get("learned_x_chance", LEARNED_X_CHANCE)
    out = ["## Accuracy", "",
           "Fine-tuned with one shared recipe (bench/configs/accuracy*.toml; `pretrained`: after the suite's",
           "masked-patch pretraining, `scratch`: random init); each row states its step budget and training",
           "time, and a pair at unequal steps (an equal-time comparison) says so. `digits-real` is real",
           "recorded speech scored by a keyword model: out of domain, never averaged with the rest.",
           f"`x chance` is accuracy over chance (1 / classes); below {bar:g}x chance a row is marked, not presented",
           "as a result.", ""]
    results = section["results"]
    checks = [r for r in results if r["purpose"] == PIPELINE_CHECK]
    if checks:
        out += _pipeline_check_intro(checks, bar, section.get("pipeline_configs", []))
    for task in sorted({r["task"] for r in results}):
        rows = [r for r in results if r["task"] == task]
        chance = next((r["chance"] for r in rows if r["chance"]), None)
        out += [f"### {task}" + (f" (chance {chance:.3f}, {bar:g}x chance {bar * chance:.3f})" if chance else ""), ""]
        kept = [r for r in rows if r["purpose"] != PIPELINE_CHECK]
        if kept:
            out += _result_table(kept, bar)
        checked = [r for r in rows if r["purpose"] == PIPELINE_CHECK]
        if checked:
            out += [*([""] if kept else []), "**Pipeline check, not results** (the run's config: `purpose = "
                    "\"pipeline_check\"`):", "", *_result_table(checked, bar)]
        pairs = [p for p in section["pairs"] if p["task"] == task]
        if pairs:
            out += ["", "Against SSAST (same task, split, size and init; accuracy points):", ""]
            out += [f"- {p['family']} {p['size']} {p['init']}, {p['split']}: {_frac(p['accuracy'])} vs "
                    f"{_frac(p['accuracy_ref'])} ({p['difference_points']:+.1f} points{_budget_note(p)})"
                    f"{_unlearned_note(p, bar)}" for p in pairs]
        out.append("")
    if section["failed"]:
        out += ["Failed accuracy cases:", ""]
        out += [f"- {f['model']} {f['task']} {f['init']}: {f['error']}" for f in section["failed"]]
        out.append("")
    if section.get("reference") is not None:
        out += render_reference(section["reference"], bar)
    return out


def _verdict(r: dict, bar: float) -> str:
    if r["x_chance"] is None:
        return "- (chance unknown)"
    x = f"{r['x_chance']:.1f}x"
    if r["purpose"] == PIPELINE_CHECK:
        return (f"{x}: pipeline check, not a result" if not r["learned"]
                else f"{x} (>= {bar:g}x chance within the pipeline check's budget)")
    return x if r["learned"] else f"{x}: below {bar:g}x chance, not evidence of learning"


def _result_table(rows: list[dict], bar: float) -> list[str]:
    out = ["| model | init | split | accuracy | macro-F1 | clips | steps x batch | train time | x chance |",
           "|---|---|---|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        label = r["model"] + (f" [{r['family'].split('[', 1)[1]}" if "[" in str(r["family"]) else "")
        out.append(f"| {label} | {r['init']} | {r['split']} | {_frac(r['accuracy'])} | {_frac(r['macro_f1'])} | "
                   f"{r['n_eval'] if r['n_eval'] is not None else '-'} | {r['train_steps']} x {r['batch']} | "
                   f"{_secs(r['train_time_s'])} | {_verdict(r, bar)} |")
    return out


def _pipeline_check_intro(checks: list[dict], bar: float, configs: list[dict]) -> list[str]:
    """What a pipeline check is, its budget, and what its test rows reached, plainly."""
    budgets = sorted({(r["task"], r["train_steps"], r["batch"]) for r in checks})
    cases = {r["case_id"]: r["train_time_s"] for r in checks}
    train = sum(t for t in cases.values() if t is not None)
    tests = [r for r in checks if r["split"] == "test"]
    learned = sorted({f"{r['model']} {r['init']}" for r in tests if r["learned"]})
    configured = "".join(
        f" Config `{c['config_name']}` (its run.json): {', '.join(c['models'])} {c['size']} on {', '.join(c['tasks'])}, "
        f"{' and '.join(c['inits'])}"
        + (f", masked-patch pretraining {c['pretrain_steps']} steps x {c['pretrain_batch']} clips"
           if "pretrained" in c["inits"] else "")
        + f", fine-tuning {c['finetune_steps']} steps x {c['finetune_batch']} clips." for c in configs)
    n = len(cases)
    out = ["**The accuracy run here is a pipeline check, not a result.** Its budget ("
           + "; ".join(f"{task}: fine-tuning {steps} steps x {batch} clips" for task, steps, batch in budgets)
           + f" per case, {n} case{'s' if n != 1 else ''}, {_secs(train)} of fine-tuning in all) only proves that "
           "pretraining, fine-tuning and evaluation run end to end. Its rows below are labelled so; a row under "
           f"{bar:g}x chance is at chance and means nothing about the models.{configured}"]
    if not learned:
        out[-1] += f" No model reached {bar:g}x chance on test within this budget."
    if learned:
        out[-1] += (f" Within this budget {', '.join(learned)} still reached >= {bar:g}x chance on test "
                    "(shown, still as a pipeline check: the other rows did not).")
    out[-1] += (" What the models reach with a real budget is in the committed reference table at the end of "
                "this section (measured earlier, not by this run).")
    return [out[-1], ""]


def _unlearned_note(p: dict, bar: float) -> str:
    """A pair with a side under the bar says so: the difference is against a model that has not learned."""
    under = [m for m, learned in ((p.get("model"), p.get("learned")), (p.get("model_ref"), p.get("learned_ref")))
             if learned is False]
    return (f"; {' and '.join(under)} below {bar:g}x chance at this budget, not evidence of learning"
            if under else "")


def render_reference(blocks: list[dict], bar: float = LEARNED_X_CHANCE) -> list[str]:
    """The committed reference accuracy table (REFERENCE_ACCURACY), labelled as such."""
    out = ["## Reference accuracy (committed results, not measured by this run)", "",
           "Shown beside the pipeline check above: earlier real runs of `ssamba-bench accuracy`, committed in the",
           "repository under results/reference/ (each directory holds its config.toml, env.json, rows and log).",
           "Test split; chance = 1 / classes.", ""]
    for b in blocks:
        out += [f"### Reference: {b['title']}", "", f"Source: {', '.join(f'`{d}/`' for d in b['dirs'])}. "
                f"Budget: {b['budget']}."]
        if b.get("missing"):
            out += [f"Not found in this checkout: {', '.join(f'`{d}/results.jsonl`' for d in b['missing'])}.", ""]
            continue
        out[-1] += (f" Machine: {b['machine']} CPU, {', '.join(map(str, b['threads']))} threads, torch "
                    f"{b['torch_version']}; measured {b['measured']}." + (f" Note: {b['note']}." if b["note"] else ""))
        out += ["", "| task (chance) | model | init | test accuracy | macro-F1 | steps x batch | train time | x chance |",
                "|---|---|---|---:|---:|---:|---:|---|"]
        for r in b["results"]:
            chance = f" ({r['chance']:.3f})" if r["chance"] else ""
            out.append(f"| {r['task']}{chance} | {r['model']} | {r['init']} | {_frac(r['accuracy'])} | "
                       f"{_frac(r['macro_f1'])} | {r['train_steps']} x {r['batch']} | {_secs(r['train_time_s'])} | "
                       f"{_verdict(r, bar)} |")
        out.append("")
    return out


def _frac(x) -> str:
    return "-" if x is None else f"{x:.3f}"


def _secs(x) -> str:
    return "-" if x is None else (f"{x:.0f} s" if x >= 10 else f"{x:.1f} s")
