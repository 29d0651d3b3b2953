"""The parent's side of measuring: one spawned child per unit, watched for timeouts, crashes and the budget.

`run_isolated(cases, store, settings, env)` runs every unit (one model on one device) in a spawned
(never forked) child running `run_unit` (bench/harness/unit.py), and supervises it:

  - per-case timeout: the child says when a case starts (bench/harness/messages.py); past
    `timeout_s` the parent kills it, records `timeout`, and starts a new child for the rest;
  - a child that dies (segfault, kill -9, the kernel's OOM killer): the case in flight becomes an
    `error` row, or `oom` when the cgroup's OOM-kill counter moved;
  - a child that fails before running anything (import error, hang at start-up): every case of the
    unit becomes an `error` row naming the child's log, instead of a loop of restarts;
  - the session's budget: past it, the case in flight is dropped unrecorded (a resume runs it);
  - a stop request (`stopping_on`: a cluster job's SIGTERM from scancel, preemption or its time limit):
    the child is killed at once and the case in flight and the rest stay unrecorded, so a rerun runs
    them. Without it (the local executor), a child killed by a signal is an `error` row as before.
After a kill, the series gate (bench/harness/series_gate.py) records the larger token counts of a
failed series as skipped. The parent never imports torch; only children measure.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.harness.cases import Case, group_units
from bench.harness.messages import BudgetSpent, CaseEnded, CaseInfo, CaseStarted, ChildMessage, UnitDone
from bench.harness.series_gate import SeriesGate, skipped_rows
from bench.harness.settings import RunSettings
from bench.store.jsonl import append_jsonl
from bench.store.run_store import RunStore
from bench.store.schema import case_rows

CHILD_STARTUP_TIMEOUT_S = 300.0  # importing torch on a loaded machine; a hang beyond this is a failure
POLL_S = 0.2
# Slurm signals every process of a job at once: the child may die of the signal a moment before this
# process's own handler runs. A child killed by a stop signal waits this long for this process's own.
STOP_GRACE_S = 3.0


class Progress:
    """What run_isolated reports; the CLI subclasses it (progress bar or log lines)."""

    def start(self, case: Case) -> None: ...

    def done(self, case: Case, status: str) -> None: ...


@dataclass
class SweepOutcome:
    statuses: dict[str, str] = field(default_factory=dict)  # case_id -> status, recorded this session
    budget_exhausted: bool = False  # cases left unrecorded (a later session resumes them)
    stopped_by: str | None = None  # the signal that stopped this process (cases left unrecorded), e.g. "SIGTERM"


def run_isolated(cases: list[Case], store: RunStore, settings: RunSettings, env: dict,
                 progress: Progress | None = None) -> SweepOutcome:
    """Run every case, one spawned child per unit, until done, the sweep's budget is spent or a stop
    is requested (`stopping_on`)."""
    outcome = SweepOutcome()
    for unit in group_units(cases):
        ended = "stopped" if _STOP.signum else "budget" if settings.budget.spent() else \
            UnitSupervisor(unit, store, settings, env, progress or Progress(), outcome.statuses).run()
        outcome.budget_exhausted = ended == "budget"
        outcome.stopped_by = signal.Signals(_STOP.signum).name if ended == "stopped" else None
        if ended != "done":
            break
    return outcome


# --- stopping on request --------------------------------------------------------------------------

class _StopRequest:
    """The signals that stop this process's supervisor (while `stopping_on` holds) and the one received."""

    signums: tuple[int, ...] = ()
    signum: int | None = None


_STOP = _StopRequest()


@contextlib.contextmanager
def stopping_on(*signums: int):
    """While it holds, these signals stop run_isolated at once: the child is killed, the case in flight
    and the rest stay unrecorded (a rerun runs them). A cluster job holds it (Slurm's scancel, preemption
    and time limit send SIGTERM to every process of the job, and submitit ignores SIGTERM); the local
    executor does not, so there a SIGTERM still ends the sweep's process as it always did."""
    def request(signum, frame):  # only a flag: the supervisor's loop acts on it within POLL_S
        _STOP.signum = _STOP.signum or signum

    if threading.current_thread() is not threading.main_thread():  # Python sets handlers there only
        signums = ()
    previous = {signum: signal.signal(signum, request) for signum in signums}
    _STOP.signums, _STOP.signum = tuple(signums), None
    try:
        yield _STOP
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        _STOP.signums, _STOP.signum = (), None


# --- the child ------------------------------------------------------------------------------------

