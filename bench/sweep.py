"""Expands a sweep configuration into cases, and checks every case can be built before anything runs.

A case is one point of the sweep: model, n_tokens (with its frames), batch, dtype, device, attn_impl,
scan_impl, protocol (DESIGN.md, "Result schema"). Its `case_id` is a hash of those parameters alone,
so the same case has the same id in every run and on every machine: runs resume, merge and compare
case by case.

Cases are grouped twice:
  - a *unit* is everything one child process runs: one model on one device, all its variants, each
    variant walking its token axis upward (the harness runs one child per unit);
  - a *series* is one variant of a unit (everything but n_tokens): an out-of-memory at some token
    count means the larger token counts of that series are recorded as skipped_after_oom.
Token arithmetic is the tokenizer's (`model.grid`, a models.tokenizer.PatchGrid); nothing here
recomputes it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from itertools import product

from bench.config import SweepConfig, dtype_name
from models.errors import UserInputError

CASE_ID_FIELDS = ("model", "n_tokens", "frames", "batch", "dtype", "device", "attn_impl", "scan_impl", "protocol")


@dataclass(frozen=True)
class Case:
    """One point of a sweep. `scan_impl` is the *requested* backend ("auto"); rows also record the
    concrete one the model resolved it to."""

    model: str
    family: str
    size: str
    n_tokens: int
    frames: int
    batch: int
    dtype: str
    device: str
    attn_impl: str | None
    scan_impl: str | None
    protocol: str
    options: tuple[tuple[str, object], ...] = ()  # model constructor options (config `model_options`), sorted

    @property
    def case_id(self) -> str:
        """Stable 16-hex-digit hash of the case parameters (not of the run, the machine or the settings).
        Options join the hash only when there are some, so cases without options keep their ids."""
        fields = {f: getattr(self, f) for f in CASE_ID_FIELDS}
        if self.options:
            fields["options"] = [list(kv) for kv in self.options]
        key = json.dumps(fields, sort_keys=True, separators=(",", ":"))
        return hashlib.sha1(key.encode()).hexdigest()[:16]

    @property
    def options_label(self) -> str | None:
        """'mixer=bi_bi' (the `model_options` column), None without options."""
        return ",".join(f"{k}={v}" for k, v in self.options) or None

    @property
    def unit_key(self) -> tuple:
        """One child process per (model, device)."""
        return (self.model, self.device)

    @property
    def series_key(self) -> tuple:
        """Everything but the token count: an OOM skips the larger token counts of the same series."""
        return (self.model, self.options, self.batch, self.dtype, self.device, self.attn_impl, self.scan_impl,
                self.protocol)

    @property
    def variant(self) -> str:
        """Short label of the series within its model: 'eager', 'sdpa b4 paper', ..."""
        parts = [p for p in (self.options_label, self.attn_impl, self.scan_impl) if p]
        if self.batch != 1:
            parts.append(f"b{self.batch}")
        if self.dtype != "float32":
            parts.append(self.dtype)
        if self.protocol != "steady":
            parts.append(self.protocol)
        return " ".join(parts)

    @property
    def label(self) -> str:
        return f"{self.model} {self.variant} {self.n_tokens} tok".replace("  ", " ")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @property
    def model_kwargs(self) -> dict:
        """What create_model gets besides input_frames: the options and the kernel choices."""
        return model_kwargs(self.options, self.attn_impl, self.scan_impl)


def model_kwargs(options, attn_impl: str | None, scan_impl: str | None) -> dict:
    """create_model keyword arguments of a case: its model options, and the kernels the model has."""
    kernels = {k: v for k, v in (("attn_impl", attn_impl), ("scan_impl", scan_impl)) if v is not None}
    return {**dict(options), **kernels}


def option_combinations(cfg: SweepConfig, name: str, family: str) -> list[tuple[tuple[str, object], ...]]:
    """Every combination of the `model_options` that apply to `name` (family entries first, the
    model's own entries override them); [()] when none apply."""
    merged = {**cfg.model_options.get(family, {}), **cfg.model_options.get(name, {})}
    keys = sorted(merged)
    values = [v if isinstance(v, list) else [v] for v in (merged[k] for k in keys)]
    return [tuple(zip(keys, combo)) for combo in product(*values)]


def _meta_model(name: str, **options):
    """Build on the meta device: shapes and options checked, no memory, no init cost."""
    import torch

    from models import create_model

    with torch.device("meta"):
        return create_model(name, **options)


def resolve_models(cfg: SweepConfig) -> list[str]:
    """`models` entries: registry names as they are; families combined with every entry of `sizes`."""
    from models import list_models
    from models.registry import get_builder

    registered = set(list_models())
    names: list[str] = []
    for entry in cfg.models:
        if ":" in entry:  # "package.module:function", a model from outside the repository
            candidates = [import_spec(entry)]
        elif entry in registered:
            candidates = [entry]
        elif list_models(f"{entry}_*"):
            if not cfg.sizes:
                raise UserInputError(f"models entry {entry!r} is a family: give `sizes` (e.g. sizes = ['tiny'])")
            candidates = [f"{entry}_{size}" for size in cfg.sizes]
        else:
            candidates = [entry]
        for name in candidates:
            get_builder(name)  # unknown names raise with "did you mean"
            if name not in names:
                names.append(name)
    return names


def import_spec(spec: str) -> str:
    """Register the model of a "module:function" spec; returns its registry name."""
    from models import registry

    if not hasattr(registry, "import_model_spec"):
        raise UserInputError(f"model spec {spec!r}: this version of models.registry cannot import specs")
    return registry.import_model_spec(spec)


def check_contract(model, name: str) -> None:
    """The models package's contract check (models/contract.py), where that module exists."""
    try:
        from models.contract import check_model_contract
    except ImportError:  # an older models package without it: the measurement will say what is wrong
        return
    check_model_contract(model, name)


def check_checkpoints(checkpoints: dict, names: list[str]) -> None:
    """Each `checkpoints` entry names a model of the sweep and a file that holds exactly that model."""
    from pathlib import Path

    from models.checkpoints import inspect_checkpoint

    for model, path in checkpoints.items():
        if model not in names:
            raise UserInputError(f"checkpoints: {model!r} is not a model of this sweep ({', '.join(names)})")
        if not Path(path).is_file():
            raise UserInputError(f"checkpoints: {model} -> {path}: no such file")
        info = inspect_checkpoint(path)
        if info.model_name != model:
            raise UserInputError(f"checkpoints: {path} holds {info.model_name}, not {model}")
        if not info.ok:
            raise UserInputError(f"checkpoints: {path} does not load strictly into {model}:\n{info.summary()}")


def check_device(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UserInputError(f"device {device!r} requested but CUDA is not available on this machine "
                                 f"(torch {torch.__version__}); use device = 'cpu'")
        index = int(device.split(":")[1]) if ":" in device else 0
        if index >= torch.cuda.device_count():
            raise UserInputError(f"device {device!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")


def expand(cfg: SweepConfig, *, check_devices: bool = True) -> list[Case]:
    """Every case of the sweep, validated (models, options, token counts, devices), in run order:
    by unit, then series, then ascending token count. `check_devices=False` skips the check that the
    devices exist here (a Slurm login node without the GPUs its jobs will get)."""
    from bench.runner import load_plugins, resolve_producer

    load_plugins(cfg.plugins)
    for producer in cfg.extra_metrics:
        resolve_producer(producer)
    for device in cfg.device if check_devices else ():
        check_device(device)
    cases: list[Case] = []
    names = resolve_models(cfg)
    check_checkpoints(cfg.checkpoints, names)
    for name in names:
        probe = _meta_model(name)
        check_contract(probe, name)  # on the meta device: instant
        attn_values = list(cfg.attn_impl) if probe.attn_impl is not None else [None]
        scan_values = list(cfg.scan_impl) if probe.scan_impl is not None else [None]
        option_sets = option_combinations(cfg, name, probe.family)
        for options, attn, scan in product(option_sets, attn_values, scan_values):
            _meta_model(name, **model_kwargs(options, attn, scan))  # bad names or values fail before any run
        grid = probe.grid
        points = []  # (n_tokens, frames), token arithmetic from the model's own PatchGrid
        if cfg.tokens:
            for t in cfg.tokens:
                frames = grid.frames_for_tokens(t)
                points.append((grid.n_tokens(frames), frames))
        else:
            for frames in cfg.frames:
                points.append((grid.n_tokens(frames), frames))
        limit = min((v for k, v in cfg.max_tokens.items() if k in (name, probe.family)), default=None)
        points = sorted({p for p in points if limit is None or p[0] <= limit})
        for options, device, batch, dtype, attn, scan, protocol in product(
                option_sets, cfg.device, cfg.batch, cfg.dtype, attn_values, scan_values, cfg.protocol):
            for n_tokens, frames in points:
                cases.append(Case(model=name, family=probe.family, size=probe.size, n_tokens=n_tokens,
                                  frames=frames, batch=batch, dtype=dtype_name(dtype), device=device,
                                  attn_impl=attn, scan_impl=scan, protocol=protocol, options=options))
    unknown_options = set(cfg.model_options) - {c.model for c in cases} - {c.family for c in cases}
    if unknown_options:
        raise UserInputError(f"model_options names {', '.join(sorted(unknown_options))}, "
                             f"which is not a model or family of this sweep")
    unknown_limits = set(cfg.max_tokens) - {c.model for c in cases} - {c.family for c in cases}
    if unknown_limits:
        raise UserInputError(f"max_tokens names {', '.join(sorted(unknown_limits))}, "
                             f"which is not a model or family of this sweep")
    seen: dict[str, Case] = {}
    for case in cases:
        seen.setdefault(case.case_id, case)
    return sorted(seen.values(), key=run_order)


def run_order(case: Case) -> tuple:
    return (case.unit_key, tuple("" if v is None else str(v) for v in case.series_key), case.n_tokens, case.frames)


def group_units(cases: list[Case]) -> list[list[Case]]:
    """Cases grouped by unit (one child each), order kept; within a unit, by series then tokens."""
    units: dict[tuple, list[Case]] = {}
    for case in cases:
        units.setdefault(case.unit_key, []).append(case)
    return [sorted(u, key=run_order) for u in units.values()]
