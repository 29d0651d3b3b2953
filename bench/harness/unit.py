"""Runs cases in this process: one case (build, measure, rows), one unit (its cases, series gated).

This is the only place a case is measured; whoever runs it (the parent's spawned child,
bench/harness/isolation.py, inside a cluster job or not) decides only where. `run_unit` walks
each series' token axis upward and appends each case's rows to a JSON-lines file as soon as the case
finishes (the commit point of a case). An OOM gates the larger token counts of its series
(bench/harness/series_gate.py); any other exception is an `error` row; nothing ends the unit early
but the session's budget.

A memory cap emulates a device's capacity on CPU with RLIMIT_AS (bench/measure/memory.py), so the OOM
path runs for real. Extra metric producers (`extra_metrics = ["pkg.mod:fn"]`) are called per case
after the measurement as fn(model, inputs, case) -> iterable of
{metric, stat, value, unit[, n_samples, method]}; their rows join the case's rows.
"""

from __future__ import annotations

import gc
import os
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from bench.harness.cases import Case, run_order
from bench.harness.messages import BudgetSpent, CaseEnded, CaseInfo, CaseStarted, ChildMessage
from bench.harness.plugins import load_plugins, resolve_producer
from bench.harness.series_gate import SeriesGate, skipped_rows
from bench.harness.settings import RunSettings
from bench.measure.allocator import apply_cpu_allocator
from bench.store.jsonl import append_jsonl
from bench.store.schema import Metric, case_rows, new_attempt_id

_prepared: set = set()


def prepare_process(settings: RunSettings) -> None:
    """Thread count, TF32 flags, plugins, and a warm thread pool (so its stacks and malloc arenas are
    mapped before any memory cap is measured against). Idempotent."""
    import torch

    from bench.measure.env import usable_cores
    from models import list_models
    from models.scan import resolve_scan_impl

    key = (settings.threads, settings.tf32, settings.plugins, settings.cpu_allocator)
    if key in _prepared:
        return
    apply_cpu_allocator(settings.cpu_allocator)  # first: every later allocation is made under it
    torch.set_num_threads(settings.threads or usable_cores())
    if settings.tf32 != "default":
        on = settings.tf32 == "on"
        torch.backends.cuda.matmul.allow_tf32 = on
        torch.backends.cudnn.allow_tf32 = on
    load_plugins(settings.plugins)
    # Everything loaded on first use is loaded now, not inside a case's memory cap: the built-in models
    # (timm, torchvision) and the C++ scan extension (built or loaded, so `auto` resolves the same way).
    list_models()
    resolve_scan_impl("auto", "cpu")
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


def one_line(exc: BaseException, limit: int = 500) -> str:
    """An exception as one bounded line, for a row's `error` column."""
    text = " ".join(f"{type(exc).__name__}: {exc}".split())
    return text if len(text) <= limit else text[:limit] + "..."


def _ignore(message: ChildMessage) -> None:
    pass


def run_case(case: Case, settings: RunSettings, env: dict,
             notify: Callable[[ChildMessage], None] = _ignore) -> tuple[list[dict], dict, str]:
    """Build and measure one case; returns (rows, raw samples record, status). Never raises for a
    failure of the case itself (KeyboardInterrupt still ends the process)."""
    import torch

    from bench.measure import memory
    from bench.measure.protocols import measure_paper, measure_steady, measure_train
    from models import create_model

    info: dict = {}
    device = case.device
    dtype = getattr(torch, case.dtype)  # canonical dtype names are torch's (bench/common/vocabulary.py)
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
                        tf32_cudnn=torch.backends.cudnn.allow_tf32, cpu_allocator=settings.cpu_allocator)
            notify(CaseInfo(case.case_id, dict(info)))
        return model

    def make_input():
        generator = torch.Generator().manual_seed(settings.seed)
        x = torch.randn(case.batch, case.frames, info["n_mels"], generator=generator)  # (B, T, F)
        return x.to(device=device, dtype=dtype)

    status, error, metrics, samples = "ok", None, [], {}
    measurement = None
    try:
        if device.startswith("cuda"):
            memory.apply_cuda_memory_cap(device, settings.memory_cap_bytes)
        cap = settings.memory_cap_bytes if device == "cpu" else None
        protocol, protocol_settings, extra = {
            "paper": (measure_paper, settings.paper, {}),
            "train": (measure_train, settings.steady, {"seed": settings.seed}),  # steady rules, training steps
        }.get(case.protocol, (measure_steady, settings.steady, {}))
        with memory.address_space_cap(cap):
            measurement = protocol(build, make_input, device=device, batch=case.batch, n_tokens=case.n_tokens,
                                   cfg=protocol_settings, track_tensor_bytes=settings.track_tensor_bytes,
                                   amp=case.amp, **extra)
            info["sdpa_backend"] = kernels_ran(measurement, case)
        metrics, samples = measurement.metrics, measurement.samples
        if hasattr(os, "getloadavg"):  # other processes competing for the cores make timings unreliable
            metrics.append(Metric("loadavg_1m", "value", os.getloadavg()[0], "processes", 1,
                                  "os.getloadavg() after the measurement"))
        metrics += _extra_metrics(settings.extra_metrics, measurement, case)
    except Exception as exc:  # every failure of a case is a row, never the end of the sweep
        status = "oom" if memory.is_oom(exc, capped=settings.memory_cap_bytes is not None) else "error"
        error = one_line(exc)
        print(f"[{case.label}] {status}:", file=sys.stderr)
        traceback.print_exc()
        metrics = []
    finally:
        measurement = None
        memory.release_memory(device)
    rows = case_rows(case, run_id=settings.run_id, env=env, status=status, metrics=metrics, error=error,
                     info=info, attempt_id=new_attempt_id(), memory_cap_bytes=settings.memory_cap_bytes)
    return rows, samples, status


