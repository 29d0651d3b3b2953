"""Series gating: after an OOM (or a timeout) at some token count, the larger ones of that series do not run.

A series is one variant of a model (everything of a case but its token count, `Case.series_key`);
its cases run in ascending token order. Once a case of a series fails for lack of memory, every
larger token count of that series would fail the same way, slower: it is recorded as
`skipped_after_oom` instead, with the cause in its `error` column. A timeout gates the same way
(`skipped_after_timeout`) when the config says so (`skip_after_timeout`, the default).

One gate serves the three places that need it: the measuring child walking its unit, the parent
after it kills a child (timeout, crash), and a resumed sweep reading what earlier sessions recorded.
"""

from __future__ import annotations

from bench.common.vocabulary import SKIP_AFTER
from bench.harness.cases import Case, run_order
from bench.store.schema import case_rows


class SeriesGate:
    def __init__(self, skip_after_timeout: bool = True):
        self.gating = {"oom"} | ({"timeout"} if skip_after_timeout else set())
        self._causes: dict[tuple, tuple[str, Case]] = {}  # series -> (skip status, the case that failed)

    @classmethod
    def from_recorded(cls, cases: list[Case], statuses: dict[str, str], skip_after_timeout: bool) -> SeriesGate:
        """A gate that knows the failures already recorded (case_id -> status) among `cases`."""
        gate = cls(skip_after_timeout)
        for case in sorted(cases, key=run_order):
            if case.case_id in statuses:
                gate.record(case, statuses[case.case_id])
        return gate

    def record(self, case: Case, status: str) -> None:
        """Note a case's final status; a gating failure closes the larger token counts of its series
        (the smallest failing token count is the cause that counts)."""
        if status in self.gating:
            cause = self._causes.get(case.series_key)
            if cause is None or case.n_tokens < cause[1].n_tokens:
                self._causes[case.series_key] = (SKIP_AFTER[status], case)

    def blocked(self, case: Case) -> tuple[str, Case] | None:
        """(skip status, the failed case) when `case` must not run, else None."""
        cause = self._causes.get(case.series_key)
        return cause if cause and case.n_tokens > cause[1].n_tokens else None


def skipped_rows(case: Case, status: str, cause: Case, *, run_id: str, env: dict,
                 memory_cap_bytes: int | None) -> list[dict]:
    """The rows of a case not run because a smaller token count of its series failed."""
    what = "out of memory" if status == "skipped_after_oom" else "timed out"
    return case_rows(case, run_id=run_id, env=env, status=status,
                     error=f"not run: {cause.n_tokens} tokens {what} in this series",
                     memory_cap_bytes=memory_cap_bytes)