def _die_with_parent(parent_pid: int) -> None:
    """Linux: the kernel kills this child when the sweep dies (kill -9 included), so no orphan keeps
    writing rows."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)


def _child_main(conn, parent_pid: int, cases: list[Case], results_path: str, samples_path: str,
                settings: RunSettings, env: dict, log_path: str) -> None:
    from bench.harness.unit import run_unit

    _die_with_parent(parent_pid)
    log = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)  # tracebacks, warnings and C-level crash messages land in the unit's log
    sys.stdout.reconfigure(line_buffering=True)
    sys.stderr.reconfigure(line_buffering=True)
    print(f"child pid {os.getpid()}: {len(cases)} case(s)", file=sys.stderr)
    run_unit(cases, results_path, settings=settings, env=env, samples_path=samples_path, notify=conn.send)
    conn.send(UnitDone())
    conn.close()


# --- the parent -----------------------------------------------------------------------------------

def oom_kill_count() -> int | None:
    """The memory cgroup's OOM-kill counter (v2 memory.events or v1 memory.oom_control), if readable."""
    for path in ("/sys/fs/cgroup/memory.events", "/sys/fs/cgroup/memory/memory.oom_control"):
        try:
            for line in Path(path).read_text().splitlines():
                if line.startswith("oom_kill "):
                    return int(line.split()[1])
        except (OSError, ValueError):
            continue
    return None


def exit_description(exitcode: int | None) -> str:
    if exitcode is None:
        return "still running"
    if exitcode < 0:
        try:
            return f"killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"killed by signal {-exitcode}"
    return f"exit status {exitcode}"


