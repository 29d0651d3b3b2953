"""Runs cases in isolated child processes; out-of-memory, timeouts and crashes become rows.

Two layers, kept apart so another executor (e.g. a submitit job per unit) can reuse the first:

  run_unit(cases, results_path, ...)   runs one unit's cases *in this process*, walking each series'
                                       token axis upward, appending each case's rows to a JSON-lines
                                       file as soon as it finishes. An OOM marks the larger token counts
                                       of its series skipped_after_oom; any other exception is an
                                       `error` row; nothing ends the unit early.
  run_isolated(cases, store, ...)      the parent's orchestration: one spawned (never forked) child per
                                       unit running run_unit; it watches the per-case timeout (kills the
                                       child, records `timeout`, starts a new child for the rest of the
                                       unit) and notices a child that died (segfault, kill -9, the
                                       kernel's OOM killer): the case in flight becomes an `error` row,
                                       or `oom` when the cgroup's OOM-kill counter moved.

A memory cap emulates a device's capacity on CPU with RLIMIT_AS in the child (measure.address_space_cap),
so the OOM path runs for real. Extra metric producers (`extra_metrics = ["pkg.mod:fn"]`) are called
per case after the measurement as fn(model, inputs, case) -> iterable of
{metric, stat, value, unit[, n_samples, method]}; their rows join the case's rows.
"""

from __future__ import annotations

import ctypes
import gc
import importlib
import importlib.util
import multiprocessing
import os
import signal
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.config import PaperConfig, SteadyConfig, SweepConfig
from bench.results import RunStore, append_jsonl, case_rows, new_attempt_id
from bench.sweep import Case, group_units, run_order
from models.errors import UserInputError

CHILD_STARTUP_TIMEOUT_S = 300.0  # importing torch on a loaded machine; a hang beyond this is a failure


@dataclass(frozen=True)
class RunSettings:
    """How every case of a run is measured (not part of any case's identity)."""

    run_id: str
    steady: SteadyConfig = SteadyConfig()
    paper: PaperConfig = PaperConfig()
    threads: int = 0
    memory_cap_bytes: int | None = None
    timeout_s: float = 600.0
    skip_after_timeout: bool = True
    seed: int = 0
    tf32: str = "default"
    track_tensor_bytes: bool = True
    extra_metrics: tuple[str, ...] = ()
    plugins: tuple[str, ...] = ()
    checkpoints: tuple[tuple[str, str], ...] = ()  # (model name, checkpoint path)
    budget_deadline: float | None = None  # time.time() after which no case starts (None: no budget)

    @classmethod
    def from_config(cls, cfg: SweepConfig, run_id: str) -> RunSettings:
        return cls(run_id=run_id, steady=cfg.steady, paper=cfg.paper, threads=cfg.threads,
                   budget_deadline=time.time() + cfg.budget_s if cfg.budget_s else None,
                   memory_cap_bytes=cfg.memory_cap_bytes, timeout_s=cfg.timeout_s,
                   skip_after_timeout=cfg.skip_after_timeout, seed=cfg.seed, tf32=cfg.tf32,
                   track_tensor_bytes=cfg.track_tensor_bytes, extra_metrics=cfg.extra_metrics,
                   checkpoints=tuple((m, str(Path(p).resolve())) for m, p in sorted(cfg.checkpoints.items())),
                   plugins=tuple(_absolute_plugin(p) for p in cfg.plugins)
                   + tuple(m for m in cfg.models if ":" in m))  # model specs: children import them too


# --- process set-up -------------------------------------------------------------------------------

def _absolute_plugin(plugin: str) -> str:
    return str(Path(plugin).resolve()) if plugin.endswith(".py") else plugin


def load_plugins(plugins) -> None:
    """Import plugin modules (names), files (paths ending .py) or model specs ("module:function"),
    once per process."""
    for plugin in plugins:
        if ":" in plugin:
            from bench.sweep import import_spec

            import_spec(plugin)
            continue
        try:
            if plugin.endswith(".py"):
                path = Path(plugin).resolve()
                if not path.is_file():
                    raise UserInputError(f"plugin file {plugin!r} not found")
                name = "ssamba_bench_plugin_" + "".join(c if c.isalnum() else "_" for c in str(path))
                if name in sys.modules:
                    continue
                spec = importlib.util.spec_from_file_location(name, path)
                module = importlib.util.module_from_spec(spec)
                sys.modules[name] = module
                spec.loader.exec_module(module)
            else:
                importlib.import_module(plugin)
        except UserInputError:
            raise
        except Exception as err:
            raise UserInputError(f"plugin {plugin!r} failed to import: {type(err).__name__}: {err}") from None


