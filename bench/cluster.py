"""Executors for a sweep: one job per unit (one model on one device walking its token axis), run by
submitit on this machine (`submitit-local`) or as a Slurm job array (`slurm`).

The in-process runner (`--executor local`, bench/runner.run_isolated) stays the default and is not
touched here. A cluster job runs the same orchestration for its unit (a spawned child per unit, the
per-case timeout, crash and OOM detection), but writes into its own shard of the run directory, so no
two jobs ever append to one file:

    shards/<unit>.jsonl            result rows of this unit (append-only; a resubmitted job appends)
    shards/<unit>.samples.jsonl    raw timing samples
    shards/<unit>.events.jsonl     job_start / child / case / job_end markers, with host and pid
    shards/<unit>.env.json         the environment of the node the job ran on (latest attempt)
    shards/jobs.jsonl              one line per submitted job: executor, job id, unit, cases, log paths
    cases.json                     every case of the sweep (what `collect` checks completeness against)
    submitit/                      submitit's pickles, sbatch script and job logs

Each job collects its own environment (bench.env.collect_env on its node), so every row carries the
host and device it was measured on. `merge_shards` (used by `ssamba-bench collect` and at the start of
every sweep session) appends the shard rows not yet in results.jsonl: the run directory stays the
single source of truth, and a resumed sweep, with any executor, runs only the cases not recorded.

submitit: https://github.com/facebookincubator/submitit (LocalExecutor, SlurmExecutor, job arrays).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bench.results import RunStore, append_jsonl, latest_attempts, now_iso, read_jsonl
from bench.runner import RunSettings, run_isolated
from bench.sweep import Case, group_units
from models.errors import UserInputError

EXECUTORS = ("local", "submitit-local", "slurm")
SHARDS_DIR = "shards"
CASES_FILE = "cases.json"
JOBS_FILE = "jobs.jsonl"
SLURM_DEFAULT_TIME_MIN = 240


@dataclass(frozen=True)
class ClusterOptions:
    """The executor and its submission parameters, checked before anything is submitted."""

    executor: str = "local"
    partition: str | None = None
    gpus_per_job: int | None = None
    time_min: int | None = None
    cpus_per_task: int | None = None
    constraint: str | None = None
    max_parallel: int | None = None
    wait: bool = True


SLURM_ONLY = (("slurm_partition", "--slurm-partition"), ("slurm_gpus_per_job", "--slurm-gpus-per-job"),
              ("slurm_time", "--slurm-time"), ("slurm_cpus_per_task", "--slurm-cpus-per-task"),
              ("slurm_constraint", "--slurm-constraint"))


def add_arguments(parser) -> None:
    """The sweep verb's executor options."""
    group = parser.add_argument_group("executors (one job per model/device unit; see bench/cluster.py)")
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


def parse_time_min(text: str) -> int:
    """Slurm-style time -> whole minutes (rounded up): '90', '02:00:00', '1-00:00:00', '30:00'."""
    m = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text.strip())
    if not m:
        raise UserInputError(f"--slurm-time {text!r}: give minutes, HH:MM:SS or D-HH:MM:SS")
    days, a, b, c = (int(g) if g else None for g in m.groups())
    if b is None and c is None:  # minutes (or D-HH)
        minutes = (days or 0) * 1440 + (a * 60 if days is not None else a)
    elif c is None:  # MM:SS, or D-HH:MM
        minutes = (days * 1440 + a * 60 + b) if days is not None else a + (b > 0)
    else:  # HH:MM:SS
        minutes = (days or 0) * 1440 + a * 60 + b + (c > 0)
    if minutes < 1:
        raise UserInputError(f"--slurm-time {text!r}: must be at least one minute")
    return minutes


