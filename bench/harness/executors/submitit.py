"""The cluster executors: one submitit job per unit, on this machine (`submitit-local`) or as a Slurm job array.

An executor decides only where a unit's orchestration runs. A job runs the same orchestration as
the local executor (bench/harness/isolation.py: a spawned measuring child, the per-case timeout,
crash and OOM rows) for its unit, with its node's environment, into its own shard of the run
directory (bench/store/shards.py); `run_on_cluster` submits, waits, merges the shards and checks
completeness (bench/harness/completeness.py). What the sweep prints at the end is the command line's.

Cancel-safe: a job told to stop (SIGTERM: scancel, preemption, its time limit) kills its measuring
child at once and leaves the case in flight and the rest unrecorded, so rerunning the sweep with the
same --out runs them. Waiting on Slurm needs only `squeue` (not accounting, `sacct`): a job gone from
the queue without a result and without a job_end marker is dead, and the wait ends with the report
of what is missing.

submitit: https://github.com/facebookincubator/submitit (LocalExecutor, SlurmExecutor, job arrays).
"""

from __future__ import annotations

import dataclasses
import json
import os
import pwd
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bench.harness.budget import Budget
from bench.harness.cases import Case, group_units
from bench.harness.completeness import Report, check_run
from bench.harness.executors.options import SLURM_DEFAULT_TIME_MIN, ClusterOptions
from bench.harness.isolation import run_isolated, stopping_on
from bench.harness.settings import RunSettings
from bench.store.jsonl import append_jsonl
from bench.store.run_store import RunStore
from bench.store.schema import now_iso
from bench.store.shards import JOBS_FILE, SHARDS_DIR, ShardStore, existing_logs, job_events, merge_shards

# Waiting on Slurm jobs (see wait_for_slurm_jobs): squeue at growing intervals, and bounded everywhere.
QUEUE_POLL_S = (2.0, 30.0)  # first and longest interval between two squeue calls
GONE_GRACE_S = 10.0  # gone from the queue this long without a result file: dead (not a slow shared filesystem)
QUEUE_UNREACHABLE_S = 600.0  # squeue failing this long: stop waiting (`collect` finishes the run later)
SQUEUE_TIMEOUT_S = 60.0

# --- the job: one unit, into its own shard --------------------------------------------------------

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
    # Slurm's SIGTERM (scancel, preemption, time limit) reaches this process and its measuring child
    # together; submitit ignores it here, and the unit would record the rest as errors and go on.
    with stopping_on(signal.SIGTERM):
        return _run_unit_job(run_dir, cases, settings, budget_s)


def _run_unit_job(run_dir: str, cases: list[Case], settings: RunSettings, budget_s: float) -> dict:
    from bench.measure.env import collect_env

    store = ShardStore(run_dir, cases[0].unit_name)
    store.results.parent.mkdir(parents=True, exist_ok=True)
    store.logs.mkdir(parents=True, exist_ok=True)
    env = collect_env(settings.threads)  # this node's host, CPU, GPUs, driver: the rows carry them
    env.update(_job_identity())
    store.env.write_text(json.dumps(env, indent=2, default=str) + "\n")
    if budget_s:  # a queued job's budget starts when it starts, not when it was submitted
        settings = dataclasses.replace(settings, budget_deadline=Budget.starting_now(budget_s).deadline)
    store.event("job_start", pid=os.getpid(), host=env["host"], job_id=env.get("job_id"), cases=len(cases))
    try:
        outcome = run_isolated(cases, store, settings, env)
    except BaseException as err:  # submitit's USR2 handler (time limit, preemption) raises or exits here
        store.event("job_stopped", pid=os.getpid(), signal=None, reason=f"{type(err).__name__}: {err}"[:200])
        raise
    result = {"statuses": outcome.statuses, "budget_exhausted": outcome.budget_exhausted, "host": env["host"]}
    if outcome.stopped_by:  # not a job_end: what was not recorded is missing, for a rerun to run
        store.event("job_stopped", pid=os.getpid(), signal=outcome.stopped_by, recorded=len(outcome.statuses))
        return {**result, "stopped_by": outcome.stopped_by}
    store.event("job_end", pid=os.getpid(), recorded=len(outcome.statuses), budget_exhausted=outcome.budget_exhausted)
    return result


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
    from bench.measure.env import nvml_gpu_names

    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [int(i) for i in visible.split(",") if i.strip().isdigit()]
    return list(range(len(nvml_gpu_names())))


def _local_job_class():
    from submitit.local.local import LocalJob

    return LocalJob


def _record_job(store: RunStore, opts: ClusterOptions, unit: list[Case], job) -> None:
    append_jsonl(store.dir / SHARDS_DIR / JOBS_FILE, [{
        "t": now_iso(), "executor": opts.executor, "job_id": str(job.job_id), "unit": unit[0].unit_name,
        "cases": [c.case_id for c in unit], "stdout": str(job.paths.stdout), "stderr": str(job.paths.stderr)}])


def _job_failure(job) -> str | None:
    if isinstance(job, _local_job_class()):
        job._results_timeout_s = 1  # a local job's result pickle is on this disk when its process ends
    try:
        result = job.result()
    except Exception as err:  # UncompletedJobError / FailedJobError: the job died or raised
        text = " ".join(str(err).split())
        return text[:300] + ("..." if len(text) > 300 else "")
    if isinstance(result, dict) and result.get("stopped_by"):
        return (f"stopped by {result['stopped_by']} (scancel, preemption or its time limit) after "
                f"{len(result.get('statuses') or {})} case(s); the rest are left for a rerun")
    return None


def _logs_text(job) -> str:
    present, _ = existing_logs([job.paths.stdout, job.paths.stderr])
    return " ".join(present) if present else f"none yet (Slurm writes them to {job.paths.folder})"