def resolve_producer(spec: str) -> Callable:
    module_name, _, attr = spec.partition(":")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as err:
        raise UserInputError(f"extra metric producer {spec!r} not found: {err}") from None


_prepared: set = set()


def prepare_process(settings: RunSettings) -> None:
    """Thread count, TF32 flags, plugins, and a warm thread pool (so its stacks and malloc arenas are
    mapped before any memory cap is measured against). Idempotent."""
    import torch

    from bench.env import usable_cores

    key = (settings.threads, settings.tf32, settings.plugins)
    if key in _prepared:
        return
    torch.set_num_threads(settings.threads or usable_cores())
    if settings.tf32 != "default":
        on = settings.tf32 == "on"
        torch.backends.cuda.matmul.allow_tf32 = on
        torch.backends.cudnn.allow_tf32 = on
    load_plugins(settings.plugins)
    for spec in settings.extra_metrics:
        resolve_producer(spec)
    a = torch.randn(256, 256)
    (a @ a).relu_().sum()
    torch.nn.functional.conv2d(torch.randn(1, 1, 64, 64), torch.randn(4, 1, 16, 16), stride=16)
    # torch's import leaves ~10^6 objects; freezing them makes each gc.collect() of the measurement
    # (before memory windows, between cases) cost milliseconds instead of ~0.4 s.
    gc.collect()
    gc.freeze()
    _prepared.add(key)


def _one_line(exc: BaseException, limit: int = 500) -> str:
    text = " ".join(f"{type(exc).__name__}: {exc}".split())
    return text if len(text) <= limit else text[:limit] + "..."


# --- one case, one unit (in this process) ---------------------------------------------------------

_DTYPES = {"float32": "float32", "float16": "float16", "bfloat16": "bfloat16"}


def run_case(case: Case, settings: RunSettings, env: dict,
             notify: Callable = lambda *m: None) -> tuple[list[dict], dict, str]:
    """Build and measure one case; returns (rows, raw samples record, status). Never raises for a
    failure of the case itself (KeyboardInterrupt still ends the process)."""
    import torch

    from bench import measure
    from bench.results import metric
    from models import create_model

    info: dict = {}
    device = case.device
    dtype = getattr(torch, _DTYPES[case.dtype])
    options = case.model_kwargs  # model_options, attn_impl, scan_impl

    checkpoint = dict(settings.checkpoints).get(case.model)

    def build():
        torch.manual_seed(settings.seed)
        if checkpoint:  # the authors' weights, loaded strictly, at this case's input length
            from models.checkpoints import load_checkpoint

            model = load_checkpoint(checkpoint, family=case.model, input_frames=case.frames, **options).eval()
        else:
            model = create_model(case.model, input_frames=case.frames, **options).eval()
        model = model.to(device=device, dtype=dtype)
        if not info:
            info.update(model.describe())  # resolves the scan backend (may build an extension once)
            info["n_mels"] = model.grid.n_mels
            if info["n_tokens"] != case.n_tokens:
                raise RuntimeError(f"model built for {info['n_tokens']} tokens, case says {case.n_tokens}")
            info.update(threads=torch.get_num_threads(),
                        device_name=(torch.cuda.get_device_name(torch.device(device)) if device.startswith("cuda")
                                     else env.get("device_names", {}).get("cpu")),
                        tf32_matmul=torch.backends.cuda.matmul.allow_tf32,
                        tf32_cudnn=torch.backends.cudnn.allow_tf32)
            notify("info", case.case_id, dict(info))
        return model

    def make_input():
        generator = torch.Generator().manual_seed(settings.seed)
        x = torch.randn(case.batch, case.frames, info["n_mels"], generator=generator)  # (B, T, F)
        return x.to(device=device, dtype=dtype)

    status, error, metrics, samples = "ok", None, [], {}
    measurement = None
    try:
        if device.startswith("cuda"):
            measure.apply_cuda_memory_cap(device, settings.memory_cap_bytes)
        cap = settings.memory_cap_bytes if device == "cpu" else None
        with measure.address_space_cap(cap):
            if case.protocol == "paper":
                measurement = measure.measure_paper(build, make_input, device=device, batch=case.batch,
                                                    n_tokens=case.n_tokens, cfg=settings.paper,
                                                    track_tensor_bytes=settings.track_tensor_bytes)
            else:
                measurement = measure.measure_steady(build, make_input, device=device, batch=case.batch,
                                                     n_tokens=case.n_tokens, cfg=settings.steady,
                                                     track_tensor_bytes=settings.track_tensor_bytes)
        metrics, samples = measurement.metrics, measurement.samples
        if hasattr(os, "getloadavg"):  # other processes competing for the cores make timings unreliable
            metrics.append(metric("loadavg_1m", "value", os.getloadavg()[0], "processes", 1,
                                  "os.getloadavg() after the measurement"))
        metrics += _extra_metrics(settings.extra_metrics, measurement, case)
    except Exception as exc:  # every failure of a case is a row, never the end of the sweep
        status = "oom" if measure.is_oom(exc) else "error"
        error = _one_line(exc)
        print(f"[{case.label}] {status}:", file=sys.stderr)
        traceback.print_exc()
        metrics = []
    finally:
        measurement = None
        measure.release_memory(device)
    rows = case_rows(case, run_id=settings.run_id, env=env, status=status, metrics=metrics, error=error,
                     info=info, attempt_id=new_attempt_id(), memory_cap_bytes=settings.memory_cap_bytes)
    return rows, samples, status