def check_options(args) -> ClusterOptions:
    """Executor options from the command line; every mistake is an error before anything is submitted."""
    executor = getattr(args, "executor", "local") or "local"
    given = [flag for attr, flag in SLURM_ONLY if getattr(args, attr, None) is not None]
    if given and executor != "slurm":
        raise UserInputError(f"{', '.join(given)} only apply with --executor slurm (executor is {executor})")
    max_parallel = getattr(args, "max_parallel", None)
    if max_parallel is not None and executor == "local":
        raise UserInputError("--max-parallel applies to --executor submitit-local or slurm; the local runner "
                             "runs one unit at a time")
    if max_parallel is not None and max_parallel < 1:
        raise UserInputError(f"--max-parallel must be >= 1, got {max_parallel}")
    no_wait = bool(getattr(args, "no_wait", False))
    if no_wait and executor != "slurm":
        raise UserInputError("--no-wait applies to --executor slurm only")
    for attr, flag in SLURM_ONLY:
        value = getattr(args, attr, None)
        if isinstance(value, int) and value < (0 if attr == "slurm_gpus_per_job" else 1):
            raise UserInputError(f"{flag} must be >= {0 if attr == 'slurm_gpus_per_job' else 1}, got {value}")
    if executor == "slurm":
        missing = [tool for tool in ("sbatch", "srun") if shutil.which(tool) is None]
        if missing:
            raise UserInputError(f"--executor slurm: {' and '.join(missing)} not found on PATH; run the sweep on a "
                                 f"Slurm login node, or use --executor submitit-local on this machine")
    time_min = parse_time_min(args.slurm_time) if getattr(args, "slurm_time", None) else None
    return ClusterOptions(executor=executor, partition=getattr(args, "slurm_partition", None),
                          gpus_per_job=getattr(args, "slurm_gpus_per_job", None), time_min=time_min,
                          cpus_per_task=getattr(args, "slurm_cpus_per_task", None),
                          constraint=getattr(args, "slurm_constraint", None), max_parallel=max_parallel,
                          wait=not no_wait)


def expand_on_login_node(cfg) -> list[Case]:
    """bench.sweep.expand without its device check: a Slurm login node often has no GPU, and each job
    lands on its own node; a case whose device is missing there becomes an `error` row, like any other
    failure."""
    from bench import sweep

    return sweep.expand(cfg, check_devices=False)


# --- the job: one unit, into its own shard --------------------------------------------------------

def unit_name(unit: list[Case]) -> str:
    """`<model>-<device>`, the name of the unit's shard (and of its child's log, as in bench/runner.py)."""
    return f"{unit[0].model}-{unit[0].device.replace(':', '')}"


class ShardStore(RunStore):
    """The files one job writes: its unit's shard; `logs/` is shared (per-unit file names)."""

    def __init__(self, run_dir: str | Path, name: str):
        super().__init__(run_dir)
        shards = self.dir / SHARDS_DIR
        self.results = shards / f"{name}.jsonl"
        self.samples = shards / f"{name}.samples.jsonl"
        self.events = shards / f"{name}.events.jsonl"
        self.env = shards / f"{name}.env.json"


def _job_identity() -> dict:
    try:
        import submitit

        job = submitit.JobEnvironment()
        return {"job_id": job.job_id, "job_host": job.hostname}
    except Exception:  # not inside a submitit job (a direct call, e.g. a test)
        return {"job_id": None}


def run_job(run_dir: str, cases: list[Case], settings: RunSettings, budget_s: float = 0.0) -> dict:
    """The job function: run one unit in this process's orchestration (spawned measuring children,
    timeouts, crash/OOM rows) into the unit's shard, with this node's environment."""
    from bench.env import collect_env

    store = ShardStore(run_dir, unit_name(cases))
    store.results.parent.mkdir(parents=True, exist_ok=True)
    store.logs.mkdir(parents=True, exist_ok=True)
    env = collect_env(settings.threads)  # this node's host, CPU, GPUs, driver: the rows carry them
    env.update(_job_identity())
    store.env.write_text(json.dumps(env, indent=2, default=str) + "\n")
    if budget_s:  # a queued job's budget starts when it starts, not when it was submitted
        settings = dataclasses.replace(settings, budget_deadline=time.time() + budget_s)
    store.event("job_start", pid=os.getpid(), host=env["host"], job_id=env.get("job_id"), cases=len(cases))
    outcome = run_isolated(cases, store, settings, env)
    store.event("job_end", pid=os.getpid(), recorded=len(outcome.statuses), budget_exhausted=outcome.budget_exhausted)
    return {"statuses": outcome.statuses, "budget_exhausted": outcome.budget_exhausted, "host": env["host"]}


# --- merging and checking -------------------------------------------------------------------------

