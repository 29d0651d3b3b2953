"""Model registry: `register_model`, `create_model`, `list_models`, in the manner of timm's _registry.

A builder is a function returning an `AudioModel`, decorated with `@register_model`; its name is the
model's name (`ssamba_tiny`, `ssast_small`, ...). `create_model(name, **overrides)` passes keyword
overrides to the builder, dropping those that are None, so callers can forward optional CLI values.

Models that live outside this repository register in one of two ways, so nobody has to fork the suite:
  - a Python entry point in the group `ssamba_bench.models` (ENTRY_POINT_GROUP) of an installed
    package: either a module (`mypkg.models`), whose import registers its `@register_model`
    builders, or a builder (`mypkg.models:my_model`), registered under its attribute name unless its
    import already registered it. Entry points load lazily, once, on the first `list_models` /
    `get_builder` / `create_model`; one that fails to load is an error naming it, every time.
  - a `"package.module:function"` string (`import_model_spec`), e.g. as a `models` entry of a sweep
    config: the module is imported and `function` registered the same way. `get_builder` and
    `create_model` accept such a string wherever a name is expected.
Registration checks names only; `models.contract.check_model_contract` checks a built instance.
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib
import importlib.metadata
from typing import Callable

from models.errors import UserInputError

ENTRY_POINT_GROUP = "ssamba_bench.models"

_BUILDERS: dict[str, Callable] = {}
_entry_points_loaded = False
_entry_point_error: str | None = None


def register_model(fn: Callable, *, name: str | None = None) -> Callable:
    """Register `fn` under `name` (default: its own name). Registering a name twice is an error."""
    name = name or fn.__name__
    if name in _BUILDERS:
        raise ValueError(f"model {name!r} is already registered (by {_BUILDERS[name].__module__})")
    _BUILDERS[name] = fn
    return fn


def _adopt(fn: Callable, name: str) -> str:
    """The registered name of builder `fn`: the one its import registered it under, else `name`."""
    for registered, builder in _BUILDERS.items():
        if builder is fn:
            return registered
    register_model(fn, name=name)
    return name


BUILTIN_MODULES = ("models.ssast", "models.ssamba", "models.aum")  # register their models on import


def _load_entry_points() -> None:
    """Import the built-in model modules, then the `ssamba_bench.models` entry points of installed
    packages (once); built-ins first, so an entry point cannot take a built-in's name."""
    global _entry_points_loaded, _entry_point_error
    for module in BUILTIN_MODULES:
        importlib.import_module(module)  # cached after the first call
    if _entry_point_error is not None:
        raise UserInputError(_entry_point_error)
    if _entry_points_loaded:
        return
    _entry_points_loaded = True  # first: an entry point's module may itself call list_models
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            obj = ep.load()
            if ep.attr:  # "module:function": a builder
                if not callable(obj):
                    raise TypeError(f"{ep.value} is not callable ({type(obj).__name__}); name a model builder function")
                _adopt(obj, ep.attr.rsplit(".", 1)[-1])
        except Exception as e:  # noqa: BLE001 - any failure is reported with the entry point's name
            dist = getattr(getattr(ep, "dist", None), "name", None)
            origin = f" (installed by {dist})" if dist else ""
            _entry_point_error = (
                f"model entry point {ep.name!r} = {ep.value!r} in group {ENTRY_POINT_GROUP!r}{origin} "
                f"failed to load: {type(e).__name__}: {e}"
            )
            raise UserInputError(_entry_point_error) from e


def import_model_spec(spec: str) -> str:
    """Import `"package.module:function"` and return the model name `function` is registered under.

    Importing the module runs its `@register_model` decorators; a builder it did not register is
    registered under its attribute name (`function`). Calling this twice with one spec is harmless.
    """
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not all(part.isidentifier() for part in module_name.split(".")) \
            or not attr.isidentifier():
        raise UserInputError(f"model spec {spec!r} is not of the form 'package.module:function'")
    try:
        module = importlib.import_module(module_name)
    except Exception as e:  # noqa: BLE001 - a broken module is the user's to fix: say which and why
        hint = " (is the package installed, or its folder on PYTHONPATH?)" if isinstance(e, ModuleNotFoundError) else ""
        raise UserInputError(
            f"model spec {spec!r}: importing {module_name!r} failed: {type(e).__name__}: {e}{hint}"
        ) from e
    fn = getattr(module, attr, None)
    if fn is None:
        raise UserInputError(f"model spec {spec!r}: module {module_name!r} has no attribute {attr!r}")
    if not callable(fn):
        raise UserInputError(f"model spec {spec!r}: {attr!r} is not callable ({type(fn).__name__}); "
                             f"name a model builder function")
    try:
        return _adopt(fn, attr)
    except ValueError as e:
        raise UserInputError(f"model spec {spec!r}: {e}") from e


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching a shell-style pattern, sorted."""
    _load_entry_points()
    return sorted(n for n in _BUILDERS if fnmatch.fnmatch(n, pattern))


def get_builder(name: str) -> Callable:
    """The builder registered as `name`; a `"module:function"` spec is imported and registered first."""
    _load_entry_points()
    if ":" in name:
        name = import_model_spec(name)
    if name not in _BUILDERS:
        close = difflib.get_close_matches(name, _BUILDERS, n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise UserInputError(
            f"unknown model {name!r}{hint} (registered: {', '.join(list_models())})"
        )
    return _BUILDERS[name]


def create_model(name: str, **overrides):
    """Build a registered model; None-valued overrides are dropped (timm's convention)."""
    kwargs = {k: v for k, v in overrides.items() if v is not None}
    return get_builder(name)(**kwargs)