def kernels_ran(measurement, case) -> str | None:
    """Which SDPA kernel the case's call ran, for models that use SDPA: from the ops the CPU's
    tensor-bytes call recorded, else one more untimed forward under an op recorder (with gradients for
    the train protocol, as its steps run)."""
    import torch

    from bench.measure.precision import autocast, sdpa_backend

    model, x = measurement.model, measurement.inputs
    grad = torch.enable_grad() if case.protocol == "train" else torch.no_grad()

    def forward():
        with grad, autocast(case.device, case.amp):
            return model(x)

    return sdpa_backend(forward, uses_sdpa=getattr(model, "attn_impl", None) == "sdpa", op_names=measurement.op_names)


def _extra_metrics(producers, measurement, case) -> list[Metric]:
    """Rows from extra metric producers; a failing producer gives one `error` row of its own."""
    rows = []
    for spec in producers:
        try:
            for m in resolve_producer(spec)(measurement.model, measurement.inputs, case):
                rows.append(Metric(m["metric"], m.get("stat", "value"), m["value"], m["unit"],
                                   m.get("n_samples", 1), m.get("method", spec)))
        except Exception as exc:
            rows.append(Metric(spec, "value", None, "", None, spec, status="error", error=one_line(exc)))
    return rows


def run_unit(cases: list[Case], results_path: str | Path, *, settings: RunSettings, env: dict | None = None,
             samples_path: str | Path | None = None,
             notify: Callable[[ChildMessage], None] = _ignore) -> dict[str, str]:
    """Run `cases` here, each series upward in tokens, appending each case's rows to `results_path`
    (and raw samples to `samples_path`) when it finishes. Returns case_id -> status.

    `notify` gets a message per event (bench/harness/messages.py): the parent's child forwards them
    through its pipe; a direct call can ignore them.
    """
    from bench.measure.env import collect_env

    prepare_process(settings)
    env = env if env is not None else collect_env(settings.threads)
    results_path = Path(results_path)
    gate = SeriesGate(settings.skip_after_timeout)
    statuses = {}
    for case in sorted(cases, key=run_order):
        blocked = gate.blocked(case)
        if blocked:
            skip_status, cause = blocked
            append_jsonl(results_path, skipped_rows(case, skip_status, cause, run_id=settings.run_id, env=env,
                                                    memory_cap_bytes=settings.memory_cap_bytes))
            statuses[case.case_id] = skip_status
            notify(CaseEnded(case.case_id, skip_status))
            continue
        if settings.budget.spent():
            notify(BudgetSpent())  # the rest stays unrecorded: a resumed sweep runs it
            break
        notify(CaseStarted(case.case_id, case.label))
        print(f"[{time.strftime('%H:%M:%S')}] start {case.label} ({case.case_id})", file=sys.stderr, flush=True)
        rows, samples, status = run_case(case, settings, env, notify)
        if samples_path is not None and samples:
            append_jsonl(Path(samples_path), [{"run_id": settings.run_id, "case_id": case.case_id,
                                               "attempt_id": rows[0]["attempt_id"], "label": case.label,
                                               "protocol": case.protocol, **samples}])
        append_jsonl(results_path, rows)  # the commit point of the case
        statuses[case.case_id] = status
        gate.record(case, status)
        notify(CaseEnded(case.case_id, status))
    return statuses
