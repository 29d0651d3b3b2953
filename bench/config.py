"""Sweep configuration: what a TOML file in bench/configs/ may say, checked before anything runs.

A sweep file lists the axes of the sweep (models, sizes, token counts, batch sizes, dtypes, devices,
attention and scan implementations, protocols) and how to measure (protocol settings, per-case
timeout, memory cap). Every axis takes one value or a list. Unknown keys are errors that name the key
(optimum-benchmark's and nanoGPT's frozen-dataclass configs, with a help string per field).

Token counts are given either as `tokens` or as `frames` (the paper swept frames in steps of 512),
each a list or a range table: `{start, stop, step}` (arithmetic, stop included) or
`{start, stop, factor}` (geometric). `--set key=value` overrides use the same names; nested keys are
dotted (`steady.max_time_s=5`) and values are TOML (`tokens=[128,256]`, `memory_cap="2GiB"`; bare
words are taken as strings).
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from models.errors import UserInputError

CONFIG_DIR = Path(__file__).parent / "configs"

DTYPES = {"float32": "float32", "fp32": "float32", "float16": "float16", "fp16": "float16",
          "half": "float16", "bfloat16": "bfloat16", "bf16": "bfloat16"}
PROTOCOLS = ("steady", "paper")


@dataclass(frozen=True)
class SteadyConfig:
    """The `steady` protocol: warm up until stable, then time repeated forwards (DESIGN.md)."""

    warmup_min: int = field(default=3, metadata={"help": "warm-up calls at least (after the cold call)"})
    warmup_max: int = field(default=25, metadata={"help": "warm-up calls at most"})
    warmup_rtol: float = field(default=0.05, metadata={
        "help": "warm-up ends when two consecutive running medians (of the last 5 calls) agree within this"})
    min_repeats: int = field(default=10, metadata={"help": "timed calls at least, unless max_time_s runs out"})
    max_repeats: int = field(default=100, metadata={"help": "timed calls at most"})
    min_time_s: float = field(default=1.0, metadata={
        "help": "time budget: keep timing until this much time is spent, once min_repeats are reached"})
    max_time_s: float = field(default=30.0, metadata={
        "help": "soft cap on the warm-up and on the timed phase each; slow cases stop early with "
                "n_samples < min_repeats (the rows say so); at least one timed call is always made"})


@dataclass(frozen=True)
class PaperConfig:
    """The `paper` protocol: the authors' (fresh model per run, no warm-up, mean incl. the cold run)."""

    runs: int = field(default=5, metadata={"help": "runs, each on a freshly built model"})


@dataclass(frozen=True)
class SweepConfig:
    """One sweep: its axes (every combination is a case) and how each case is measured."""

    name: str = field(default="sweep", metadata={"help": "short name, used in the run directory's name"})
    description: str = field(default="", metadata={"help": "what this sweep is for"})
    models: tuple[str, ...] = field(default=(), metadata={
        "help": "registry names (ssast_tiny, test_ssamba) or families (ssast, ssamba) combined with `sizes`"})
    sizes: tuple[str, ...] = field(default=(), metadata={"help": "sizes for the family entries of `models`"})
    tokens: tuple[int, ...] = field(default=(), metadata={"help": "patch-token counts (list or range table)"})
    frames: tuple[int, ...] = field(default=(), metadata={"help": "fbank frame counts instead of tokens"})
    max_tokens: dict = field(default_factory=dict, metadata={
        "help": "per model name or family: largest token count to run (e.g. { ssast_tiny = 22016 })"})
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
                "(default: FLOPs and predicted peak memory from bench/estimate.py)"})
    plugins: tuple[str, ...] = field(default=(), metadata={
        "help": "modules or .py files imported first (in the parent and every child), e.g. to register models"})
    model_options: dict = field(default_factory=dict, metadata={
        "help": "per model name or family: constructor options, a list sweeps them (e.g. "
                "{ aum = { mixer = ['fo_bi', 'bi_bi'] } }); recorded in each row's model_options column"})
    checkpoints: dict = field(default_factory=dict, metadata={
        "help": "per model name: a checkpoint in the authors' layout (e.g. { ssamba_tiny = 'ssamba_tiny_400.pth' }), "
                "loaded strictly (models/checkpoints.py) instead of random weights"})
    steady: SteadyConfig = field(default_factory=SteadyConfig, metadata={"help": "steady-protocol settings"})
    paper: PaperConfig = field(default_factory=PaperConfig, metadata={"help": "paper-protocol settings"})
    source: str = field(default="", metadata={"help": "(set by the loader) the file this came from"})

    @property
    def memory_cap_bytes(self) -> int | None:
        return parse_bytes(self.memory_cap) if self.memory_cap else None


