"""Supervised fine-tuning of one classification model and its evaluation (accuracy, macro-F1).

The recipe is `bench.accuracy.recipe.FinetuneRecipe`: Adam (0.95, 0.999), warm-up + cosine, per-clip
SpecAugment, cross-entropy, a fixed number of steps; the weights after the last step are evaluated.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from torch import nn

from bench.accuracy.data import batches
from bench.accuracy.recipe import FinetuneRecipe, finetune_param_groups, lr_factor, make_optimizer, spec_augment


def classification_metrics(pred: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    """accuracy and macro-F1 (the unweighted mean F1 over the classes present in targets or
    predictions, as sklearn's average='macro')."""
    accuracy = float((pred == target).float().mean())
    f1s = []
    for c in torch.unique(torch.cat((pred, target))):
        tp = int(((pred == c) & (target == c)).sum())
        fp = int(((pred == c) & (target != c)).sum())
        fn = int(((pred != c) & (target == c)).sum())
        f1s.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    return {"accuracy": accuracy, "macro_f1": sum(f1s) / len(f1s)}


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch: int) -> torch.Tensor:
    model.eval()
    return torch.cat([model(x[i:i + batch]).argmax(-1) for i in range(0, len(x), batch)])


def train_steps(model: nn.Module, x: torch.Tensor, y: torch.Tensor, recipe: FinetuneRecipe, log=None) -> list[float]:
    """`recipe.steps` optimiser steps on (x, y); returns the loss of every step."""
    opt = make_optimizer(finetune_param_groups(model, recipe.lr, recipe.head_lr), recipe.lr, recipe.weight_decay)
    g = torch.Generator().manual_seed(recipe.seed)
    losses: list[float] = []
    model.train()
    t0 = time.perf_counter()
    for step, idx in enumerate(batches(len(x), recipe.batch, recipe.steps, g)):
        for group in opt.param_groups:
            group["lr"] = group["peak_lr"] * lr_factor(step, recipe.steps, recipe.warmup_fraction, decay=True)
        xb = spec_augment(x[idx], recipe.freqm, recipe.timem, g)
        loss = F.cross_entropy(model(xb), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        if log and (step + 1) % max(1, recipe.steps // 5) == 0:
            log(f"    step {step + 1}/{recipe.steps}: loss {sum(losses[-10:]) / len(losses[-10:]):.3f} "
                f"({time.perf_counter() - t0:.0f} s)")
    return losses


def finetune_and_evaluate(model: nn.Module, train: tuple[torch.Tensor, torch.Tensor],
                          evals: dict[str, tuple[torch.Tensor, torch.Tensor]], recipe: FinetuneRecipe,
                          log=None) -> dict:
    """Train on `train`, then evaluate the last weights on each of `evals` (name -> (x, y))."""
    t0 = time.perf_counter()
    losses = train_steps(model, *train, recipe, log=log)
    train_time = time.perf_counter() - t0
    t1 = time.perf_counter()
    results = {}
    for name, (x, y) in evals.items():
        results[name] = {**classification_metrics(predict(model, x, recipe.eval_batch), y), "n": len(y)}
    return {"losses": losses, "train_time_s": train_time, "eval_time_s": time.perf_counter() - t1, "eval": results}
