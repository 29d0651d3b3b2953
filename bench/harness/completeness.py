"""Is a run complete? Every case of its sweep against the final statuses recorded, and why some are missing.

`write_cases` records every case of a sweep in RUN_DIR/cases.json when a session starts; `check_run` compares
it (or, for runs without it, the config in run.json expanded here) with the latest statuses, the
jobs submitted (shards/jobs.jsonl) and the jobs' start/end markers; `describe` is the report of
`ssamba-bench collect`: counts, missing cases by unit with their job's logs (only files that exist; for
the others, where they will be), failed cases.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from bench.harness.cases import Case, unit_name
from bench.store.run_store import RunStore, latest_attempts
from bench.store.shards import SHARDS_DIR, existing_logs, read_events, read_jobs

CASES_FILE = "cases.json"


def _case_records(cases: list[Case]) -> list[dict]:
    return [{"case_id": c.case_id, "label": c.label, "unit": c.unit_name, **c.to_dict()} for c in cases]


def write_cases(run_dir: Path, cases: list[Case]) -> None:
    (Path(run_dir) / CASES_FILE).write_text(json.dumps(_case_records(cases), indent=1) + "\n")


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
        from bench.harness.config import config_from_dict
        from bench.harness.expand import expand

        config = {k: v for k, v in json.loads(manifest.read_text())["config"].items()
                  if k != "source" and v not in ((), [], {}, None)}
        cases = expand(config_from_dict(config, str(manifest)))
    except Exception:  # e.g. a cuda config collected on a login node without GPUs
        return None
    return _case_records(cases)


@dataclass
class Report:
    expected: int | None
    statuses: dict[str, str]
    missing: list[dict]  # expected cases without a final status
    failed: list[dict]  # latest rows of cases whose status is not ok
    jobs: dict[str, dict]  # unit -> latest job record (jobs.jsonl)
    unfinished_jobs: dict[str, dict]  # unit -> job_start event without a job_end after it
    ended_jobs: set[str] = dataclasses.field(default_factory=set)  # units whose last job ended normally
    stopped_jobs: dict[str, dict] = dataclasses.field(default_factory=dict)  # unit -> job_stopped event (scancel...)

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
    for record in read_jobs(store.dir):
        jobs[record["unit"]] = record
    unfinished, ended, stopped = {}, set(), {}
    for events in sorted((store.dir / SHARDS_DIR).glob("*.events.jsonl")):
        unit, last_start = events.name.removesuffix(".events.jsonl"), None
        for e in read_events(events):
            if e["event"] == "job_start":
                last_start = e
                ended.discard(unit)
                stopped.pop(unit, None)
            elif e["event"] in ("job_end", "job_stopped"):
                last_start = None
                if e["event"] == "job_end":
                    ended.add(unit)
                else:
                    stopped[unit] = e
        if last_start is not None:
            unfinished[unit] = last_start
    return Report(None if cases is None else len(cases), statuses, missing, failed, jobs, unfinished, ended, stopped)


def _job_state(report: Report, unit: str) -> str:
    """Why a unit's cases are missing, from its job's markers."""
    if unit in report.unfinished_jobs:
        start = report.unfinished_jobs[unit]
        return (f"its job did not finish (killed, timed out or still running; "
                f"host {start.get('host')}, pid {start.get('pid')})")
    if unit in report.stopped_jobs:
        stop = report.stopped_jobs[unit]
        if stop.get("signal"):
            return f"its job was stopped by {stop['signal']} (scancel, preemption or its time limit) before running them"
        return (f"its job stopped on {stop.get('reason')} (submitit's signal near the time limit or on preemption, "
                f"or an error: see its logs)")
    if unit in report.ended_jobs:
        return "its job ended before running them (time budget spent?)"
    return "its job never started (queued, or failed at start: see its logs)" if report.jobs.get(unit) \
        else "no job was submitted for it"


def _log_lines(job: dict | None, child_log: Path) -> list[str]:
    """The logs of a unit's job and measuring child that exist; for a job's that do not, where they will be."""
    lines = []
    if job:
        present, absent = existing_logs([job.get("stdout"), job.get("stderr")])
        logs = "  ".join(present) if present else "none yet"
        lines.append(f"    job {job['job_id']} ({job['executor']}); logs: {logs}")
        if absent:
            lines.append(f"    (not written: {'  '.join(absent)}: the job has not started, or its node writes "
                         f"them to a filesystem this machine does not see)")
    if child_log.exists():
        lines.append(f"    measuring child's log: {child_log}")
    return lines


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
        lines.append(f"incomplete: {unit}: {len(cases)} case(s) missing; {_job_state(report, unit)}")
        for case in cases[:5]:
            lines.append(f"    {case['case_id']}  {case['label']}")
        if len(cases) > 5:
            lines.append(f"    ... and {len(cases) - 5} more")
        lines.extend(_log_lines(report.jobs.get(unit), Path(run_dir) / "logs" / f"{unit}.log"))
    for row in report.failed:
        log = Path(run_dir) / "logs" / f"{unit_name(row['model'], row['device'])}.log"
        lines.append(f"failed: {row['case_id']} {row['model']} {row['n_tokens']} tok: {row['status']}: "
                     f"{row['error']}" + (f" (log: {log})" if log.exists() else ""))
    return "\n".join(lines)
