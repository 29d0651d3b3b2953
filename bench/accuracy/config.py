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
    [pretrain]                            PretrainRecipe fields (bench/accuracy/recipe.py)
    [finetune]                            FinetuneRecipe fields
    [task_steps]                          task -> fine-tuning steps for that task (every model alike)
An unknown key is a UserInputError naming it (with a suggestion).
"""

from __future__ import annotations

import dataclasses
import difflib
import tomllib
from dataclasses import dataclass, field

from bench.accuracy.recipe import FinetuneRecipe, PretrainRecipe
from bench.config import resolve_path
from bench.data import check_task
from models.errors import UserInputError

FAMILIES = ("ssast", "ssamba", "aum")
INITS = ("pretrained", "scratch")


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
    pretrain: PretrainRecipe = field(default_factory=PretrainRecipe)
    finetune: FinetuneRecipe = field(default_factory=FinetuneRecipe)
    task_steps: dict = field(default_factory=dict)
    source: str = ""

    def finetune_recipe(self, task: str) -> FinetuneRecipe:
        steps = self.task_steps.get(task)
        return dataclasses.replace(self.finetune, steps=steps) if steps else self.finetune

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def _unknown(where: str, key: str, valid) -> UserInputError:
    close = difflib.get_close_matches(key, list(valid), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return UserInputError(f"{where}: unknown key {key!r}{hint}; valid keys: {', '.join(sorted(valid))}")


def _recipe(cls, data, where: str):
    if not isinstance(data, dict):
        raise UserInputError(f"{where} must be a table")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    data = dict(data)
    for key, value in data.items():
        if key not in fields:
            raise _unknown(where, key, fields)
        expected = type(fields[key].default)
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            data[key] = value = float(value)
        if not isinstance(value, expected) or (isinstance(value, bool) and expected is not bool):
            raise UserInputError(f"{where}: {key} must be a {expected.__name__}, got {value!r}")
    recipe = cls(**data)
    for key in ("steps", "batch"):
        if getattr(recipe, key) < 1:
            raise UserInputError(f"{where}.{key} must be >= 1, got {getattr(recipe, key)}")
    return recipe


def load_config(config: str, overrides: dict | None = None) -> AccuracyConfig:
    path = resolve_path(config, accuracy=True)
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise UserInputError(f"{path}: not valid TOML: {err}") from None
    data.update(overrides or {})
    return parse_config(data, str(path))


def parse_config(data: dict, where: str = "accuracy config") -> AccuracyConfig:
    valid = {f.name for f in dataclasses.fields(AccuracyConfig)} - {"source"}
    for key in data:
        if key not in valid:
            raise _unknown(where, key, valid)
    data = dict(data)
    for key in ("models", "tasks", "inits", "pretrain_tasks"):
        if key in data:
            value = data[key]
            value = [value] if isinstance(value, str) else value
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise UserInputError(f"{where}: {key} must be a list of names, got {data[key]!r}")
            data[key] = tuple(value)
    for m in data.get("models", ()):
        if m not in FAMILIES:
            close = difflib.get_close_matches(m, FAMILIES, n=1)
            raise UserInputError(f"{where}: unknown model family {m!r}" + (f"; did you mean {close[0]!r}?" if close else "")
                                 + f" (families: {', '.join(FAMILIES)})")
    for i in data.get("inits", ()):
        if i not in INITS:
            raise UserInputError(f"{where}: unknown init {i!r}; choose from {', '.join(INITS)}")
    for t in (*data.get("tasks", ()), *data.get("pretrain_tasks", ())):
        check_task(t)
        if t == "digits-real":
            raise UserInputError(f"{where}: digits-real is a test-only set; it is evaluated with the kws models "
                                 "(digits_real = true), not trained on")
    if data.get("size", "tiny") not in ("tiny", "small", "base", "test"):
        raise UserInputError(f"{where}: size must be tiny, small, base or test, got {data['size']!r}")
    data["pretrain"] = _recipe(PretrainRecipe, data.get("pretrain", {}), f"{where} [pretrain]")
    data["finetune"] = _recipe(FinetuneRecipe, data.get("finetune", {}), f"{where} [finetune]")
    task_steps = data.get("task_steps", {})
    if not isinstance(task_steps, dict):
        raise UserInputError(f"{where}: task_steps must be a table of task = steps")
    for t, s in task_steps.items():
        check_task(t)
        if not isinstance(s, int) or isinstance(s, bool) or s < 1:
            raise UserInputError(f"{where}: task_steps.{t} must be a positive integer, got {s!r}")
    for key, kind in (("threads", int), ("digits_real", bool), ("small", bool), ("name", str), ("cache", str),
                      ("description", str), ("size", str)):
        if key in data and not isinstance(data[key], kind):
            raise UserInputError(f"{where}: {key} must be a {kind.__name__}, got {data[key]!r}")
    cfg = AccuracyConfig(**data, source=where)
    if not cfg.pretrain_tasks:
        cfg = dataclasses.replace(cfg, pretrain_tasks=cfg.tasks)
    return cfg
