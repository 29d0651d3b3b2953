"""A cluster run's shards: one set of files per job, so no two jobs ever append to one file.

    shards/<unit>.jsonl            result rows of this unit (append-only; a resubmitted job appends)
    shards/<unit>.samples.jsonl    raw timing samples
    shards/<unit>.events.jsonl     job_start / child / case / job_end (or job_stopped) markers, with host and pid
    shards/<unit>.env.json         the environment of the node the job ran on (latest attempt)
    shards/jobs.jsonl              one line per submitted job: executor, job id, unit, cases, log paths

`merge_shards` (run by `ssamba-bench collect` and at the start of every sweep session) appends the
shard rows not yet in results.jsonl: the run directory stays the single source of truth, and a
resumed sweep, with any executor, runs only the cases not recorded.
"""

from __future__ import annotations

from pathlib import Path

from bench.store.jsonl import append_jsonl, read_jsonl
from bench.store.run_store import RunStore
from bench.store.schema import row_problem

SHARDS_DIR = "shards"
JOBS_FILE = "jobs.jsonl"


class ShardStore(RunStore):
    """The files one job writes: its unit's shard; `logs/` is shared (per-unit file names)."""

    def __init__(self, run_dir: str | Path, name: str):
        super().__init__(run_dir)
        shards = self.dir / SHARDS_DIR
        self.results = shards / f"{name}.jsonl"
        self.samples = shards / f"{name}.samples.jsonl"
        self.events = shards / f"{name}.events.jsonl"
        self.env = shards / f"{name}.env.json"


def shard_paths(run_dir: Path) -> tuple[list[Path], list[Path]]:
    shards = Path(run_dir) / SHARDS_DIR
    results = sorted(p for p in shards.glob("*.jsonl")
                     if p.name != JOBS_FILE and not p.name.endswith((".samples.jsonl", ".events.jsonl")))
    samples = sorted(shards.glob("*.samples.jsonl"))
    return results, samples


def _needs(key: str):
    """A read_jsonl check: the record has a string `key` (other lines are skipped with a warning)."""
    return lambda record: None if isinstance(record.get(key), str) else f"no {key!r}"


def read_events(path: Path) -> list[dict]:
    """A shard's job/child/case markers (records without an `event` name are skipped, with a warning)."""
    return read_jsonl(path, check=_needs("event"), what="events")


def read_jobs(run_dir: Path) -> list[dict]:
    """shards/jobs.jsonl: one record per submitted job."""
    return read_jsonl(Path(run_dir) / SHARDS_DIR / JOBS_FILE, check=_needs("unit"), what="job records")


def job_events(run_dir: Path, unit: str, job_id: str) -> list[dict]:
    """The events one job wrote in its unit's shard, from its (latest) job_start to the next job's; [] if
    it never started."""
    events = read_events(Path(run_dir) / SHARDS_DIR / f"{unit}.events.jsonl")
    starts = [i for i, e in enumerate(events) if e["event"] == "job_start" and str(e.get("job_id")) == str(job_id)]
    if not starts:
        return []
    later = [i for i, e in enumerate(events) if i > starts[-1] and e["event"] == "job_start"]
    return events[starts[-1]:later[0] if later else len(events)]


def existing_logs(paths: list[str | Path]) -> tuple[list[str], list[str]]:
    """(paths that exist, paths that do not), for naming only the logs a reader can open."""
    present = [str(p) for p in paths if p and Path(p).exists()]
    return present, [str(p) for p in paths if p and str(p) not in present]


def merge_shards(store: RunStore) -> int:
    """Append to results.jsonl (and samples.jsonl) the shard records of attempts not yet there, oldest
    first, so file order stays time order (latest_attempts takes the last). Idempotent; returns the
    number of result rows added. Run only while no job of this run is writing (collect, sweep start)."""
    results, samples = shard_paths(store.dir)
    added = 0
    # Only real rows (and samples records with an attempt) travel from a shard into the run's files.
    checks = {store.results: (row_problem, "result rows"), store.samples: (_needs("attempt_id"), "samples records")}
    for target, sources in ((store.results, results), (store.samples, samples)):
        check, what = checks[target]
        known = {r.get("attempt_id") for r in read_jsonl(target)}
        new = [r for src in sources for r in read_jsonl(src, check=check, what=what) if r.get("attempt_id") not in known]
        new.sort(key=lambda r: r.get("timestamp") or "")  # stable: a case's rows keep their order
        append_jsonl(target, new)
        if target == store.results:
            added = len(new)
    return added
