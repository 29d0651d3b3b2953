"""Running accuracy cases: one fine-tuning case into a run directory, and a whole accuracy config.

`run_case` builds the model (scratch or from a pretrained checkpoint), fine-tunes it on the task's
train split, evaluates val and test (and digits-real for a kws model) and appends the case's rows
to the run's results.jsonl (bench/store/run_store.py `RunStore`). A training failure becomes an `error` row;
bad input (unknown task, unbuilt or corrupt dataset, wrong checkpoint) is a UserInputError before
training starts. `run_config` walks tasks x inits x models in the config's order, pretraining each
model once on demand (the checkpoint is cached in RUN_DIR/checkpoints/, its log in
RUN_DIR/pretrain/), and skips cases already recorded ok, so an interrupted run resumes.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import torch

from bench.accuracy.checkpoint import build_model, registry_name, save_pretrained
from bench.accuracy.config import AccuracyConfig
from bench.accuracy.data import DIGITS_REAL, features
from bench.accuracy.finetune_loop import finetune_and_evaluate
from bench.accuracy.pretrain_loop import pretrain
from bench.accuracy.recipe import FinetuneRecipe
from bench.accuracy.rows import PROTOCOL, FinetuneCase, result_rows
from bench.data import read_manifest
from bench.measure.env import collect_env
from bench.store.jsonl import append_jsonl
from bench.store.run_store import RunStore, latest_attempts
from bench.store.schema import now_iso
from models.errors import UserInputError
from models.tokenizer import PatchGrid


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def make_case(family: str, size: str, task: str, init: str, init_key: str, recipe: FinetuneRecipe,
              small: bool, purpose: str = "result") -> FinetuneCase:
    grid = PatchGrid(fstride=recipe.stride, tstride=recipe.stride)
    return FinetuneCase(model=registry_name(family, size), family=family, size=size, task=task, init=init,
                        init_key=init_key, recipe=recipe, small=small, n_tokens=grid.n_tokens(recipe.frames),
                        frames=recipe.frames, attn_impl="eager" if family == "ssast" else None, purpose=purpose)


def digits_real_available(cache, small: bool) -> bool:
    try:
        read_manifest(DIGITS_REAL, cache=cache, small=small)
        return True
    except UserInputError:
        return False


def evaluation_sets(task: str, cache, small: bool, frames: int, train_meta: dict, digits_real: bool) -> dict:
    evals = {split: features(task, split, cache, small, frames)[:2] for split in ("val", "test")}
    if task == "kws" and digits_real:
        x, y, meta = features(DIGITS_REAL, "test", cache, small, frames, tuple(train_meta["stats"]))
        if meta["label_names"] != train_meta["label_names"]:
            raise UserInputError(f"{DIGITS_REAL} labels do not match the kws labels of this build; rebuild both")
        evals[DIGITS_REAL] = (x, y)
    return evals


def run_case(case: FinetuneCase, init_path, store: RunStore, run_id: str, env: dict, *, cache=None,
             digits_real: bool = True, log=print) -> list[dict]:
    """Fine-tune and evaluate one case; append and return its rows."""
    recipe = case.recipe
    x, y, meta = features(case.task, "train", cache, case.small, recipe.frames)
    evals = evaluation_sets(case.task, cache, case.small, recipe.frames, meta, digits_real)
    torch.manual_seed(recipe.seed)
    model = build_model(case.model, init_path, num_classes=len(meta["label_names"]), frames=recipe.frames,
                        stride=recipe.stride, scan_impl=case.scan_impl)
    log(f"finetune {case.label()}: {len(x)} clips, {len(meta['label_names'])} classes, {model.n_tokens} patches, "
        f"{recipe.steps} steps x batch {recipe.batch}")
    store.event("case_start", case_id=case.case_id, case=case.label())
    info = {**model.describe(), "threads": torch.get_num_threads(),
            "device_name": env.get("device_names", {}).get("cpu")}
    try:
        result = finetune_and_evaluate(model, (x, y), evals, recipe, log=log)
        error = None
    except Exception as err:  # noqa: BLE001 - a failed case is a row, not the end of the run
        result, error = None, f"{type(err).__name__}: {err}".splitlines()[0]
    info["scan_impl"] = model.describe()["scan_impl"]
    rows = result_rows(case, result, run_id=run_id, env=env, info=info, error=error,
                       n_classes=len(meta["label_names"]))
    store.event("case_end", case_id=case.case_id, status="ok" if error is None else "error")
    append_jsonl(store.results, rows)
    if result is None:
        log(f"  error: {error}")
    else:
        scores = "  ".join(f"{s} acc {m['accuracy']:.3f} f1 {m['macro_f1']:.3f}" for s, m in result["eval"].items())
        log(f"  {scores}  (train {result['train_time_s']:.0f} s, eval {result['eval_time_s']:.0f} s)")
    return rows


def pretrain_key(cfg: AccuracyConfig) -> str:
    blob = {"recipe": cfg.pretrain.key(), "tasks": list(cfg.pretrain_tasks), "small": cfg.small}
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:16]


def ensure_pretrained(cfg: AccuracyConfig, family: str, run_dir: Path, log=print) -> Path:
    """The pretrained checkpoint of `family` for this config, pretraining it if not cached."""
    name = registry_name(family, cfg.size)
    key = pretrain_key(cfg)
    path = run_dir / "checkpoints" / f"pretrain-{name}-{key}.pth"
    if path.is_file():
        log(f"pretrained {name}: cached {path}")
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    pre, summary = pretrain(name, cfg.pretrain_tasks, cfg.pretrain, cache=cfg.cache or None, small=cfg.small, log=log)
    save_pretrained(pre, path, name)
    log_dir = run_dir / "pretrain"
    log_dir.mkdir(exist_ok=True)
    (log_dir / f"{name}-{key}.json").write_text(json.dumps({**summary, "finished": now_iso(),
                                                            "checkpoint": path.name}, indent=1) + "\n")
    return path


def check_data(cfg: AccuracyConfig) -> None:
    """Every dataset the config needs is built (a one-line error naming the build command otherwise)."""
    cache = cfg.cache or None
    for task in dict.fromkeys((*cfg.tasks, *(cfg.pretrain_tasks if "pretrained" in cfg.inits else ()))):
        read_manifest(task, cache=cache, small=cfg.small)
    if cfg.digits_real and "kws" in cfg.tasks and not cfg.small:
        read_manifest(DIGITS_REAL, cache=cache, small=cfg.small)


def run_config(cfg: AccuracyConfig, run_dir: Path, log=print) -> list[dict]:
    torch.set_num_threads(cfg.threads)
    check_data(cfg)
    store = RunStore(run_dir)
    env = collect_env(cfg.threads)
    run_id = store.open(cfg.name, cfg.as_dict(), env)
    done = {cid for cid, status in store.statuses().items() if status == "ok"}
    t0 = time.perf_counter()
    for task in cfg.tasks:
        recipe = cfg.finetune_recipe(task)
        for init in cfg.inits:  # every model pretrained first: the headline cases finish first
            for family in cfg.models:
                init_key = pretrain_key(cfg) if init == "pretrained" else "scratch"
                case = make_case(family, cfg.size, task, init, init_key, recipe, cfg.small, cfg.purpose)
                if case.case_id in done:
                    log(f"skip {case.label()}: already recorded ok")
                    continue
                init_path = ensure_pretrained(cfg, family, run_dir, log) if init == "pretrained" else None
                run_case(case, init_path, store, run_id, env, cache=cfg.cache or None,
                         digits_real=cfg.digits_real and not cfg.small, log=log)
                log(f"  [{time.perf_counter() - t0:.0f} s elapsed]")
    store.export()
    return latest_attempts(store.rows())


# ------------------------------------------------------------------------------------------ the table


def accuracy_table(rows: list[dict]) -> str:
    """Markdown table: model, task, init, split, accuracy, macro_f1, steps, train wall time."""
    cases: dict[str, dict] = {}
    for r in rows:
        if r.get("protocol") != PROTOCOL:
            continue
        c = cases.setdefault(r["case_id"], {"model": r["model"], "task": r["task"], "init": r["init"],
                                            "steps": r["train_steps"], "batch": r["batch"], "splits": {}})
        if r["metric"] == "status":
            c["status"], c["error"] = r["status"], r["error"]
        elif r["metric"] in ("accuracy", "macro_f1"):
            c["splits"].setdefault(r["split"], {})[r["metric"]] = r["value"]
        elif r["metric"] == "train_time_s":
            c["train_time_s"] = r["value"]
    lines = ["| model | task | init | split | accuracy | macro_f1 | steps | batch | train wall time |",
             "|---|---|---|---|---:|---:|---:|---:|---:|"]
    for c in cases.values():
        if c.get("status") != "ok":
            lines.append(f"| {c['model']} | {c['task']} | {c['init']} | - | {c.get('status')}: {c.get('error')} "
                         f"| | {c['steps']} | {c['batch']} | |")
            continue
        for split, m in c["splits"].items():
            lines.append(f"| {c['model']} | {c['task']} | {c['init']} | {split} | {m['accuracy']:.3f} | "
                         f"{m['macro_f1']:.3f} | {c['steps']} | {c['batch']} | {c['train_time_s']:.0f} s |")
    return "\n".join(lines)
