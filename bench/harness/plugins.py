"""Loading what a sweep names from outside the suite: plugin modules and files, model specs, metric producers.

One place for the one concept, used by the parent (before expanding a config) and by every
measuring child and cluster job (which import the same plugins again, in their own process):

    plugins = ["my_pkg.models", "extra/my_models.py"]   modules or files whose import registers models
    models = ["my_pkg.conf:conformer_tiny"]             a model builder by "module:function"
    extra_metrics = ["my_pkg.metrics:energy"]           fn(model, inputs, case) -> metric dicts per case

A plugin that fails to import, or a producer that does not exist, is one UserInputError naming it.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path

from models.errors import UserInputError


def absolute_plugin(plugin: str) -> str:
    """A plugin file as an absolute path (children and cluster jobs may start elsewhere); names as given."""
    return str(Path(plugin).resolve()) if plugin.endswith(".py") else plugin


def _import_file(path: Path) -> None:
    name = "ssamba_bench_plugin_" + "".join(c if c.isalnum() else "_" for c in str(path))
    if name in sys.modules:
        return
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)


def load_plugins(plugins) -> None:
    """Import plugin modules (names), files (paths ending .py) or model specs ("module:function"),
    once per process."""
    from models import registry

    for plugin in plugins:
        if ":" in plugin:
            registry.import_model_spec(plugin)
            continue
        try:
            if plugin.endswith(".py"):
                path = Path(plugin).resolve()
                if not path.is_file():
                    raise UserInputError(f"plugin file {plugin!r} not found")
                _import_file(path)
            else:
                importlib.import_module(plugin)
        except UserInputError:
            raise
        except Exception as err:
            raise UserInputError(f"plugin {plugin!r} failed to import: {type(err).__name__}: {err}") from None


def resolve_producer(spec: str) -> Callable:
    """The extra-metric producer named "module:function"."""
    module_name, _, attr = spec.partition(":")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as err:
        raise UserInputError(f"extra metric producer {spec!r} not found: {err}") from None