def shard_paths(run_dir: Path) -> tuple[list[Path], list[Path]]:
    shards = Path(run_dir) / SHARDS_DIR
    results = sorted(p for p in shards.glob("*.jsonl")
                     if p.name != JOBS_FILE and not p.name.endswith((".samples.jsonl", ".events.jsonl")))
    samples = sorted(shards.glob("*.samples.jsonl"))
    return results, samples


def merge_shards(store: RunStore) -> int:
    """Append to results.jsonl (and samples.jsonl) the shard records of attempts not yet there, oldest
    first, so file order stays time order (latest_attempts takes the last). Idempotent; returns the
    number of result rows added. Run only while no job of this run is writing (collect, sweep start)."""
    results, samples = shard_paths(store.dir)
    added = 0
    for target, sources in ((store.results, results), (store.samples, samples)):
        known = {r.get("attempt_id") for r in read_jsonl(target)}
        new = [r for src in sources for r in read_jsonl(src) if r.get("attempt_id") not in known]
        new.sort(key=lambda r: r.get("timestamp") or "")  # stable: a case's rows keep their order
        append_jsonl(target, new)
        if target == store.results:
            added = len(new)
    return added


def write_cases(run_dir: Path, cases: list[Case]) -> None:
    records = [{"case_id": c.case_id, "label": c.label, "unit": unit_name([c]), **c.to_dict()} for c in cases]
    (Path(run_dir) / CASES_FILE).write_text(json.dumps(records, indent=1) + "\n")


def expected_cases(run_dir: Path) -> list[dict] | None:
    """Every case of the sweep: cases.json (written at submission), else the config in run.json expanded
    here (needs the models and devices of the config on this machine); None when neither works."""
    path = Path(run_dir) / CASES_FILE
    if path.exists():
        return json.loads(path.read_text())
    manifest = Path(run_dir) / "run.json"
    if not manifest.exists():
        return None
    try:
        from bench.config import SweepConfig, _build
        from bench.sweep import expand

        config = {k: v for k, v in json.loads(manifest.read_text())["config"].items()
                  if k != "source" and v not in ((), [], {}, None)}
        cases = expand(_build(SweepConfig, config, str(manifest)))
    except Exception:  # e.g. a cuda config collected on a login node without GPUs
        return None
    return [{"case_id": c.case_id, "label": c.label, "unit": unit_name([c]), **c.to_dict()} for c in cases]


@dataclass
class Report:
    expected: int | None
    statuses: dict[str, str]
    missing: list[dict]  # expected cases without a final status
    failed: list[dict]  # latest rows of cases whose status is not ok
    jobs: dict[str, dict]  # unit -> latest job record (jobs.jsonl)
    unfinished_jobs: dict[str, dict]  # unit -> job_start event without a job_end after it
    ended_jobs: set[str] = dataclasses.field(default_factory=set)  # units whose last job ended normally

    @property
    def complete(self) -> bool:
        return self.expected is not None and not self.missing


def check_run(store: RunStore) -> Report:
    rows = latest_attempts(store.rows())
    statuses = {r["case_id"]: r["status"] for r in rows if r["metric"] == "status"}
    cases = expected_cases(store.dir)
    missing = [c for c in cases if c["case_id"] not in statuses] if cases is not None else []
    failed = [r for r in rows if r["metric"] == "status" and r["status"] != "ok"]
    jobs: dict[str, dict] = {}
    for record in read_jsonl(store.dir / SHARDS_DIR / JOBS_FILE):
        jobs[record["unit"]] = record
    unfinished, ended = {}, set()
    for events in sorted((store.dir / SHARDS_DIR).glob("*.events.jsonl")):
        unit, last_start = events.name.removesuffix(".events.jsonl"), None
        for e in read_jsonl(events):
            if e["event"] == "job_start":
                last_start = e
                ended.discard(unit)
            elif e["event"] == "job_end":
                last_start = None
                ended.add(unit)
        if last_start is not None:
            unfinished[unit] = last_start
    return Report(None if cases is None else len(cases), statuses, missing, failed, jobs, unfinished, ended)


