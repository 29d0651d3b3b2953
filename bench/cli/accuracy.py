"""Run an accuracy config: pretrain each model once, fine-tune every (task, model, init), print the table.

  ssamba-bench accuracy accuracy|accuracy_ci|FILE.toml [--out RUN_DIR]

A config (bench/configs/accuracy*.toml; keys in bench/accuracy/config.py) names the model families
and size, the tasks, the inits (pretrained, scratch), the pretraining and fine-tuning recipes and
the step budgets (the same for every model). Pretraining runs once per model on the unlabelled
training audio of all tasks; its checkpoint is cached in RUN_DIR/checkpoints/ and its held-out
losses logged in RUN_DIR/pretrain/. Rows go to RUN_DIR/results.jsonl (+ .csv, .parquet); rerunning
with the same --out resumes (cases recorded ok are skipped). The table is also written to
RUN_DIR/table.md; a config with `purpose = "pipeline_check"` (accuracy_ci: the main job's run) is
labelled there, and in every row, as a pipeline check, not a result.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from bench.accuracy.config import load_config
from bench.accuracy.run import accuracy_table, run_config


def add_arguments(parser) -> None:
    parser.add_argument("config", help="accuracy, accuracy_ci, or a path to an accuracy .toml file")
    parser.add_argument("--out", metavar="RUN_DIR", help="run directory; an existing one is resumed "
                        "(default: results/runs/<UTC time>-<config name>/)")


def run(args) -> int:
    cfg = load_config(args.config)
    out = Path(args.out) if args.out else Path("results/runs") / (
        datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + f"-{cfg.name}")
    from bench.store.run_lock import RunLock

    with RunLock(out):  # one session writes into a run directory at a time
        rows = run_config(cfg, out)
    table = accuracy_table(rows)
    if cfg.purpose == "pipeline_check":  # the config says its numbers are no result: the table says so first
        table = (f"Pipeline check, not results: this budget only proves that pretraining, fine-tuning and evaluation "
                 f"run end to end (`purpose = \"pipeline_check\"` in {cfg.source}); accuracies under 3x chance mean "
                 f"nothing about the models. `ssamba-bench claims` shows the committed reference table beside it.\n\n"
                 f"{table}")
    (out / "table.md").write_text(f"# {cfg.name}: {cfg.description}\n\n{table}\n")
    print(table)
    print(f"results in {out}")
    return 0 if all(r["status"] == "ok" for r in rows if r["metric"] == "status") else 1
