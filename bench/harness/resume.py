"""Resuming a run: which cases of a sweep still need to run, given what its directory already records.

A case with a final status in results.jsonl (cluster shards merged first) is done, unless its status
is one the user asked to retry. Only a finished attempt counts: one whose rows are all in the file
(bench/store/run_store.py `read_rows`, which warns about the others); a case whose rows a crash cut
short runs again. Of the rest, a case whose series already failed at a smaller token
count (an OOM, or a timeout when `skip_after_timeout`) does not run: it is recorded as skipped now,
by the same series gate the measuring child uses (bench/harness/series_gate.py).
"""

from __future__ import annotations

from bench.common.vocabulary import SKIP_AFTER
from bench.harness.cases import Case
from bench.harness.series_gate import SeriesGate, skipped_rows
from bench.harness.settings import RunSettings
from bench.store.jsonl import append_jsonl
from bench.store.run_store import RunStore
from bench.store.shards import SHARDS_DIR, merge_shards


def with_skips(statuses: set[str]) -> set[str]:
    """Retrying a failure also retries the cases it gated (oom -> skipped_after_oom, ...)."""
    return statuses | {SKIP_AFTER[s] for s in statuses if s in SKIP_AFTER}


def cases_to_run(store: RunStore, cases: list[Case], settings: RunSettings, env: dict,
                 retry: set[str] = frozenset()) -> list[Case]:
    """The cases of `cases` this session must run; gated ones are recorded as skipped on the way."""
    if (store.dir / SHARDS_DIR).is_dir():  # cases recorded by cluster jobs count as recorded
        merge_shards(store)
    done = {cid: s for cid, s in store.statuses().items() if s not in retry}
    gate = SeriesGate.from_recorded(cases, done, settings.skip_after_timeout)
    todo = []
    for case in cases:
        if case.case_id in done:
            continue
        blocked = gate.blocked(case)
        if blocked:
            skip_status, cause = blocked
            append_jsonl(store.results, skipped_rows(case, skip_status, cause, run_id=settings.run_id, env=env,
                                                     memory_cap_bytes=settings.memory_cap_bytes))
        else:
            todo.append(case)
    return todo