def describe(report: Report, run_dir: Path) -> str:
    """The collect report: counts, missing cases by unit with their job's logs, failed cases."""
    lines = []
    if report.expected is None:
        lines.append(f"{len(report.statuses)} cases recorded; the expected cases are unknown (no {CASES_FILE} and "
                     f"the config in run.json cannot be expanded here)")
    else:
        lines.append(f"{report.expected - len(report.missing)}/{report.expected} cases have a final status"
                     + ("" if report.missing else ": complete"))
    by_unit: dict[str, list[dict]] = {}
    for case in report.missing:
        by_unit.setdefault(case["unit"], []).append(case)
    for unit, cases in by_unit.items():
        job = report.jobs.get(unit)
        if unit in report.unfinished_jobs:
            start = report.unfinished_jobs[unit]
            state = (f"its job did not finish (killed, timed out or still running; "
                     f"host {start.get('host')}, pid {start.get('pid')})")
        elif unit in report.ended_jobs:
            state = "its job ended before running them (time budget spent?)"
        else:
            state = "its job never started (queued, or failed at start: see its logs)" if job \
                else "no job was submitted for it"
        lines.append(f"incomplete: {unit}: {len(cases)} case(s) missing; {state}")
        for case in cases[:5]:
            lines.append(f"    {case['case_id']}  {case['label']}")
        if len(cases) > 5:
            lines.append(f"    ... and {len(cases) - 5} more")
        if job:
            lines.append(f"    job {job['job_id']} ({job['executor']}); logs: {job['stdout']}  {job['stderr']}")
        lines.append(f"    measuring child's log: {Path(run_dir) / 'logs' / (unit + '.log')}")
    for row in report.failed:
        unit = f"{row['model']}-{row['device'].replace(':', '')}"
        lines.append(f"failed: {row['case_id']} {row['model']} {row['n_tokens']} tok: {row['status']}: "
                     f"{row['error']} (log: {Path(run_dir) / 'logs' / (unit + '.log')})")
    return "\n".join(lines)


# --- submission ------------------------------------------------------------------------------------

def make_executor(opts: ClusterOptions, folder: Path, job_name: str, n_jobs: int, timeout_min: int):
    """A configured submitit executor (nothing submitted yet)."""
    import submitit

    if opts.executor == "submitit-local":
        executor = submitit.LocalExecutor(folder=folder)
        # LocalExecutor sets CUDA_VISIBLE_DEVICES to the GPUs it is given ("" by default: none): give it
        # every GPU this process sees, so a job's "cuda" is what the in-process runner's would be.
        executor.update_parameters(timeout_min=timeout_min, gpus_per_node=len(_visible_gpus()),
                                   visible_gpus=_visible_gpus())
        return executor
    executor = submitit.SlurmExecutor(folder=folder)
    params = {"job_name": job_name, "time": opts.time_min or SLURM_DEFAULT_TIME_MIN,
              "array_parallelism": min(opts.max_parallel or n_jobs, max(n_jobs, 1)),
              "ntasks_per_node": 1, "nodes": 1}
    if opts.partition:
        params["partition"] = opts.partition
    if opts.gpus_per_job is not None:
        params["gpus_per_node"] = opts.gpus_per_job
    if opts.cpus_per_task is not None:
        params["cpus_per_task"] = opts.cpus_per_task
    if opts.constraint:
        params["constraint"] = opts.constraint
    executor.update_parameters(**params)
    return executor


def _visible_gpus() -> list[int]:
    from bench.env import nvml_gpu_names

    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [int(i) for i in visible.split(",") if i.strip().isdigit()]
    return list(range(len(nvml_gpu_names())))


def _local_job_class():
    from submitit.local.local import LocalJob

    return LocalJob


def _record_job(store: RunStore, opts: ClusterOptions, unit: list[Case], job) -> None:
    append_jsonl(store.dir / SHARDS_DIR / JOBS_FILE, [{
        "t": now_iso(), "executor": opts.executor, "job_id": str(job.job_id), "unit": unit_name(unit),
        "cases": [c.case_id for c in unit], "stdout": str(job.paths.stdout), "stderr": str(job.paths.stderr)}])


def _job_failure(job) -> str | None:
    if isinstance(job, _local_job_class()):
        job._results_timeout_s = 1  # a local job's result pickle is on this disk when its process ends
    try:
        job.result()
        return None
    except Exception as err:  # UncompletedJobError / FailedJobError: the job died or raised
        text = " ".join(str(err).split())
        return text[:300] + ("..." if len(text) > 300 else "")


