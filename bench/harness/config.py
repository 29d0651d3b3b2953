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
"""

from __future__ import annotations

import dataclasses
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
    unknown_key_error,
)
from bench.common.vocabulary import DTYPE_ALIASES, PROTOCOLS, SWEEP_DTYPES
from bench.measure.protocol_settings import PaperConfig, SteadyConfig
from models.errors import UserInputError


def parse_axis(value: Any, key: str, where: str) -> tuple[int, ...]:
    """`tokens` / `frames`: a list of ints, or {start, stop, step} or {start, stop, factor}."""
    if isinstance(value, int) and not isinstance(value, bool):
        return (value,)
    if isinstance(value, list):
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            raise UserInputError(f"{where}: {key} must be a list of integers, got {value!r}")
        return tuple(value)
    if isinstance(value, dict):
        allowed = {"start", "stop", "step", "factor"}
        for k in value:
            if k not in allowed:
                raise unknown_key_error(f"{where}: {key}", k, allowed)
        try:
            start, stop = int(value["start"]), int(value["stop"])
        except KeyError as missing:
            raise UserInputError(f"{where}: {key} range needs {missing.args[0]!r}") from None
        if ("step" in value) == ("factor" in value):
            raise UserInputError(f"{where}: {key} range needs exactly one of 'step' (arithmetic) "
                                 f"or 'factor' (geometric)")
        if start < 1 or stop < start:
            raise UserInputError(f"{where}: {key} range must have 1 <= start <= stop, got {start}..{stop}")
        out, v = [], start
        if "step" in value:
            step = int(value["step"])
            if step < 1:
                raise UserInputError(f"{where}: {key} step must be >= 1")
            while v <= stop:
                out.append(v)
                v += step
        else:
            factor = float(value["factor"])
            if factor <= 1:
                raise UserInputError(f"{where}: {key} factor must be > 1")
            while v <= stop:
                out.append(v)
                v = max(v + 1, int(round(v * factor)))
        return tuple(out)
    raise UserInputError(f"{where}: {key} must be a list of integers or a range table, got {value!r}")


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
    protocol: tuple[str, ...] = field(default=("steady",), metadata={"help": "steady | paper"})
    threads: int = field(default=0, metadata={"help": "torch intra-op threads in each child; 0 = all usable cores"})
    memory_cap: str = field(default="", metadata={
        "help": "emulated device capacity, e.g. '8GiB': an address-space limit on CPU "
                "(above the child's baseline), the per-process memory fraction on CUDA; '' = none"})
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
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", cfg.name):
        raise UserInputError(f"{where}: name {cfg.name!r} may use letters, digits, '_', '-', '.' only")
    for d in cfg.dtype:
        if d not in DTYPE_ALIASES:
            raise UserInputError(f"{where}: unknown dtype {d!r}; choose from {', '.join(sorted(SWEEP_DTYPES))}")
    for p in cfg.protocol:
        if p not in PROTOCOLS:
            raise UserInputError(f"{where}: unknown protocol {p!r}; choose from {', '.join(PROTOCOLS)}")
    for b in cfg.batch:
        if b < 1:
            raise UserInputError(f"{where}: batch sizes must be >= 1, got {b}")
    for dev in cfg.device:
        if not re.fullmatch(r"cpu|cuda(:\d+)?", dev):
            raise UserInputError(f"{where}: unknown device {dev!r}; use cpu, cuda or cuda:N")
    if cfg.tf32 not in ("default", "on", "off"):
        raise UserInputError(f"{where}: tf32 must be 'default', 'on' or 'off', got {cfg.tf32!r}")
    if cfg.threads < 0:
        raise UserInputError(f"{where}: threads must be >= 0 (0 = all usable cores)")
    if cfg.timeout_s <= 0:
        raise UserInputError(f"{where}: timeout_s must be > 0")
    if cfg.budget_s < 0:
        raise UserInputError(f"{where}: budget_s must be >= 0 (0 = no budget)")
    if cfg.memory_cap:
        parse_bytes(cfg.memory_cap)
    for producer in cfg.extra_metrics:
        if ":" not in producer:
            raise UserInputError(f"{where}: extra_metrics entry {producer!r} must be 'module:function'")
    s = cfg.steady
    if not (1 <= s.warmup_min <= s.warmup_max and 1 <= s.min_repeats <= s.max_repeats):
        raise UserInputError(f"{where}: [steady] needs 1 <= warmup_min <= warmup_max and "
                             f"1 <= min_repeats <= max_repeats")
    if cfg.paper.runs < 1:
        raise UserInputError(f"{where}: [paper] runs must be >= 1")


def config_keys() -> list[tuple[str, str]]:
    """(key, help) for every key of a sweep file, for `sweep --keys`."""
    return describe_fields(SweepConfig)