def _extra_metrics(producers, measurement, case) -> list[dict]:
    """Rows from extra metric producers; a failing producer gives one `error` row of its own."""
    from bench.results import metric

    rows = []
    for spec in producers:
        try:
            for m in resolve_producer(spec)(measurement.model, measurement.inputs, case):
                rows.append(metric(m["metric"], m.get("stat", "value"), m["value"], m["unit"],
                                   m.get("n_samples", 1), m.get("method", spec)))
        except Exception as exc:
            rows.append({**metric(spec, "value", None, "", None, spec), "status": "error", "error": _one_line(exc)})
    return rows


def skipped_rows(case: Case, status: str, cause: Case, settings: RunSettings, env: dict) -> list[dict]:
    what = "out of memory" if status == "skipped_after_oom" else "timed out"
    return case_rows(case, run_id=settings.run_id, env=env, status=status,
                     error=f"not run: {cause.n_tokens} tokens {what} in this series",
                     memory_cap_bytes=settings.memory_cap_bytes)


def run_unit(cases: list[Case], results_path: str | Path, *, settings: RunSettings, env: dict | None = None,
             samples_path: str | Path | None = None, notify: Callable = lambda *m: None) -> dict[str, str]:
    """Run `cases` here, each series upward in tokens, appending each case's rows to `results_path`
    (and raw samples to `samples_path`) when it finishes. Returns case_id -> status.

    `notify(kind, case_id, payload)` reports progress: ("start", id, label), ("info", id, describe),
    ("end", id, status). The unit of work of any executor: the parent's child process, a cluster job.
    """
    from bench.env import collect_env

    prepare_process(settings)
    env = env if env is not None else collect_env(settings.threads)
    results_path = Path(results_path)
    blocked: dict[tuple, tuple[str, Case]] = {}  # series -> (skip status, the case that failed)
    statuses = {}
    for case in sorted(cases, key=run_order):
        if case.series_key in blocked:
            skip_status, cause = blocked[case.series_key]
            append_jsonl(results_path, skipped_rows(case, skip_status, cause, settings, env))
            statuses[case.case_id] = skip_status
            notify("end", case.case_id, skip_status)
            continue
        if settings.budget_deadline is not None and time.time() >= settings.budget_deadline:
            notify("budget")  # the rest stays unrecorded: a resumed sweep runs it
            break
        notify("start", case.case_id, case.label)
        print(f"[{time.strftime('%H:%M:%S')}] start {case.label} ({case.case_id})", file=sys.stderr, flush=True)
        rows, samples, status = run_case(case, settings, env, notify)
        if samples_path is not None and samples:
            append_jsonl(Path(samples_path), [{"run_id": settings.run_id, "case_id": case.case_id,
                                               "attempt_id": rows[0]["attempt_id"], "label": case.label,
                                               "protocol": case.protocol, **samples}])
        append_jsonl(results_path, rows)  # the commit point of the case
        statuses[case.case_id] = status
        if status == "oom":
            blocked[case.series_key] = ("skipped_after_oom", case)
        notify("end", case.case_id, status)
    return statuses