class UnitSupervisor:
    """One unit in as many children as it takes: a timeout or a crash ends a child, not the unit."""

    def __init__(self, unit: list[Case], store: RunStore, settings: RunSettings, env: dict, progress: Progress,
                 statuses: dict[str, str]):
        self.store, self.settings, self.env, self.progress, self.statuses = store, settings, env, progress, statuses
        self.by_id = {c.case_id: c for c in unit}
        self.remaining = list(unit)
        self.log_path = store.logs / f"{unit[0].unit_name}.log"
        self.gate = SeriesGate(settings.skip_after_timeout)
        # per child:
        self.inflight: Case | None = None
        self.info: dict = {}
        self.deadline = 0.0
        self.started = 0

    def run(self) -> str:
        """"done", or why the unit ended early: "budget" (the sweep's time ran out), "stopped" (`stopping_on`)."""
        while self.remaining:
            if _STOP.signum:
                return "stopped"
            proc, outcome = self._run_child()
            if outcome in ("budget", "stopped") or (outcome != "done" and self._stopping(proc)):
                return "budget" if outcome == "budget" else "stopped"
            if outcome != "done":
                self._after_child_failure(proc, outcome)
        return "done"

    def _stopping(self, proc) -> bool:
        """Whether this process is being stopped, after its child died: a child killed by a stop signal
        while a stop can be requested waits a moment for this process's own signal (see STOP_GRACE_S)."""
        if proc.exitcode is not None and -proc.exitcode in _STOP.signums:
            deadline = time.monotonic() + STOP_GRACE_S
            while not _STOP.signum and time.monotonic() < deadline:
                time.sleep(0.05)
        return _STOP.signum is not None

    # -- one child --

    def _run_child(self):
        ctx = multiprocessing.get_context("spawn")
        receiver, sender = ctx.Pipe(duplex=False)
        self.oom_kills_before = oom_kill_count()
        unit = self.remaining[0]
        proc = ctx.Process(target=_child_main, name=f"ssamba-bench {unit.model}", daemon=True,
                           args=(sender, os.getpid(), list(self.remaining), str(self.store.results),
                                 str(self.store.samples), self.settings, self.env, str(self.log_path)))
        proc.start()
        sender.close()
        self.store.event("child_start", pid=proc.pid, unit=unit.model, device=unit.device, cases=len(self.remaining))
        self.inflight, self.info, self.started = None, {}, 0
        self.deadline = time.monotonic() + CHILD_STARTUP_TIMEOUT_S  # start-up, and between cases: hang guards
        outcome, child_stopped = "died", False
        try:
            outcome, child_stopped = self._watch(proc, receiver)
        finally:  # also on KeyboardInterrupt: never leave a child behind
            if child_stopped:
                proc.join(timeout=10)
            if proc.is_alive():
                proc.kill()
            proc.join()
            outcome = self._drain(receiver, proc) or outcome
            receiver.close()
        self.store.event("child_exit", pid=proc.pid, outcome=outcome, exit=exit_description(proc.exitcode))
        return proc, outcome

    def _watch(self, proc, receiver) -> tuple[str, bool]:
        """Until the child stops or must be stopped: (outcome, whether the child said it stops)."""
        while True:
            if _STOP.signum:
                return "stopped", False  # the case in flight is abandoned unrecorded: a rerun runs it
            if receiver.poll(POLL_S):
                try:
                    said = self._handle(receiver.recv(), proc)
                except (EOFError, OSError):
                    return "died", False
                if said:
                    return said, True
            elif not proc.is_alive():
                return self._drain(receiver, proc) or "died", False
            elif self.settings.budget.spent():
                return "budget", False  # the case in flight is abandoned unrecorded: a resume runs it
            elif time.monotonic() > self.deadline:
                return "timeout", False

    def _handle(self, msg: ChildMessage, proc) -> str | None:
        """Apply one message; returns "done" / "budget" when the child says it stops."""
        if isinstance(msg, CaseStarted):
            self.inflight, self.info, self.started = self.by_id[msg.case_id], {}, self.started + 1
            self.deadline = time.monotonic() + self.settings.timeout_s
            self.store.event("case_start", case_id=msg.case_id, label=msg.label, pid=proc.pid)
            self.progress.start(self.inflight)
        elif isinstance(msg, CaseInfo):
            self.info = msg.info
        elif isinstance(msg, CaseEnded):
            case = self.by_id[msg.case_id]
            self.statuses[case.case_id] = msg.status
            self.gate.record(case, msg.status)
            if case in self.remaining:
                self.remaining.remove(case)
            self.store.event("case_end", case_id=case.case_id, status=msg.status, by="child")
            self.progress.done(case, msg.status)
            if case is self.inflight:
                self.inflight = None
                self.deadline = time.monotonic() + CHILD_STARTUP_TIMEOUT_S
        elif isinstance(msg, UnitDone):
            return "done"
        elif isinstance(msg, BudgetSpent):
            return "budget"
        return None

    def _drain(self, receiver, proc) -> str | None:
        result = None
        try:
            while receiver.poll(0):
                result = self._handle(receiver.recv(), proc) or result
        except (EOFError, OSError):
            pass
        return result

    # -- after a child that was killed or died --

    def _record(self, case: Case, rows: list[dict], status: str) -> None:
        append_jsonl(self.store.results, rows)
        self.statuses[case.case_id] = status
        self.gate.record(case, status)
        self.remaining.remove(case)
        self.store.event("case_end", case_id=case.case_id, status=status, by="parent")
        self.progress.done(case, status)

    def _failure_rows(self, case: Case, status: str, error: str, info: dict | None = None) -> list[dict]:
        return case_rows(case, run_id=self.settings.run_id, env=self.env, status=status, error=error, info=info,
                         memory_cap_bytes=self.settings.memory_cap_bytes)

    def _after_child_failure(self, proc, outcome: str) -> None:
        if self.inflight is None:
            if self.started == 0:
                # The child failed before running anything (import error, hang at start): do not loop.
                why = "did not start within the start-up limit" if outcome == "timeout" else \
                    f"failed before running any case ({exit_description(proc.exitcode)})"
                for case in list(self.remaining):
                    self._record(case, self._failure_rows(case, "error", f"child process {why}; see {self.log_path}"),
                                 "error")
            return
        case = self.inflight
        if outcome == "timeout":
            status, error = "timeout", f"exceeded the per-case limit of {self.settings.timeout_s:g} s; child killed"
        else:
            after = oom_kill_count()
            oom_killed = proc.exitcode == -signal.SIGKILL and None not in (after, self.oom_kills_before) \
                and after > self.oom_kills_before
            status = "oom" if oom_killed else "error"
            error = (f"child process {exit_description(proc.exitcode)} during the case"
                     + (" (the kernel OOM killer)" if oom_killed else "") + f"; see {self.log_path}")
        self._record(case, self._failure_rows(case, status, error, self.info), status)
        for rest in list(self.remaining):
            blocked = self.gate.blocked(rest)
            if blocked:
                skip_status, cause = blocked
                self._record(rest, skipped_rows(rest, skip_status, cause, run_id=self.settings.run_id, env=self.env,
                                                memory_cap_bytes=self.settings.memory_cap_bytes), skip_status)