_SECTIONS = {"steady": SteadyConfig, "paper": PaperConfig}
_LIST_FIELDS = {"models", "sizes", "batch", "dtype", "device", "attn_impl", "scan_impl", "protocol",
                "extra_metrics", "plugins"}


def parse_bytes(text: str | int) -> int:
    """'8GiB' -> 8589934592; '512MB' -> 512000000; plain integers are bytes."""
    if isinstance(text, int):
        return text
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([KMGT]i?B|B)?\s*", str(text), flags=re.IGNORECASE)
    if not match:
        raise UserInputError(f"memory_cap {text!r} is not a size; write e.g. '8GiB', '512MiB' or a byte count")
    number, unit = float(match.group(1)), (match.group(2) or "B").upper()
    scale = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
             "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}[unit]
    return int(number * scale)


def _suggest(key: str, valid) -> str:
    close = difflib.get_close_matches(key, list(valid), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _unknown_key_error(where: str, key: str, valid) -> UserInputError:
    return UserInputError(f"{where}: unknown key {key!r}{_suggest(key, valid)}; valid keys: {', '.join(sorted(valid))}")


def _axis_values(key: str, value: Any, where: str) -> tuple[int, ...]:
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
                raise _unknown_key_error(f"{where}: {key}", k, allowed)
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


def _coerce(cls, key: str, value: Any, where: str):
    """Check one value against the dataclass field's declared type."""
    kind = {f.name: f.type for f in dataclasses.fields(cls)}[key]
    if key in ("tokens", "frames"):
        return _axis_values(key, value, where)
    if key in _LIST_FIELDS:
        items = value if isinstance(value, list) else [value]
        want = int if key == "batch" else str
        for item in items:
            if not isinstance(item, want) or isinstance(item, bool):
                raise UserInputError(f"{where}: {key} must be {want.__name__} or a list of them, got {value!r}")
        return tuple(items)
    if key == "max_tokens":
        if not isinstance(value, dict) or not all(isinstance(v, int) for v in value.values()):
            raise UserInputError(f"{where}: max_tokens must be a table of model/family = integer")
        return dict(value)
    if key == "model_options":
        scalar = (str, int, float, bool)
        ok = isinstance(value, dict) and all(
            isinstance(opts, dict) and all(isinstance(v, scalar) or (isinstance(v, list) and v and all(
                isinstance(i, scalar) for i in v)) for v in opts.values()) for opts in value.values())
        if not ok:
            raise UserInputError(f"{where}: model_options must be a table of model/family = {{ option = value "
                                 f"or [values] }}, e.g. {{ aum = {{ mixer = ['fo_bi', 'bi_bi'] }} }}")
        return {model: dict(opts) for model, opts in value.items()}
    if key == "checkpoints":
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            raise UserInputError(f"{where}: checkpoints must be a table of model = \"path\"")
        return dict(value)
    expected = {"int": int, "float": (int, float), "str": str, "bool": bool}[str(kind)]
    if isinstance(value, bool) and expected is not bool:
        raise UserInputError(f"{where}: {key} must be {kind}, got {value!r}")
    if not isinstance(value, expected):
        raise UserInputError(f"{where}: {key} must be {kind}, got {value!r}")
    return float(value) if kind == "float" else value


def _build(cls, data: dict, where: str):
    valid = {f.name for f in dataclasses.fields(cls)} - {"source"}
    kwargs = {}
    for key, value in data.items():
        if key not in valid:
            raise _unknown_key_error(where, key, valid)
        if key in _SECTIONS and cls is SweepConfig:
            if not isinstance(value, dict):
                raise UserInputError(f"{where}: [{key}] must be a table")
            kwargs[key] = _build(_SECTIONS[key], value, f"{where} [{key}]")
        else:
            kwargs[key] = _coerce(cls, key, value, where)
    return cls(**kwargs)


def parse_set(assignment: str) -> tuple[list[str], Any]:
    """`steady.max_time_s=5` -> (['steady', 'max_time_s'], 5). Values are TOML, else a bare string."""
    if "=" not in assignment:
        raise UserInputError(f"--set {assignment!r}: expected key=value (e.g. --set tokens=[128,256])")
    key, raw = assignment.split("=", 1)
    key, raw = key.strip(), raw.strip()
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*", key):
        raise UserInputError(f"--set {assignment!r}: {key!r} is not a config key")
    if not raw:
        raise UserInputError(f"--set {assignment!r}: missing value after '='")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        if raw[0] in "[{\"'":
            raise UserInputError(f"--set {assignment!r}: {raw!r} is not a valid TOML value") from None
        value = raw  # a bare word: memory_cap=8GiB, device=cpu
    return key.split("."), value


ACCURACY_PREFIX = "accuracy"  # bench/configs/accuracy*.toml are `ssamba-bench accuracy` configs, not sweeps


def resolve_path(config: str, *, accuracy: bool = False) -> Path:
    """A path to a .toml file, or the name of a shipped config in bench/configs/: a sweep (`default`,
    `paper`, `ci`, ...) or, with `accuracy`, an accuracy run (`accuracy`, `accuracy_ci`)."""
    path = Path(config)
    if path.is_file():
        return path
    shipped = CONFIG_DIR / f"{config}.toml"
    if not path.suffix and shipped.is_file():
        if config.startswith(ACCURACY_PREFIX) != accuracy:
            verb = "sweep" if accuracy else "accuracy"
            raise UserInputError(f"{config!r} is {'a sweep' if accuracy else 'an accuracy'} config: run it with "
                                 f"`ssamba-bench {verb} {config}`")
        return shipped
    names = sorted(p.stem for p in CONFIG_DIR.glob("*.toml") if p.stem.startswith(ACCURACY_PREFIX) == accuracy)
    what = "accuracy config" if accuracy else "config file"
    raise UserInputError(f"no {what} {config!r}; give a path to a .toml file or one of: {', '.join(names)}")


def load_config(config: str | Path, overrides: list[str] = ()) -> SweepConfig:
    """Read a sweep file, apply `--set` overrides, and check every key and type."""
    path = resolve_path(str(config))
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise UserInputError(f"{path}: not valid TOML: {err}") from None
    for assignment in overrides:
        keys, value = parse_set(assignment)
        target = data
        for k in keys[:-1]:
            target = target.setdefault(k, {})
            if not isinstance(target, dict):
                raise UserInputError(f"--set {assignment!r}: {k!r} is not a table")
        target[keys[-1]] = value
        if keys[-1] in ("tokens", "frames") and len(keys) == 1:
            data.pop("frames" if keys[-1] == "tokens" else "tokens", None)  # the override replaces the axis
    data.setdefault("name", path.stem)
    cfg = _build(SweepConfig, data, str(path))
    cfg = dataclasses.replace(cfg, source=str(path))
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
        if d not in DTYPES:
            raise UserInputError(f"{where}: unknown dtype {d!r}; choose from {', '.join(sorted(set(DTYPES.values())))}")
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


def dtype_name(alias: str) -> str:
    return DTYPES[alias]


def describe_fields(cls=SweepConfig) -> list[tuple[str, str]]:
    """(key, help) for every key of a sweep file, for `sweep --help-config`."""
    rows = []
    for f in dataclasses.fields(cls):
        if f.name == "source":
            continue
        if f.name in _SECTIONS:
            rows += [(f"{f.name}.{k}", h) for k, h in describe_fields(_SECTIONS[f.name])]
        else:
            rows.append((f.name, f.metadata.get("help", "")))
    return rows
