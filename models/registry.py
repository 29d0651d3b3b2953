"""Model registry: `register_model`, `create_model`, `list_models`, in the manner of timm's _registry.

A builder is a function returning an `AudioModel`, decorated with `@register_model`; its name is the
model's name (`ssamba_tiny`, `ssast_small`, ...). `create_model(name, **overrides)` passes keyword
overrides to the builder, dropping those that are None, so callers can forward optional CLI values.
"""

from __future__ import annotations

import difflib
import fnmatch
from typing import Callable

from models.errors import UserInputError

_BUILDERS: dict[str, Callable] = {}


def register_model(fn: Callable) -> Callable:
    """Register `fn` under its own name. Registering a name twice is an error."""
    name = fn.__name__
    if name in _BUILDERS:
        raise ValueError(f"model {name!r} is already registered (by {_BUILDERS[name].__module__})")
    _BUILDERS[name] = fn
    return fn


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching a shell-style pattern, sorted."""
    return sorted(n for n in _BUILDERS if fnmatch.fnmatch(n, pattern))


def get_builder(name: str) -> Callable:
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
