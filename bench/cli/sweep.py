"""Run a benchmark sweep: every model/size x token count of a config, isolated, resumable, into tidy tables.

    ssamba-bench sweep default                      # bench/configs/default.toml, the CPU main job
    ssamba-bench sweep my.toml --set tokens=[128,512] --set steady.max_time_s=5
    ssamba-bench sweep default --out results/runs/X # resume X: only cases not yet recorded run
    ssamba-bench sweep paper --executor slurm --slurm-partition gpu --slurm-gpus-per-job 1 --slurm-time 4:00:00
                                                    # one Slurm job per model/device (bench/harness/executors/)

Writes to --out (default results/runs/<UTC time>-<config name>/): results.jsonl (append-only, one
row per case x metric x stat, flushed per case), results.csv, results.parquet, samples.jsonl (raw
timings), env.json, events.jsonl (run markers), logs/. Load with
`pandas.read_parquet(DIR + "/results.parquet")` or `bench.store.load(DIR)`.
All input is checked before anything runs; a bad config is one `error:` line and exit status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from bench.common.vocabulary import STATUSES
from bench.harness.executors.options import EXECUTORS, SLURM_DEFAULT_TIME_MIN, check_options
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
    group = parser.add_argument_group("executors (one job per model/device unit; see bench/harness/executors/)")
    group.add_argument("--executor", choices=EXECUTORS, default="local",
                       help="local: the in-process runner (default); submitit-local: one submitit job per unit "
                            "on this machine; slurm: a Slurm job array, one task per unit")
    group.add_argument("--slurm-partition", metavar="NAME", help="Slurm partition")
    group.add_argument("--slurm-gpus-per-job", type=int, metavar="N", help="GPUs per job (sbatch --gpus-per-node)")
    group.add_argument("--slurm-time", metavar="TIME",
                       help="time limit per job: minutes, HH:MM:SS or D-HH:MM:SS "
                            f"(default {SLURM_DEFAULT_TIME_MIN} min)")
    group.add_argument("--slurm-cpus-per-task", type=int, metavar="N", help="CPUs per job (sbatch --cpus-per-task)")
    group.add_argument("--slurm-constraint", metavar="FEATURES",
                       help="sbatch --constraint, e.g. a GPU model, so every job measures on the same device model")
    group.add_argument("--max-parallel", type=int, metavar="N",
                       help="jobs running at once (slurm: the array's %%N; submitit-local: default 1)")
    group.add_argument("--no-wait", action="store_true",
                       help="slurm: submit and return; run `ssamba-bench collect RUN_DIR` when the jobs end")


class _CliProgress:
    """A tqdm bar on a terminal; one line per finished case otherwise; nothing with --quiet."""

    def __init__(self, total: int, quiet: bool):
        self.total, self.count, self.quiet = total, 0, quiet
        self.bar = None
        self.started = time.monotonic()
        if not quiet and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="case", dynamic_ncols=True, file=sys.stderr)

    def start(self, case) -> None:
        if self.bar is not None:
            self.bar.set_description_str(case.label)

    def done(self, case, status: str) -> None:
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
    from bench.harness.resume import with_skips

    wanted = {s.strip() for s in text.split(",") if s.strip()}
    unknown = wanted - set(STATUSES)
    if unknown:
        raise UserInputError(f"--retry: unknown status {', '.join(sorted(unknown))}; choose from {', '.join(STATUSES)}")
    return with_skips(wanted)


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
    from bench.harness.config import config_keys, load_config

    if args.keys:
        for key, help_text in config_keys():
            print(f"{key:<24} {help_text}")
        return 0
    if not args.config:
        raise UserInputError("give a sweep config: a .toml path or one of default, paper, ci")
    # executor options (and sbatch on PATH) checked before anything runs
    opts = check_options(args.executor, partition=args.slurm_partition, gpus_per_job=args.slurm_gpus_per_job,
                         time=args.slurm_time, cpus_per_task=args.slurm_cpus_per_task,
                         constraint=args.slurm_constraint, max_parallel=args.max_parallel, no_wait=args.no_wait)
    cfg = load_config(args.config, args.overrides)
    retry = _retry_statuses(args.retry)

    from bench.harness.expand import expand

    # every model, option, token count and device checked before anything runs; a Slurm login node
    # often has no GPU: each job's node is where a missing device shows (as an `error` row)
    cases = expand(cfg, check_devices=opts.executor != "slurm")
    if args.dry_run:
        for case in cases:
            print(f"{case.case_id}  {case.label}  frames={case.frames} device={case.device}")
        print(f"{len(cases)} cases")
        return 0
    run_dir = _run_dir(args, cfg.name)
    from bench.store.run_lock import LOCK_FILE, RunLock

    if run_dir.exists() and not (run_dir / "run.json").exists() and (
            not run_dir.is_dir() or any(p.name != LOCK_FILE for p in run_dir.iterdir())):
        raise UserInputError(f"{run_dir} exists and is not a run directory; choose another --out")

    with RunLock(run_dir):  # one session writes into a run directory at a time
        return _session(args, cfg, cases, run_dir, retry, opts)


def _session(args, cfg, cases, run_dir: Path, retry: set[str], opts) -> int:
    """One session of a sweep in its (locked) run directory: plan what is left, run it, report."""
    from bench.harness.completeness import write_cases
    from bench.harness.resume import cases_to_run
    from bench.harness.settings import RunSettings
    from bench.measure.env import collect_env
    from bench.store.run_store import RunStore

    store = RunStore(run_dir)
    env = collect_env(cfg.threads)
    run_id = store.open(cfg.name, dataclasses.asdict(cfg), env)
    settings = RunSettings.from_config(cfg, run_id)
    write_cases(store.dir, cases)  # what `collect` checks completeness against, without expanding again
    todo = cases_to_run(store, cases, settings, env, retry)
    print(f"sweep {cfg.name}: {len(cases)} cases, {len(cases) - len(todo)} already recorded, {len(todo)} to run "
          f"-> {run_dir}", file=sys.stderr)
    load = (env.get("loadavg") or [0])[0]
    if todo and load > 0.5 * env["cpu_usable_cores"] and opts.executor != "slurm":  # slurm: not where it runs
        print(f"warning: this machine is busy (load average {load:.1f} on {env['cpu_usable_cores']} usable cores): "
              f"timings will be slow and noisy", file=sys.stderr)
    store.event("session_start", cases=len(cases), todo=len(todo), argv=sys.argv, loadavg=env.get("loadavg"))
    started = time.monotonic()
    if opts.executor == "local":
        code = _run_local(args, cfg, store, todo, settings, env)
    else:
        from bench.harness.executors.submitit import run_on_cluster

        outcome = run_on_cluster(todo, store, settings, job_name=f"ssamba-bench-{cfg.name}",
                                 budget_s=cfg.budget_s, timeout_s=cfg.timeout_s, opts=opts)
        if outcome.submitted_only:
            print(f"when the jobs have ended: ssamba-bench collect {store.dir}", file=sys.stderr)
            return 0
        store.event("session_end", seconds=round(time.monotonic() - started, 1), executor=opts.executor,
                    failed_jobs=sorted(outcome.failures))
        code = 0 if outcome.report.complete and not outcome.failures else 1
    _finish(args, store, started, opts.executor, outcome=None if opts.executor == "local" else outcome)
    return code


def _run_local(args, cfg, store, todo, settings, env) -> int:
    """The local executor: this process spawns and supervises one child per unit."""
    from bench.harness.isolation import run_isolated

    progress = _CliProgress(len(todo), args.quiet)
    started = time.monotonic()
    try:
        outcome = run_isolated(todo, store, settings, env, progress)
    except KeyboardInterrupt:
        progress.close()
        store.event("session_interrupted")
        store.export()
        print(f"interrupted; finished cases are kept in {store.dir}. Resume with: "
              f"ssamba-bench sweep {args.config} --out {store.dir}", file=sys.stderr)
        raise
    progress.close()
    store.event("session_end", seconds=round(time.monotonic() - started, 1))
    if outcome.budget_exhausted:
        left = len(todo) - len(outcome.statuses)
        print(f"warning: the time budget (budget_s = {cfg.budget_s:g}) ran out with {left} case(s) not run; "
              f"run the same command with --out {store.dir} to finish them", file=sys.stderr)
    return 0


def _finish(args, store, started: float, executor: str, outcome=None) -> None:
    """The end of every session, whichever executor ran it: export, counts, what is missing, the table."""
    from bench.report.table import short_table

    df = store.export()
    counts = df[df["metric"] == "status"]["status"].value_counts().to_dict()
    summary = ", ".join(f"{counts[s]} {s}" for s in STATUSES if s in counts)
    print(f"done in {time.monotonic() - started:.0f} s: {summary or 'nothing run'}", file=sys.stderr)
    if outcome is not None and not outcome.report.complete:
        from bench.harness.completeness import describe

        print(describe(outcome.report, store.dir), file=sys.stderr)
        print(f"run the same command with --out {store.dir} to run the missing cases", file=sys.stderr)
    shards = "" if executor == "local" else "; per-job shards and env in shards/"
    print(f"results: {store.dir}/results.parquet (also .csv, .jsonl; raw samples in samples.jsonl; env.json{shards})")
    if not args.no_table:
        print(short_table(df))