def submit_units(todo: list[Case], store: RunStore, settings: RunSettings, budget_s: float, opts: ClusterOptions,
                 job_name: str, timeout_s: float) -> tuple[list, dict[str, str]]:
    """Submit one job per unit of `todo`; with submitit-local (or slurm without --no-wait) wait for all.
    Returns (jobs, unit -> failure message of the jobs that failed)."""
    units = group_units(todo)
    folder = store.dir / "submitit"
    (store.dir / SHARDS_DIR).mkdir(parents=True, exist_ok=True)
    worst_min = max((len(u) for u in units), default=1) * timeout_s / 60
    executor = make_executor(opts, folder, job_name, len(units), timeout_min=int(worst_min) + 10)
    run_dir = str(store.dir.resolve())
    failures: dict[str, str] = {}
    jobs = []

    def finish(unit, job):
        failure = _job_failure(job)
        name = unit_name(unit)
        if failure:
            failures[name] = failure
            print(f"job {job.job_id} ({name}) failed: {failure}\n  logs: {job.paths.stdout} {job.paths.stderr}",
                  file=sys.stderr)
        else:
            print(f"job {job.job_id} ({name}) done: {len(unit)} case(s)", file=sys.stderr, flush=True)

    if opts.executor == "slurm":
        with executor.batch():  # one sbatch call: a job array of len(units) tasks
            jobs = [executor.submit(run_job, run_dir, unit, settings, budget_s) for unit in units]
        for unit, job in zip(units, jobs):
            _record_job(store, opts, unit, job)
        print(f"submitted {len(jobs)} Slurm job(s) (array {jobs[0].job_id.split('_')[0] if jobs else '-'}); "
              f"logs in {folder}", file=sys.stderr)
        if opts.wait:
            for unit, job in zip(units, jobs):
                finish(unit, job)
        return jobs, failures

    # submitit-local: at most max_parallel jobs alive at once (LocalExecutor has no array throttle)
    limit = opts.max_parallel or 1
    pending, running = list(units), []
    try:
        while pending or running:
            while pending and len(running) < limit:
                unit = pending.pop(0)
                job = executor.submit(run_job, run_dir, unit, settings, budget_s)
                _record_job(store, opts, unit, job)
                jobs.append(job)
                running.append((unit, job))
            for unit, job in [r for r in running if r[1].done()]:
                running.remove((unit, job))
                finish(unit, job)
            time.sleep(0.2)
    except KeyboardInterrupt:
        for _, job in running:
            job.cancel(check=False)
        raise
    return jobs, failures


def run_sweep(all_cases: list[Case], todo: list[Case], store: RunStore, settings: RunSettings, cfg,
              opts: ClusterOptions, args) -> int:
    """The sweep verb's path for submitit-local and slurm: submit, wait, merge the shards, report."""
    from bench.results import STATUSES

    write_cases(store.dir, all_cases)
    started = time.monotonic()
    jobs, failures = submit_units(todo, store, dataclasses.replace(settings, budget_deadline=None), cfg.budget_s,
                                  opts, job_name=f"ssamba-bench-{cfg.name}", timeout_s=cfg.timeout_s) \
        if todo else ([], {})
    if opts.executor == "slurm" and not opts.wait and jobs:
        store.event("session_submitted", jobs=[str(j.job_id) for j in jobs])
        print(f"when the jobs have ended: ssamba-bench collect {store.dir}", file=sys.stderr)
        return 0
    merge_shards(store)
    elapsed = time.monotonic() - started
    store.event("session_end", seconds=round(elapsed, 1), executor=opts.executor, failed_jobs=sorted(failures))
    df = store.export()
    counts = df[df["metric"] == "status"]["status"].value_counts().to_dict()
    summary = ", ".join(f"{counts[s]} {s}" for s in STATUSES if s in counts)
    print(f"done in {elapsed:.0f} s: {summary or 'nothing run'}", file=sys.stderr)
    report = check_run(store)
    if not report.complete:
        print(describe(report, store.dir), file=sys.stderr)
        print(f"run the same command with --out {store.dir} to run the missing cases", file=sys.stderr)
    print(f"results: {store.dir}/results.parquet (also .csv, .jsonl; raw samples in samples.jsonl; "
          f"per-job shards and env in {SHARDS_DIR}/)")
    if not args.no_table:
        from bench.table import short_table

        print(short_table(df))
    return 0 if report.complete and not failures else 1