# --- the parent: one spawned child per unit -------------------------------------------------------

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
    _die_with_parent(parent_pid)
    log = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)  # tracebacks, warnings and C-level crash messages land in the unit's log
    sys.stdout.reconfigure(line_buffering=True)
    sys.stderr.reconfigure(line_buffering=True)
    print(f"child pid {os.getpid()}: {len(cases)} case(s)", file=sys.stderr)
    run_unit(cases, results_path, settings=settings, env=env, samples_path=samples_path,
             notify=lambda *msg: conn.send(msg))
    conn.send(("done",))
    conn.close()


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


def _exit_description(exitcode: int | None) -> str:
    if exitcode is None:
        return "still running"
    if exitcode < 0:
        try:
            return f"killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"killed by signal {-exitcode}"
    return f"exit status {exitcode}"


class Progress:
    """What run_isolated reports; the CLI subclasses it (progress bar or log lines)."""

    def start(self, case: Case) -> None: ...

    def done(self, case: Case, status: str) -> None: ...


def _unit_log_name(case: Case) -> str:
    return f"{case.model}-{case.device.replace(':', '')}.log"


@dataclass
class SweepOutcome:
    statuses: dict[str, str]  # case_id -> status, for the cases this session recorded
    budget_exhausted: bool = False  # cases left unrecorded (a later session resumes them)


def run_isolated(cases: list[Case], store: RunStore, settings: RunSettings, env: dict,
                 progress: Progress | None = None) -> SweepOutcome:
    """Run every case, one spawned child per unit, until done or the sweep's budget is spent."""
    progress = progress or Progress()
    outcome = SweepOutcome({})
    for unit in group_units(cases):
        if settings.budget_deadline is not None and time.time() >= settings.budget_deadline:
            outcome.budget_exhausted = True
            break
        if not _run_unit_isolated(unit, store, settings, env, progress, outcome.statuses):
            outcome.budget_exhausted = True
            break
    return outcome


