"""Accuracy results in the suite's tidy schema (bench/store/schema.py): one fine-tuning run = one case.

A case is (model, task, init, the pretraining that init came from, the fine-tuning recipe, dataset
size). Its `case_id` hashes exactly those, so the same case has the same id in every run and a
resumed run skips it. Rows, all with protocol "finetune" and the columns task, init ("pretrained" |
"scratch"), train_steps, n_classes (chance = 1 / n_classes) and purpose (result | pipeline_check,
the config's `purpose`, not part of the case id):
    status                       one, as every case
    accuracy, macro_f1           stat "value", unit "fraction", one per split (column `split`): val and
                                 test of the task, and for a kws model "digits-real" (the real
                                 asterisk recordings, out of domain: never average it with the rest)
    train_time_s, eval_time_s    stat "value", unit "s" (wall time of the training loop / evaluation)
    train_loss                   stat "mean", unit "nats": mean cross-entropy of the last 10 steps
The model columns (family, size, params, n_tokens, frames, batch, scan_impl, ...) are filled like a
benchmark row's, so `bench.store.load_runs([sweep_dir, accuracy_dir])` puts a model's latency and
accuracy side by side.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from bench.accuracy.recipe import FinetuneRecipe
from bench.store.schema import Metric, case_rows

PROTOCOL = "finetune"


@dataclass(frozen=True)
class FinetuneCase:
    model: str  # registry name, e.g. ssamba_tiny
    family: str
    size: str
    task: str
    init: str  # "pretrained" | "scratch"
    init_key: str  # what the pretrained weights are: the pretraining recipe key or the file's sha256
    recipe: FinetuneRecipe
    small: bool = False
    n_tokens: int | None = None
    frames: int | None = None
    dtype: str = "float32"
    device: str = "cpu"
    attn_impl: str | None = None
    protocol: str = PROTOCOL
    purpose: str = "result"  # or "pipeline_check" (the config's `purpose`); not part of the case id

    @property
    def batch(self) -> int:
        return self.recipe.batch

    @property
    def scan_impl(self) -> str | None:
        return None if self.family == "ssast" else self.recipe.scan_impl

    @property
    def case_id(self) -> str:
        key = {"model": self.model, "task": self.task, "init": self.init, "init_key": self.init_key,
               "recipe": self.recipe.key(), "small": self.small, "dtype": self.dtype, "device": self.device,
               "protocol": self.protocol}
        return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]

    def label(self) -> str:
        return f"{self.model} {self.task} {self.init}"


def result_rows(case: FinetuneCase, result: dict | None, *, run_id: str, env: dict, info: dict,
                error: str | None = None, n_classes: int | None = None) -> list[dict]:
    """The rows of one finished (or failed: `result` None, `error` set) fine-tuning case; `n_classes`,
    the classes its classifier chooses from, goes into every row (chance = 1 / n_classes)."""
    metrics = []
    if result is not None:
        for split, m in result["eval"].items():
            for name in ("accuracy", "macro_f1"):
                metrics.append(Metric(name, "value", m[name], "fraction", n_samples=m["n"], method="last-step weights",
                                      split=split))
        metrics.append(Metric("train_time_s", "value", result["train_time_s"], "s", method="perf_counter"))
        metrics.append(Metric("eval_time_s", "value", result["eval_time_s"], "s", method="perf_counter"))
        last = result["losses"][-10:]
        metrics.append(Metric("train_loss", "mean", sum(last) / len(last), "nats", n_samples=len(last)))
    rows = case_rows(case, run_id=run_id, env=env, status="ok" if error is None else "error", metrics=metrics,
                     error=error, info=info)
    for row in rows:
        row.update(task=case.task, init=case.init, train_steps=case.recipe.steps, n_classes=n_classes,
                   purpose=case.purpose)
    return rows
