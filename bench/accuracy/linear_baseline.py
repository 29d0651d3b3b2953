"""A floor for the accuracy tasks: logistic regression on fbank statistics, no deep model.

Each clip becomes 256 numbers, the mean and the standard deviation over time of each of its 128
normalised mel bins (standardised with the training split's statistics); a multinomial logistic
regression (L2 1e-3, full-batch Adam, fixed steps, zero init: deterministic) is fitted on train and
scored on val / test (and, for kws, on the real digits with the kws statistics, as the fine-tuned
models are). It takes seconds on 2 cores.

Why it exists: it says how much of a task bag-of-spectrum features already solve, so a deep model
that stays below it after fine-tuning is limited by its optimisation budget or inductive bias, not by
the data. On kws, SSAST-tiny stays far below it for thousands of steps (0.077 at 1500, 0.200 at 3000
against this floor's 0.466; README, "Accuracy"), so there its budget, not the data, is the limit.

    python -m bench.accuracy.linear_baseline [--tasks kws events speakers] [--out table.md]
"""

from __future__ import annotations

import argparse
import sys
import time

import torch
import torch.nn.functional as F

from bench.accuracy.data import DIGITS_REAL, features
from bench.accuracy.finetune_loop import classification_metrics
from bench.accuracy.recipe import CLIP_FRAMES
from models.errors import UserInputError

STEPS, LR, L2 = 500, 1e-2, 1e-3


def clip_statistics(x: torch.Tensor) -> torch.Tensor:
    """(n, frames, mels) -> (n, 2 * mels): each mel bin's mean and standard deviation over time."""
    return torch.cat((x.mean(dim=1), x.std(dim=1)), dim=1)


def fit_logistic(features_train: torch.Tensor, labels: torch.Tensor, n_classes: int,
                 steps: int = STEPS, lr: float = LR, l2: float = L2) -> tuple[torch.Tensor, torch.Tensor]:
    """Weights (d, n_classes) and bias of an L2-regularised multinomial logistic regression."""
    w = torch.zeros(features_train.shape[1], n_classes, requires_grad=True)
    b = torch.zeros(n_classes, requires_grad=True)
    opt = torch.optim.Adam([w, b], lr=lr)
    for _ in range(steps):
        loss = F.cross_entropy(features_train @ w + b, labels) + l2 * (w ** 2).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return w.detach(), b.detach()


def evaluate_task(task: str, cache=None, small: bool = False, digits_real: bool = True) -> list[dict]:
    """Rows (task, split, accuracy, macro_f1, n, fit_s) of the baseline on one task."""
    x, y, meta = features(task, "train", cache, small, CLIP_FRAMES)
    train = clip_statistics(x)
    mu, sd = train.mean(0), train.std(0) + 1e-6
    t0 = time.perf_counter()
    w, b = fit_logistic((train - mu) / sd, y, len(meta["label_names"]))
    fit_s = time.perf_counter() - t0
    evals = {split: features(task, split, cache, small, CLIP_FRAMES, tuple(meta["stats"]))
             for split in ("val", "test")}
    if task == "kws" and digits_real and not small:
        evals[DIGITS_REAL] = features(DIGITS_REAL, "test", cache, small, CLIP_FRAMES, tuple(meta["stats"]))
    rows = []
    for split, (xe, ye, _) in evals.items():
        pred = (((clip_statistics(xe) - mu) / sd) @ w + b).argmax(-1)
        rows.append({"task": task, "split": split, **classification_metrics(pred, ye), "n": len(ye),
                     "classes": len(meta["label_names"]), "fit_s": fit_s})
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| task | split | accuracy | macro_f1 | chance | clips | fit time |", "|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['task']} | {r['split']} | {r['accuracy']:.3f} | {r['macro_f1']:.3f} | "
                     f"{1 / r['classes']:.3f} | {r['n']} | {r['fit_s']:.1f} s |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.accuracy.linear_baseline", description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", nargs="+", default=["kws", "events", "speakers"])
    parser.add_argument("--cache", default=None, help="dataset cache (default: $SSAMBA_BENCH_DATA or ~/.cache/...)")
    parser.add_argument("--small", action="store_true", help="the reduced test-size datasets")
    parser.add_argument("--out", default=None, help="also write the markdown table here")
    args = parser.parse_args(argv)
    try:
        rows = [r for task in args.tasks for r in evaluate_task(task, args.cache, args.small)]
    except UserInputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    text = table(rows)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
