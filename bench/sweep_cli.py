"""Run a benchmark sweep: every model/size x token count of a config, isolated, resumable, into tidy tables.

    ssamba-bench sweep default                      # bench/configs/default.toml, the CPU main job
    ssamba-bench sweep my.toml --set tokens=[128,512] --set steady.max_time_s=5
    ssamba-bench sweep default --out results/runs/X # resume X: only cases not yet recorded run
    ssamba-bench sweep paper --executor slurm --slurm-partition gpu --slurm-gpus-per-job 1 --slurm-time 4:00:00
                                                    # one Slurm job per model/device (bench/cluster.py)

Writes to --out (default results/runs/<UTC time>-<config name>/): results.jsonl (append-only, one
row per case x metric x stat, flushed per case), results.csv, results.parquet, samples.jsonl (raw
timings), env.json, events.jsonl (run markers), logs/. Load with
`pandas.read_parquet(DIR + "/results.parquet")` or `bench.results.load(DIR)`.
All input is checked before anything runs; a bad config is one `error:` line and exit status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from bench import cluster
from bench.config import describe_fields, load_config
from bench.results import STATUSES, RunStore
from bench.runner import Progress, RunSettings, run_isolated, skip_after_prior_failures
from bench.sweep import Case, expand
from models.errors import UserInputError

RUNS_DIR = Path("results/runs")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", nargs="?", help="a sweep .toml file, or a shipped one by name: default, paper, ci")
    parser.add_argument("--out", metavar="DIR", help="run directory; an existing one is resumed "
                        "(default: results/runs/<UTC time>-<config name>/)")
    parser.add_argument("--resume", action="store_true", help="resume the newest run of this config in results/runs/")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key (TOML value; dotted for sections: steady.min_repeats=5)")
    parser.add_argument("--retry", default="", metavar="STATUSES",
                        help="on resume, run again the cases recorded with these statuses, e.g. error,timeout")
    parser.add_argument("--dry-run", action="store_true", help="list the cases and exit")
    parser.add_argument("--quiet", action="store_true", help="no progress output (CI logs); summary only")
    parser.add_argument("--no-table", action="store_true", help="do not print the short table at the end")
    parser.add_argument("--keys", action="store_true", help="list every config key with its meaning and exit")
    cluster.add_arguments(parser)


class _CliProgress(Progress):
    """A tqdm bar on a terminal; one line per finished case otherwise; nothing with --quiet."""

    def __init__(self, total: int, quiet: bool):
        self.total, self.count, self.quiet = total, 0, quiet
        self.bar = None
        self.started = time.monotonic()
        if not quiet and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="case", dynamic_ncols=True, file=sys.stderr)

    def start(self, case: Case) -> None:
        if self.bar is not None:
            self.bar.set_description_str(case.label)

    def done(self, case: Case, status: str) -> None:
        self.count += 1
        if self.bar is not None:
            self.bar.update(1)
            if status != "ok":
                self.bar.write(f"  {case.label}: {status}")
        elif not self.quiet:
            elapsed = time.monotonic() - self.started
            print(f"[{self.count}/{self.total} {elapsed:6.0f}s] {case.label}: {status}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _retry_statuses(text: str) -> set[str]:
    wanted = {s.strip() for s in text.split(",") if s.strip()}
    unknown = wanted - set(STATUSES)
    if unknown:
        raise UserInputError(f"--retry: unknown status {', '.join(sorted(unknown))}; choose from {', '.join(STATUSES)}")
    if "oom" in wanted:
        wanted.add("skipped_after_oom")
    if "timeout" in wanted:
        wanted.add("skipped_after_timeout")
    return wanted


def _run_dir(args, name: str) -> Path:
    if args.out and args.resume:
        raise UserInputError("give either --out DIR or --resume, not both")
    if args.out:
        return Path(args.out)
    if args.resume:
        runs = sorted(p for p in RUNS_DIR.glob(f"*-{name}") if (p / "run.json").exists())
        if not runs:
            raise UserInputError(f"--resume: no earlier run of {name!r} in {RUNS_DIR}/")
        return runs[-1]
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return RUNS_DIR / f"{stamp}-{name}"


def run(args) -> int:
    if args.keys:
        for key, help_text in describe_fields():
            print(f"{key:<24} {help_text}")
        return 0
    if not args.config:
        raise UserInputError("give a sweep config: a .toml path or one of default, paper, ci")
    opts = cluster.check_options(args)  # executor options (and sbatch on PATH) checked before anything runs
    cfg = load_config(args.config, args.overrides)
    retry = _retry_statuses(args.retry)
    # every model, option, token count and device (slurm: on each job's node) checked before anything runs
    cases = expand(cfg) if opts.executor != "slurm" else cluster.expand_on_login_node(cfg)
    if args.dry_run:
        for case in cases:
            print(f"{case.case_id}  {case.label}  frames={case.frames} device={case.device}")
        print(f"{len(cases)} cases")
        return 0
    run_dir = _run_dir(args, cfg.name)
    if run_dir.exists() and any(run_dir.iterdir()) and not (run_dir / "run.json").exists():
        raise UserInputError(f"{run_dir} exists and is not a run directory; choose another --out")

    from bench.env import collect_env

    store = RunStore(run_dir)
    env = collect_env(cfg.threads)
    run_id = store.open(cfg.name, dataclasses.asdict(cfg), env)
    settings = RunSettings.from_config(cfg, run_id)
    if (store.dir / cluster.SHARDS_DIR).is_dir():  # cases recorded by cluster jobs count as recorded
        cluster.merge_shards(store)
    recorded = store.statuses()
    done = {cid: s for cid, s in recorded.items() if s not in retry}
    todo = [c for c in cases if c.case_id not in done]
    todo = skip_after_prior_failures(todo, done, cases, store, settings, env)
    print(f"sweep {cfg.name}: {len(cases)} cases, {len(cases) - len(todo)} already recorded, {len(todo)} to run "
          f"-> {run_dir}", file=sys.stderr)
    load = (env.get("loadavg") or [0])[0]
    if todo and load > 0.5 * env["cpu_usable_cores"] and opts.executor != "slurm":  # slurm: not where it runs
        print(f"warning: this machine is busy (load average {load:.1f} on {env['cpu_usable_cores']} usable cores): "
              f"timings will be slow and noisy", file=sys.stderr)
    store.event("session_start", cases=len(cases), todo=len(todo), argv=sys.argv, loadavg=env.get("loadavg"))
    if opts.executor != "local":
        return cluster.run_sweep(cases, todo, store, settings, cfg, opts, args)
    progress = _CliProgress(len(todo), args.quiet)
    started = time.monotonic()
    try:
        outcome = run_isolated(todo, store, settings, env, progress)
    except KeyboardInterrupt:
        progress.close()
        store.event("session_interrupted")
        store.export()
        print(f"interrupted; finished cases are kept in {run_dir}. Resume with: "
              f"ssamba-bench sweep {args.config} --out {run_dir}", file=sys.stderr)
        raise
    progress.close()
    elapsed = time.monotonic() - started
    store.event("session_end", seconds=round(elapsed, 1))
    df = store.export()
    counts = df[df["metric"] == "status"]["status"].value_counts().to_dict()
    summary = ", ".join(f"{counts[s]} {s}" for s in STATUSES if s in counts)
    print(f"done in {elapsed:.0f} s: {summary or 'nothing run'}", file=sys.stderr)
    if outcome.budget_exhausted:
        left = len(todo) - len(outcome.statuses)
        print(f"warning: the time budget (budget_s = {cfg.budget_s:g}) ran out with {left} case(s) not run; "
              f"run the same command with --out {run_dir} to finish them", file=sys.stderr)
    print(f"results: {run_dir}/results.parquet (also .csv, .jsonl; raw samples in samples.jsonl; env.json)")
    if not args.no_table:
        from bench.table import short_table

        print(short_table(df))
    return 0
