"""Accuracy run configuration: a small TOML file (bench/configs/accuracy*.toml), every key checked.

    name, description
    models = ["ssast", "ssamba", "aum"]   model families (or test sizes via size = "test")
    size = "tiny"
    tasks = ["kws", "speakers", "events"] fine-tuning tasks, run in this order
    inits = ["pretrained", "scratch"]
    pretrain_tasks = [...]                whose unlabelled training audio pretraining uses (default: tasks)
    digits_real = true                    also evaluate kws models on the real asterisk digits
    small = false                         use the reduced `--small` dataset builds (tests)
    threads = 2                           torch intra-op threads
    cache = ""                            dataset cache (default: $SSAMBA_BENCH_DATA or ~/.cache/...)
    purpose = "result"                    or "pipeline_check": a budget that only proves the pipeline runs
                                          end to end; recorded in every row, and the claims report then
                                          labels its numbers so and shows the committed reference table
    [pretrain]                            PretrainRecipe fields (bench/accuracy/recipe.py)
    [finetune]                            FinetuneRecipe fields
    [task_steps]                          task -> fine-tuning steps for that task (every model alike)
Keys and types are checked by the suite's one config validator (bench/common/config_fields.py, the
same as for sweep configs): an unknown key is a UserInputError naming it (with a suggestion).
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field

from bench.accuracy.recipe import FinetuneRecipe, PretrainRecipe
from bench.common.config_fields import build, read_toml, resolve_path
from bench.common.vocabulary import ACCURACY_PURPOSES
from bench.data import check_task
from models.errors import UserInputError

FAMILIES = ("ssast", "ssamba", "aum")
INITS = ("pretrained", "scratch")
SIZES = ("tiny", "small", "base", "test")


def _task_steps(value, key: str, where: str) -> dict:
    if not isinstance(value, dict):
        raise UserInputError(f"{where}: task_steps must be a table of task = steps")
    for t, s in value.items():
        check_task(t)
        if not isinstance(s, int) or isinstance(s, bool) or s < 1:
            raise UserInputError(f"{where}: task_steps.{t} must be a positive integer, got {s!r}")
    return dict(value)


@dataclass(frozen=True)
class AccuracyConfig:
    name: str = "accuracy"
    description: str = ""
    models: tuple[str, ...] = ("ssast", "ssamba")
    size: str = "tiny"
    tasks: tuple[str, ...] = ("kws",)
    inits: tuple[str, ...] = INITS
    pretrain_tasks: tuple[str, ...] = ()
    digits_real: bool = True
    small: bool = False
    threads: int = 2
    cache: str = ""
    purpose: str = "result"
    pretrain: PretrainRecipe = field(default_factory=PretrainRecipe)
    finetune: FinetuneRecipe = field(default_factory=FinetuneRecipe)
    task_steps: dict = field(default_factory=dict, metadata={"parse": _task_steps})
    source: str = ""

    def finetune_recipe(self, task: str) -> FinetuneRecipe:
        steps = self.task_steps.get(task)
        return dataclasses.replace(self.finetune, steps=steps) if steps else self.finetune

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def load_config(config: str, overrides: dict | None = None) -> AccuracyConfig:
    path = resolve_path(config, accuracy=True)
    data = read_toml(path)
    data.update(overrides or {})
    return parse_config(data, str(path))


def parse_config(data: dict, where: str = "accuracy config") -> AccuracyConfig:
    """Keys and types by the shared validator; then what only an accuracy config means."""
    cfg = build(AccuracyConfig, data, where)
    for m in cfg.models:
        if m not in FAMILIES:
            close = difflib.get_close_matches(m, FAMILIES, n=1)
            raise UserInputError(f"{where}: unknown model family {m!r}" + (f"; did you mean {close[0]!r}?" if close else "")
                                 + f" (families: {', '.join(FAMILIES)})")
    for i in cfg.inits:
        if i not in INITS:
            raise UserInputError(f"{where}: unknown init {i!r}; choose from {', '.join(INITS)}")
    for t in (*cfg.tasks, *cfg.pretrain_tasks):
        check_task(t)
        if t == "digits-real":
            raise UserInputError(f"{where}: digits-real is a test-only set; it is evaluated with the kws models "
                                 "(digits_real = true), not trained on")
    if cfg.purpose not in ACCURACY_PURPOSES:
        raise UserInputError(f"{where}: purpose must be one of {', '.join(ACCURACY_PURPOSES)}, got {cfg.purpose!r}")
    if cfg.size not in SIZES:
        raise UserInputError(f"{where}: size must be tiny, small, base or test, got {cfg.size!r}")
    for section, recipe in (("pretrain", cfg.pretrain), ("finetune", cfg.finetune)):
        for key in ("steps", "batch"):
            if getattr(recipe, key) < 1:
                raise UserInputError(f"{where} [{section}].{key} must be >= 1, got {getattr(recipe, key)}")
    cfg = dataclasses.replace(cfg, source=where)
    if not cfg.pretrain_tasks:
        cfg = dataclasses.replace(cfg, pretrain_tasks=cfg.tasks)
    return cfg
