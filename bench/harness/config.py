"""Sweep configuration: what a TOML file in bench/configs/ may say, checked before anything runs.

A sweep file lists the axes of the sweep (models, sizes, token counts, batch sizes, dtypes, devices,
attention and scan implementations, protocols) and how to measure (protocol settings, per-case
timeout, memory cap). Every axis takes one value or a list. Keys and types are checked by the
suite's one config validator (bench/common/config_fields.py); unknown keys are errors that name the key.

Token counts are given either as `tokens` or as `frames` (the paper swept frames in steps of 512),
each a list or a range table: `{start, stop, step}` (arithmetic, stop included) or
`{start, stop, factor}` (geometric). `--set key=value` overrides use the same names; nested keys are
dotted (`steady.max_time_s=5`) and values are TOML (`tokens=[128,256]`, `memory_cap="2GiB"`; bare
words are taken as strings).

Numbers are checked against what can run: no nan or infinity anywhere (the validator), sizes and
counts from 1 to MAX_SIZE, times up to MAX_SECONDS, at most MAX_AXIS_VALUES values per axis; a value
outside is one error naming the key, before anything runs.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common.config_fields import (
    apply_set,
    build,
    describe_fields,
    parse_bytes,
    read_toml,
    resolve_path,
    short_repr,
    unknown_key_error,
)
from bench.common.vocabulary import AMP_MODES, DTYPE_ALIASES, PROTOCOLS, SWEEP_DTYPES, dtype_name
from bench.measure.allocator import CPU_ALLOCATORS
from bench.measure.protocol_settings import PaperConfig, SteadyConfig
from models.errors import UserInputError

# Bounds of what can run. Sizes and counts (token counts, frames, batch sizes, repeats, runs): torch's
# kernels index with 32-bit integers, and nothing above this fits a machine anyway.
MAX_SIZE = 2**31 - 1
MAX_AXIS_VALUES = 10_000  # values of one axis: a range table with step 1 up to 10**9 would never expand
MAX_SECONDS = 30 * 86400  # timeouts, budgets, protocol time caps: beyond 30 days it is a typo
MAX_THREADS = 1024  # torch intra-op threads; more is a typo (0 = all usable cores)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _range_int(value: Any, key: str, part: str, where: str) -> int:
    if not _is_int(value):
        raise UserInputError(f"{where}: {key} {part} must be an integer, got {short_repr(value)}")
    return value


def _axis_range(value: dict, key: str, where: str) -> list[int]:
    """{start, stop, step} (arithmetic) or {start, stop, factor} (geometric), stop included."""
    allowed = {"start", "stop", "step", "factor"}
    for k in value:
        if k not in allowed:
            raise unknown_key_error(f"{where}: {key}", k, allowed)
    for k in ("start", "stop"):
        if k not in value:
            raise UserInputError(f"{where}: {key} range needs {k!r}")
    if ("step" in value) == ("factor" in value):
        raise UserInputError(f"{where}: {key} range needs exactly one of 'step' (arithmetic) "
                             f"or 'factor' (geometric)")
    start, stop = _range_int(value["start"], key, "start", where), _range_int(value["stop"], key, "stop", where)
    if start < 1 or stop < start or stop > MAX_SIZE:
        raise UserInputError(f"{where}: {key} range must have 1 <= start <= stop <= {MAX_SIZE}, "
                             f"got {short_repr(start)}..{short_repr(stop)}")
    if "step" in value:
        step = _range_int(value["step"], key, "step", where)
        if step < 1:
            raise UserInputError(f"{where}: {key} step must be >= 1")
        count = (stop - start) // step + 1
        if count > MAX_AXIS_VALUES:
            raise UserInputError(f"{where}: {key} range gives {count} values, more than {MAX_AXIS_VALUES}")
        return list(range(start, stop + 1, step))
    factor = value["factor"]
    if not isinstance(factor, (int, float)) or isinstance(factor, bool) or not math.isfinite(factor) or factor <= 1:
        raise UserInputError(f"{where}: {key} factor must be a finite number > 1, got {short_repr(factor)}")
    out, v = [], start
    while v <= stop:
        out.append(v)
        if len(out) > MAX_AXIS_VALUES:
            raise UserInputError(f"{where}: {key} range gives more than {MAX_AXIS_VALUES} values")
        nxt = v * factor  # a float: beyond stop (+1 for rounding) the axis ends, so int() never sees inf
        v = max(v + 1, int(round(nxt))) if nxt <= stop + 1 else stop + 1
    return out


def parse_axis(value: Any, key: str, where: str) -> tuple[int, ...]:
    """`tokens` / `frames`: a list of ints, or {start, stop, step} or {start, stop, factor}; each
    value from 1 to MAX_SIZE, at most MAX_AXIS_VALUES of them."""
    if _is_int(value):
        values = [value]
    elif isinstance(value, list):
        if not all(_is_int(v) for v in value):
            raise UserInputError(f"{where}: {key} must be a list of integers, got {short_repr(value)}")
        values = value
    elif isinstance(value, dict):
        values = _axis_range(value, key, where)
    else:
        raise UserInputError(f"{where}: {key} must be a list of integers or a range table, got {short_repr(value)}")
    for v in values:
        if not 1 <= v <= MAX_SIZE:
            raise UserInputError(f"{where}: {key} must be between 1 and {MAX_SIZE}, got {short_repr(v)}")
    if len(values) > MAX_AXIS_VALUES:
        raise UserInputError(f"{where}: {key} has {len(values)} values, more than {MAX_AXIS_VALUES}")
    return tuple(values)


def parse_memory_cap(value: Any, key: str, where: str) -> str:
    """`memory_cap`: a size ('8GiB'), a byte count, or '' (none); checked now, kept as text."""
    if isinstance(value, str) and not value.strip():
        return ""
    if not isinstance(value, (str, int)) or isinstance(value, bool):
        raise UserInputError(f"{where}: {key} must be a size such as '8GiB' or a byte count, got {short_repr(value)}")
    try:
        parse_bytes(value)
    except UserInputError as err:
        raise UserInputError(f"{where}: {err}") from None
    return str(value).strip()


def _table_of(kind: type, shape: str, value: Any, key: str, where: str) -> dict:
    """`max_tokens` / `checkpoints`: a table whose values are all of one type."""
    if not isinstance(value, dict) or not all(isinstance(v, kind) and not isinstance(v, bool) for v in value.values()):
        raise UserInputError(f"{where}: {key} must be a table of {shape}")
    return dict(value)


def parse_model_options(value: Any, key: str, where: str) -> dict:
    """{ model or family = { option = value or [values] } }."""
    scalar = (str, int, float, bool)
    ok = isinstance(value, dict) and all(
        isinstance(opts, dict) and all(isinstance(v, scalar) or (isinstance(v, list) and v and all(
            isinstance(i, scalar) for i in v)) for v in opts.values()) for opts in value.values())
    if not ok:
        raise UserInputError(f"{where}: model_options must be a table of model/family = {{ option = value "
                             f"or [values] }}, e.g. {{ aum = {{ mixer = ['fo_bi', 'bi_bi'] }} }}")
    for model, opts in value.items():
        for name, v in opts.items():
            for item in v if isinstance(v, list) else [v]:
                if isinstance(item, float) and not math.isfinite(item):
                    raise UserInputError(f"{where}: model_options {model}.{name} must be finite, got {item!r}")
    return {model: dict(opts) for model, opts in value.items()}


@dataclass(frozen=True)
class SweepConfig:
    """One sweep: its axes (every combination is a case) and how each case is measured."""

    name: str = field(default="sweep", metadata={"help": "short name, used in the run directory's name"})
    description: str = field(default="", metadata={"help": "what this sweep is for"})
    models: tuple[str, ...] = field(default=(), metadata={
        "help": "registry names (ssast_tiny, test_ssamba) or families (ssast, ssamba) combined with `sizes`"})
    sizes: tuple[str, ...] = field(default=(), metadata={"help": "sizes for the family entries of `models`"})
    tokens: tuple[int, ...] = field(default=(), metadata={"help": "patch-token counts (list or range table)",
                                                         "parse": parse_axis})
    frames: tuple[int, ...] = field(default=(), metadata={"help": "fbank frame counts instead of tokens",
                                                         "parse": parse_axis})
    max_tokens: dict = field(default_factory=dict, metadata={
        "help": "per model name or family: largest token count to run (e.g. { ssast_tiny = 22016 })",
        "parse": lambda v, key, where: _table_of(int, "model/family = integer", v, key, where)})
    batch: tuple[int, ...] = field(default=(1,), metadata={"help": "batch sizes"})
    dtype: tuple[str, ...] = field(default=("float32",), metadata={"help": "float32 | float16 | bfloat16"})
    device: tuple[str, ...] = field(default=("cpu",), metadata={"help": "cpu | cuda | cuda:N"})
    attn_impl: tuple[str, ...] = field(default=("eager",), metadata={
        "help": "attention kernels, for models that have the choice (SSAST: eager | sdpa)"})
    scan_impl: tuple[str, ...] = field(default=("auto",), metadata={
        "help": "selective-scan backends, for models that have the choice (SSAMBA: auto | reference | ...)"})
    protocol: tuple[str, ...] = field(default=("steady",), metadata={
        "help": "steady | paper | train (training steps: forward, loss, backward, Adam; timed by the [steady] rules)"})
    amp: tuple[str, ...] = field(default=("none",), metadata={
        "help": "autocast around the measured call: none | bfloat16 | float16 (weights stay float32; needs "
                "dtype float32); rows record which SDPA kernel actually ran"})
    threads: int = field(default=0, metadata={"help": "torch intra-op threads in each child; 0 = all usable cores"})
    memory_cap: str = field(default="", metadata={
        "help": "emulated device capacity, e.g. '8GiB' or a byte count: an address-space limit on CPU "
                "(above the child's baseline), the per-process memory fraction on CUDA; '' = none",
        "parse": parse_memory_cap})
    timeout_s: float = field(default=600.0, metadata={
        "help": "hard limit per case (build + measure); the child is killed"})
    budget_s: float = field(default=0.0, metadata={
        "help": "time budget of one sweep session in seconds (0 = none): no case starts after it, and a "
                "case still running then is stopped unrecorded; the rest is resumed by running the sweep again"})
    skip_after_timeout: bool = field(default=True, metadata={
        "help": "after a timeout, record larger token counts of the same series as skipped_after_timeout"})
    seed: int = field(default=0, metadata={"help": "seed for weights and the random input"})
    tf32: str = field(default="default", metadata={
        "help": "CUDA TF32 for matmul and cuDNN: 'default' (leave torch's), 'on' or 'off'; always recorded"})
    cpu_allocator: str = field(default="glibc", metadata={
        "help": "the measuring children's malloc (bench/measure/allocator.py): 'glibc' (its defaults), 'pinned' "
                "(its steady state from the start: no dependence on what the child ran before) or 'retain' (no "
                "mmap'd blocks, no trimming: warm calls reuse faulted-in pages); recorded in every row"})
    track_tensor_bytes: bool = field(default=True, metadata={
        "help": "CPU: count peak live tensor bytes in one extra untimed forward (deterministic)"})
    extra_metrics: tuple[str, ...] = field(default=("bench.estimate:case_metrics",), metadata={
        "help": "'module:function' producers called per case as fn(model, x, case) -> list of metric dicts "
                "(default: FLOPs and predicted peak memory from bench/estimate/trace.py)"})
    plugins: tuple[str, ...] = field(default=(), metadata={
        "help": "modules or .py files imported first (in the parent and every child), e.g. to register models"})
    model_options: dict = field(default_factory=dict, metadata={
        "help": "per model name or family: constructor options, a list sweeps them (e.g. "
                "{ aum = { mixer = ['fo_bi', 'bi_bi'] } }); recorded in each row's model_options column",
        "parse": parse_model_options})
    checkpoints: dict = field(default_factory=dict, metadata={
        "help": "per model name: a checkpoint in the authors' layout (e.g. { ssamba_tiny = 'ssamba_tiny_400.pth' }), "
                "loaded strictly (models/checkpoints.py) instead of random weights",
        "parse": lambda v, key, where: _table_of(str, 'model = "path"', v, key, where)})
    steady: SteadyConfig = field(default_factory=SteadyConfig, metadata={"help": "steady-protocol settings"})
    paper: PaperConfig = field(default_factory=PaperConfig, metadata={"help": "paper-protocol settings"})
    source: str = field(default="", metadata={"help": "(set by the loader) the file this came from"})

    @property
    def memory_cap_bytes(self) -> int | None:
        return parse_bytes(self.memory_cap) if self.memory_cap else None


def config_from_dict(data: dict, where: str) -> SweepConfig:
    """A SweepConfig from an already parsed table (e.g. the config recorded in a run's run.json)."""
    return build(SweepConfig, data, where)


def load_config(config: str | Path, overrides: list[str] = ()) -> SweepConfig:
    """Read a sweep file, apply `--set` overrides, and check every key and type."""
    path = resolve_path(str(config))
    data = read_toml(path)
    for assignment in overrides:
        keys = apply_set(data, assignment)
        if keys in (["tokens"], ["frames"]):
            data.pop("frames" if keys[0] == "tokens" else "tokens", None)  # the override replaces the axis
    data.setdefault("name", path.stem)
    cfg = dataclasses.replace(build(SweepConfig, data, str(path)), source=str(path))
    check_config(cfg, str(path))
    return cfg


def check_config(cfg: SweepConfig, where: str) -> None:
    """Checks that need no model registry or device (those happen in sweep.expand)."""
    if not cfg.models:
        raise UserInputError(f"{where}: `models` is empty; list registry names or families")
    if bool(cfg.tokens) == bool(cfg.frames):
        raise UserInputError(f"{where}: give exactly one of `tokens` or `frames`")
    for axis in ("batch", "dtype", "device", "attn_impl", "scan_impl", "protocol", "amp"):
        if not getattr(cfg, axis):  # an empty axis would silently leave out every case (or a model's)
            raise UserInputError(f"{where}: `{axis}` is empty; give at least one value")
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", cfg.name):
        raise UserInputError(f"{where}: name {cfg.name!r} may use letters, digits, '_', '-', '.' only")
    for d in cfg.dtype:
        if d not in DTYPE_ALIASES:
            raise UserInputError(f"{where}: unknown dtype {d!r}; choose from {', '.join(sorted(SWEEP_DTYPES))}")
    for a in cfg.amp:
        if a != "none" and a not in DTYPE_ALIASES:
            raise UserInputError(f"{where}: unknown amp {a!r}; choose from {', '.join(AMP_MODES)}")
    if any(a != "none" for a in cfg.amp) and any(dtype_name(d) != "float32" for d in cfg.dtype):
        raise UserInputError(f"{where}: amp (autocast) runs float32 weights in a lower precision; with dtype "
                             f"{', '.join(cfg.dtype)} set dtype = 'float32' or amp = 'none'")
    for p in cfg.protocol:
        if p not in PROTOCOLS:
            raise UserInputError(f"{where}: unknown protocol {p!r}; choose from {', '.join(PROTOCOLS)}")
    for b in cfg.batch:
        if not 1 <= b <= MAX_SIZE:
            raise UserInputError(f"{where}: batch sizes must be between 1 and {MAX_SIZE}, got {short_repr(b)}")
    for name, limit in cfg.max_tokens.items():
        if not 1 <= limit <= MAX_SIZE:
            raise UserInputError(f"{where}: max_tokens {name} must be between 1 and {MAX_SIZE}, "
                                 f"got {short_repr(limit)}")
    for dev in cfg.device:
        if not re.fullmatch(r"cpu|cuda(:\d+)?", dev):
            raise UserInputError(f"{where}: unknown device {dev!r}; use cpu, cuda or cuda:N")
    if cfg.tf32 not in ("default", "on", "off"):
        raise UserInputError(f"{where}: tf32 must be 'default', 'on' or 'off', got {cfg.tf32!r}")
    if cfg.cpu_allocator not in CPU_ALLOCATORS:
        raise UserInputError(f"{where}: cpu_allocator must be one of {', '.join(CPU_ALLOCATORS)}, "
                             f"got {short_repr(cfg.cpu_allocator)}")
    if not 0 <= cfg.threads <= MAX_THREADS:
        raise UserInputError(f"{where}: threads must be between 0 (all usable cores) and {MAX_THREADS}, "
                             f"got {short_repr(cfg.threads)}")
    if not 0 < cfg.timeout_s <= MAX_SECONDS:
        raise UserInputError(f"{where}: timeout_s must be > 0 and at most {MAX_SECONDS} (30 days), "
                             f"got {cfg.timeout_s:g}")
    if not 0 <= cfg.budget_s <= MAX_SECONDS:
        raise UserInputError(f"{where}: budget_s must be between 0 (no budget) and {MAX_SECONDS} (30 days), "
                             f"got {cfg.budget_s:g}")
    if cfg.seed < 0:
        raise UserInputError(f"{where}: seed must be >= 0, got {cfg.seed}")
    if cfg.memory_cap:
        parse_bytes(cfg.memory_cap)
    for producer in cfg.extra_metrics:
        if ":" not in producer:
            raise UserInputError(f"{where}: extra_metrics entry {producer!r} must be 'module:function'")
    s = cfg.steady
    for name in ("warmup_min", "warmup_max", "min_repeats", "max_repeats"):
        if not 1 <= getattr(s, name) <= MAX_SIZE:
            raise UserInputError(f"{where}: [steady] {name} must be between 1 and {MAX_SIZE}, "
                                 f"got {short_repr(getattr(s, name))}")
    if not (s.warmup_min <= s.warmup_max and s.min_repeats <= s.max_repeats):
        raise UserInputError(f"{where}: [steady] needs 1 <= warmup_min <= warmup_max and "
                             f"1 <= min_repeats <= max_repeats")
    if s.warmup_rtol < 0:  # 0 is allowed: never stable, so the warm-up runs to warmup_max
        raise UserInputError(f"{where}: [steady] warmup_rtol must be >= 0, got {s.warmup_rtol:g}")
    for name in ("min_time_s", "max_time_s"):  # max_time_s 0: one timed call (one is always made)
        if not 0 <= getattr(s, name) <= MAX_SECONDS:
            raise UserInputError(f"{where}: [steady] {name} must be between 0 and {MAX_SECONDS} (30 days), "
                                 f"got {getattr(s, name):g}")
    if not 1 <= cfg.paper.runs <= MAX_SIZE:
        raise UserInputError(f"{where}: [paper] runs must be between 1 and {MAX_SIZE}, "
                             f"got {short_repr(cfg.paper.runs)}")


def config_keys() -> list[tuple[str, str]]:
    """(key, help) for every key of a sweep file, for `sweep --keys`."""
    return describe_fields(SweepConfig)
