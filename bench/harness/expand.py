"""From a sweep config to its cases, every one checked before anything runs.

`expand` resolves the models (registry names, families x sizes, "module:function" specs), builds
each on PyTorch's meta device (shapes and options checked, no memory, no initialisation cost), runs
the model contract check (models/contract.py), derives each token count's frames from the model's
own PatchGrid (models/tokenizer.py; nothing here recomputes token arithmetic), and checks devices
and checkpoints. A mistake is one UserInputError naming it.
"""

from __future__ import annotations

from itertools import product
from pathlib import Path

from bench.common.vocabulary import amp_name, dtype_name
from bench.harness.cases import Case, model_kwargs, run_order
from bench.harness.config import SweepConfig
from bench.harness.plugins import load_plugins, resolve_producer
from models.errors import UserInputError


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
    from models import list_models, registry
    from models.registry import get_builder

    registered = set(list_models())
    names: list[str] = []
    for entry in cfg.models:
        if ":" in entry:  # "package.module:function", a model from outside the repository
            candidates = [registry.import_model_spec(entry)]
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


def check_checkpoints(checkpoints: dict, names: list[str]) -> None:
    """Each `checkpoints` entry names a model of the sweep and a file that holds exactly that model."""
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
    from models.contract import check_model_contract

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
        check_model_contract(probe, name)  # on the meta device: instant
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
        for options, device, batch, dtype, attn, scan, protocol, amp in product(
                option_sets, cfg.device, cfg.batch, cfg.dtype, attn_values, scan_values, cfg.protocol, cfg.amp):
            for n_tokens, frames in points:
                cases.append(Case(model=name, family=probe.family, size=probe.size, n_tokens=n_tokens,
                                  frames=frames, batch=batch, dtype=dtype_name(dtype), device=device,
                                  attn_impl=attn, scan_impl=scan, protocol=protocol, options=options,
                                  amp=amp_name(amp)))
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
