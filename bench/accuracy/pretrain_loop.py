"""Masked-patch pretraining (models/pretrain.py) of one model on the unlabelled training audio of tasks.

The authors' recipe (bench/accuracy/recipe.py, `PretrainRecipe`) on 1 s clips: 98 frames at stride
16 is an 8 x 6 grid of 48 patches, of which `mask_patch_for(48)` = 38 are masked (the released
models' 400 of 512). The training splits of all given tasks are pooled, each normalised with its own
statistics (one pair per dataset, as the authors did); labels are never read. Losses and the
masked-patch accuracy are measured on held-out clips (the tasks' val splits, fixed masks) before
the first and after the last step.
"""

from __future__ import annotations

import time

import torch

from bench.accuracy.data import batches, features
from bench.accuracy.recipe import PretrainRecipe, lr_factor, make_optimizer, mask_patch_for
from models.pretrain import MaskedPatchPretrainer
from models.registry import create_model

EVAL_SEED = 1234  # masks of the held-out check: the same at the start and the end


def pretraining_data(tasks, recipe: PretrainRecipe, cache=None, small=False) -> tuple[torch.Tensor, torch.Tensor]:
    """(train (n, T, F), held-out (m, T, F)) pooled over `tasks`."""
    train, heldout = [], []
    g = torch.Generator().manual_seed(recipe.seed)
    for task in tasks:
        train.append(features(task, "train", cache, small, recipe.frames)[0])
        val = features(task, "val", cache, small, recipe.frames)[0]
        heldout.append(val[torch.randperm(len(val), generator=g)[:recipe.heldout_per_task]])
    return torch.cat(train), torch.cat(heldout)


@torch.no_grad()
def heldout_losses(pre: MaskedPatchPretrainer, x: torch.Tensor, batch: int) -> dict[str, float]:
    """Mean nce, mse and masked-patch accuracy on `x` with fixed masks (eval mode)."""
    was_training = pre.training
    pre.eval()
    g = torch.Generator().manual_seed(EVAL_SEED)
    sums = {"nce": 0.0, "mse": 0.0, "masked_acc": 0.0}
    for i in range(0, len(x), batch):
        xb = x[i:i + batch]
        nce, acc = pre.mpc(xb, generator=g)
        mse = pre.mpg(xb, generator=g)
        for k, v in (("nce", nce), ("mse", mse), ("masked_acc", acc)):
            sums[k] += float(v) * len(xb)
    pre.train(was_training)
    return {k: v / len(x) for k, v in sums.items()}


def pretrain(model_name: str, tasks, recipe: PretrainRecipe, *, cache=None, small=False, log=print
             ) -> tuple[MaskedPatchPretrainer, dict]:
    """Pretrain `model_name` from scratch; returns the pretrainer and a summary (losses at start/end)."""
    torch.manual_seed(recipe.seed)
    kwargs = dict(input_frames=recipe.frames, fstride=recipe.stride, tstride=recipe.stride, num_classes=0)
    if "ssast" not in model_name:
        kwargs["scan_impl"] = recipe.scan_impl
    model = create_model(model_name, **kwargs)
    mask_patch = mask_patch_for(model.n_tokens)
    pre = MaskedPatchPretrainer(model, mask_patch=mask_patch)
    train, heldout = pretraining_data(tasks, recipe, cache, small)
    log(f"pretrain {model_name}: {len(train)} clips of {', '.join(tasks)}, {model.n_tokens} patches, "
        f"mask_patch {mask_patch}, {recipe.steps} steps x batch {recipe.batch}, lr {recipe.lr}")
    start = heldout_losses(pre, heldout, recipe.batch)
    log(f"  held-out at start: nce {start['nce']:.3f}  mse {start['mse']:.4f}  masked-patch acc "
        f"{start['masked_acc']:.3f} (chance {1 / mask_patch:.3f})")
    opt = make_optimizer(pre.parameters(), recipe.lr, recipe.weight_decay)
    g = torch.Generator().manual_seed(recipe.seed)
    losses = []
    pre.train()
    t0 = time.perf_counter()
    for step, idx in enumerate(batches(len(train), recipe.batch, recipe.steps, g)):
        for group in opt.param_groups:
            group["lr"] = recipe.lr * lr_factor(step, recipe.steps, recipe.warmup_fraction, decay=False)
        out = pre(train[idx], generator=g)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()
        losses.append(float(out.loss.detach()))
        if (step + 1) % max(1, recipe.steps // 5) == 0:
            log(f"  step {step + 1}/{recipe.steps}: loss {sum(losses[-10:]) / len(losses[-10:]):.3f} "
                f"({time.perf_counter() - t0:.0f} s)")
    train_time = time.perf_counter() - t0
    end = heldout_losses(pre, heldout, recipe.batch)
    log(f"  held-out at end:   nce {end['nce']:.3f}  mse {end['mse']:.4f}  masked-patch acc "
        f"{end['masked_acc']:.3f}  ({train_time:.0f} s)")
    summary = {"model": model_name, "tasks": list(tasks), "clips": len(train), "heldout_clips": len(heldout),
               "n_patches": model.n_tokens, "mask_patch": mask_patch, "recipe_key": recipe.key(),
               "start": start, "end": end, "train_time_s": round(train_time, 2),
               "loss_first": losses[0] if losses else None, "loss_last10": sum(losses[-10:]) / max(1, len(losses[-10:])),
               "scan_impl": getattr(model, "scan_impl", None)}
    return pre, summary