def _run_unit_isolated(unit: list[Case], store: RunStore, settings: RunSettings, env: dict,
                       progress: Progress, statuses: dict[str, str]) -> bool:
    """One unit in as many children as it takes (a timeout or a crash ends a child, not the unit).
    Returns False when the sweep's time budget ran out first."""
    ctx = multiprocessing.get_context("spawn")
    by_id = {c.case_id: c for c in unit}
    remaining = list(unit)
    log_path = store.logs / _unit_log_name(unit[0])
    budget_end = None if settings.budget_deadline is None else \
        time.monotonic() + (settings.budget_deadline - time.time())

    def record(case: Case, rows: list[dict], status: str) -> None:
        append_jsonl(store.results, rows)
        statuses[case.case_id] = status
        remaining.remove(case)
        store.event("case_end", case_id=case.case_id, status=status, by="parent")
        progress.done(case, status)

    def skip_rest_of_series(cause: Case, skip_status: str) -> None:
        for case in [c for c in remaining if c.series_key == cause.series_key and c.n_tokens > cause.n_tokens]:
            record(case, skipped_rows(case, skip_status, cause, settings, env), skip_status)

    while remaining:
        receiver, sender = ctx.Pipe(duplex=False)
        oom_kills_before = oom_kill_count()
        proc = ctx.Process(target=_child_main, name=f"ssamba-bench {unit[0].model}", daemon=True,
                           args=(sender, os.getpid(), list(remaining), str(store.results), str(store.samples),
                                 settings, env, str(log_path)))
        proc.start()
        sender.close()
        store.event("child_start", pid=proc.pid, unit=unit[0].model, device=unit[0].device, cases=len(remaining))
        inflight: Case | None = None
        info: dict = {}
        deadline = time.monotonic() + CHILD_STARTUP_TIMEOUT_S  # start-up, and between cases: hang guards
        started = 0

        def handle(msg) -> str | None:
            """Apply one message of the child; returns "done" / "budget" when the child says it stops."""
            nonlocal inflight, info, deadline, started
            kind = msg[0]
            if kind == "start":
                inflight, info, started = by_id[msg[1]], {}, started + 1
                deadline = time.monotonic() + settings.timeout_s
                store.event("case_start", case_id=inflight.case_id, label=inflight.label, pid=proc.pid)
                progress.start(inflight)
            elif kind == "info":
                info = msg[2]
            elif kind == "end":
                case = by_id[msg[1]]
                statuses[case.case_id] = msg[2]
                if case in remaining:
                    remaining.remove(case)
                store.event("case_end", case_id=case.case_id, status=msg[2], by="child")
                progress.done(case, msg[2])
                if case is inflight:
                    inflight = None
                    deadline = time.monotonic() + CHILD_STARTUP_TIMEOUT_S
            elif kind in ("done", "budget"):
                return kind
            return None

        def drain() -> str | None:
            result = None
            try:
                while receiver.poll(0):
                    result = handle(receiver.recv()) or result
            except (EOFError, OSError):
                pass
            return result

        outcome, child_stopped = "died", False
        try:
            while True:
                if receiver.poll(0.2):
                    try:
                        said = handle(receiver.recv())
                    except (EOFError, OSError):
                        break
                    if said:
                        outcome, child_stopped = said, True
                        break
                elif not proc.is_alive():
                    outcome = drain() or "died"
                    break
                elif budget_end is not None and time.monotonic() > budget_end:
                    outcome = "budget"  # the case in flight is abandoned unrecorded: a resume runs it
                    break
                elif time.monotonic() > deadline:
                    outcome = "timeout"
                    break
        finally:  # also on KeyboardInterrupt: never leave a child behind
            if child_stopped:
                proc.join(timeout=10)
            if proc.is_alive():
                proc.kill()
            proc.join()
            outcome = drain() or outcome
            receiver.close()
        store.event("child_exit", pid=proc.pid, outcome=outcome, exit=_exit_description(proc.exitcode))
        if outcome == "budget":
            return False
        if outcome == "done":
            continue
        if inflight is None:
            if started == 0:
                # The child failed before running anything (import error, hang at start): do not loop.
                why = "did not start within the start-up limit" if outcome == "timeout" else \
                    f"failed before running any case ({_exit_description(proc.exitcode)})"
                for case in list(remaining):
                    record(case, case_rows(case, run_id=settings.run_id, env=env, status="error",
                                           error=f"child process {why}; see {log_path}",
                                           memory_cap_bytes=settings.memory_cap_bytes), "error")
            continue
        case = inflight
        if outcome == "timeout":
            status, error = "timeout", f"exceeded the per-case limit of {settings.timeout_s:g} s; child killed"
        else:
            after = oom_kill_count()
            oom_killed = proc.exitcode == -signal.SIGKILL and None not in (after, oom_kills_before) \
                and after > oom_kills_before
            status = "oom" if oom_killed else "error"
            error = (f"child process {_exit_description(proc.exitcode)} during the case"
                     + (" (the kernel OOM killer)" if oom_killed else "") + f"; see {log_path}")
        record(case, case_rows(case, run_id=settings.run_id, env=env, status=status, error=error, info=info,
                               memory_cap_bytes=settings.memory_cap_bytes), status)
        if status == "oom":
            skip_rest_of_series(case, "skipped_after_oom")
        elif status == "timeout" and settings.skip_after_timeout:
            skip_rest_of_series(case, "skipped_after_timeout")
    return True


def skip_after_prior_failures(cases: list[Case], done: dict[str, str], all_cases: list[Case], store: RunStore,
                              settings: RunSettings, env: dict) -> list[Case]:
    """On resume: a series that already hit an OOM (or a timeout, when so configured) does not run its
    larger token counts; they are recorded as skipped. Returns the cases still to run."""
    causes: dict[tuple, tuple[str, Case]] = {}
    for case in sorted(all_cases, key=run_order):
        status = done.get(case.case_id)
        if case.series_key in causes:
            continue
        if status == "oom":
            causes[case.series_key] = ("skipped_after_oom", case)
        elif status == "timeout" and settings.skip_after_timeout:
            causes[case.series_key] = ("skipped_after_timeout", case)
    todo = []
    for case in cases:
        cause = causes.get(case.series_key)
        if cause and case.n_tokens > cause[1].n_tokens:
            append_jsonl(store.results, skipped_rows(case, cause[0], cause[1], settings, env))
        else:
            todo.append(case)
    return todo