# --- waiting on Slurm jobs without accounting --------------------------------------------------------

def queued_job_ids() -> set[str] | None:
    """This user's jobs in Slurm's queue (array tasks one per line, as ARRAY_TASK), or None when squeue fails."""
    user = pwd.getpwuid(os.getuid()).pw_name
    try:
        out = subprocess.run(["squeue", "--noheader", "--array", "--format=%i", f"--user={user}"],
                             capture_output=True, text=True, timeout=SQUEUE_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return set(out.stdout.split()) if out.returncode == 0 else None


def _gone_job(run_dir: Path, unit: str, job) -> str | None:
    """A job gone from the queue without a result file: None when it ended normally (its job_end marker
    is there), else why it counts as dead."""
    events = job_events(run_dir, unit, job.job_id)
    if any(e["event"] == "job_end" for e in events):
        return None
    if not events:
        return "it left the Slurm queue without starting (cancelled while queued, or failed at start)"
    return ("it left the Slurm queue without a result or an end marker (killed, node failure, out of memory "
            "or its time limit)")


def wait_for_slurm_jobs(pairs: list[tuple[list[Case], object]], run_dir: Path, finish, fail) -> None:
    """Wait until every job has a result file (then `finish(unit, job)`) or is dead (`fail(unit, job, why)`).

    submitit's own wait asks `sacct`, and without accounting it never learns that a job died: it would
    wait forever. Here a job is dead when it is gone from `squeue` for GONE_GRACE_S, with no result file
    and no job_end marker in its shard; a queue that cannot be read for QUEUE_UNREACHABLE_S ends the wait."""
    pending = list(pairs)
    gone_since: dict[str, float] = {}
    interval, next_poll, unreachable_since = QUEUE_POLL_S[0], 0.0, None
    while pending:
        for unit, job in [p for p in pending if p[1].paths.result_pickle.exists()]:
            pending.remove((unit, job))
            finish(unit, job)
        now = time.monotonic()
        if pending and now >= next_poll:
            queued = queued_job_ids()
            if queued is None:
                if unreachable_since is None:
                    unreachable_since = now
                    print("warning: squeue failed; still waiting for the jobs (the sweep stops waiting after "
                          f"{QUEUE_UNREACHABLE_S:.0f} s without an answer)", file=sys.stderr, flush=True)
                elif now - unreachable_since > QUEUE_UNREACHABLE_S:
                    for unit, job in pending:
                        fail(unit, job, f"squeue did not answer for {QUEUE_UNREACHABLE_S:.0f} s; stopped waiting "
                                        f"(the job may still run: `ssamba-bench collect {run_dir}` later)")
                    return
            else:
                unreachable_since = None
                for unit, job in list(pending):
                    if job.job_id in queued:
                        gone_since.pop(job.job_id, None)
                        continue
                    gone_since.setdefault(job.job_id, now)
                    if now - gone_since[job.job_id] >= GONE_GRACE_S and not job.paths.result_pickle.exists():
                        pending.remove((unit, job))
                        why = _gone_job(run_dir, unit[0].unit_name, job)
                        if why:
                            fail(unit, job, why)
                        else:
                            print(f"job {job.job_id} ({unit[0].unit_name}) ended (no result file; its shard has "
                                  f"its end marker)", file=sys.stderr, flush=True)
            interval = min(interval * 1.5, QUEUE_POLL_S[1])
            next_poll = now + (min(interval, GONE_GRACE_S / 2) if gone_since else interval)
        time.sleep(1.0)


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

    def fail(unit, job, failure: str):
        failures[unit[0].unit_name] = failure
        print(f"job {job.job_id} ({unit[0].unit_name}) failed: {failure}\n  logs: {_logs_text(job)}",
              file=sys.stderr, flush=True)

    def finish(unit, job):
        failure = _job_failure(job)
        if failure:
            fail(unit, job, failure)
        else:
            print(f"job {job.job_id} ({unit[0].unit_name}) done: {len(unit)} case(s)", file=sys.stderr, flush=True)

    if opts.executor == "slurm":
        with executor.batch():  # one sbatch call: a job array of len(units) tasks
            jobs = [executor.submit(run_job, run_dir, unit, settings, budget_s) for unit in units]
        for unit, job in zip(units, jobs):
            _record_job(store, opts, unit, job)
        print(f"submitted {len(jobs)} Slurm job(s) (array {jobs[0].job_id.split('_')[0] if jobs else '-'}); "
              f"logs in {folder}", file=sys.stderr)
        if opts.wait:
            wait_for_slurm_jobs(list(zip(units, jobs)), store.dir, finish, fail)
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


@dataclass
class ClusterOutcome:
    submitted_only: bool  # --no-wait: the jobs were submitted and not waited for
    failures: dict[str, str]  # unit -> failure message of the jobs that failed
    report: Report | None  # completeness after merging (None when not waited for)


def run_on_cluster(todo: list[Case], store: RunStore, settings: RunSettings, *,
                   job_name: str, budget_s: float, timeout_s: float, opts: ClusterOptions) -> ClusterOutcome:
    """Submit a job per unit of `todo`, wait (unless --no-wait), merge the shards, check completeness
    (against RUN_DIR/cases.json, which the sweep wrote before calling this)."""
    jobs, failures = submit_units(todo, store, dataclasses.replace(settings, budget_deadline=None), budget_s, opts,
                                  job_name=job_name, timeout_s=timeout_s) if todo else ([], {})
    if opts.executor == "slurm" and not opts.wait and jobs:
        store.event("session_submitted", jobs=[str(j.job_id) for j in jobs])
        return ClusterOutcome(True, failures, None)
    merge_shards(store)
    return ClusterOutcome(False, failures, check_run(store))
