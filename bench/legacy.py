"""Module names from before the redesign of bench/ (flat modules), kept importable for what was saved.

Two kinds of saved artefact name bench modules: run.json files record a sweep's `extra_metrics` as
`bench.estimate:case_metrics` (still a real name: bench/estimate/__init__.py), and submitit pickles
a queued cluster job by reference: its function as `bench.cluster.run_job`, its cases as
`bench.sweep.Case`, its settings as `bench.runner.RunSettings` with `bench.config.SteadyConfig` /
`PaperConfig` inside. A job submitted with `--no-wait` before an upgrade is unpickled by the new
code when it starts, so those names must resolve. This finder maps each old module name to the
module that now holds what was pickled from it; nothing else imports the old names.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

OLD_MODULES = {
    "bench.cluster": "bench.harness.executors.submitit",  # run_job
    "bench.sweep": "bench.harness.cases",  # Case
    "bench.runner": "bench.harness.settings",  # RunSettings
    "bench.config": "bench.measure.protocol_settings",  # SteadyConfig, PaperConfig
}


class _Alias(importlib.abc.Loader):
    def __init__(self, target: str):
        self.target = target

    def create_module(self, spec):
        return None  # a fresh module of the old name

    def exec_module(self, module) -> None:
        # The same objects under the old name (their __module__ stays the new one, so anything
        # pickled from now on names the new modules).
        target = importlib.import_module(self.target)
        module.__dict__.update({k: v for k, v in vars(target).items() if not k.startswith("__")})


class OldModuleFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name in OLD_MODULES:
            return importlib.util.spec_from_loader(name, _Alias(OLD_MODULES[name]))
        return None


def install() -> None:
    if not any(isinstance(f, OldModuleFinder) for f in sys.meta_path):
        sys.meta_path.append(OldModuleFinder())
