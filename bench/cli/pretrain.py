"""Masked-patch pretraining of one model on the unlabelled training audio of the accuracy tasks.

  ssamba-bench pretrain --model ssamba --size tiny [--tasks kws,speakers,events] --steps N --out ckpt.pth

The authors' recipe (bench/accuracy/recipe.py): joint InfoNCE + 10 x MSE on cluster-masked 16x16
patches of 1 s clips (98 frames, stride 16: 48 patches, 38 masked: the released 400 of 512 scaled),
Adam lr 1e-4, betas (0.95, 0.999), weight decay 5e-7, linear warm-up over 10% of the steps, fixed
seed. Prints nce / mse / masked-patch accuracy on held-out (val) clips at the start and the end.
SSAST / SSAMBA checkpoints are written in the authors' layout (load_pretrained reads them strictly);
AuM's in the suite's format. A JSON log lands next to the checkpoint (ckpt.json).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch

from bench.accuracy.checkpoint import registry_name, save_pretrained
from bench.accuracy.pretrain_loop import pretrain
from bench.accuracy.recipe import PretrainRecipe
from bench.cli.training_args import add_training_arguments, check_training_arguments
from bench.data import check_task, read_manifest


def add_arguments(parser) -> None:
    d = PretrainRecipe()
    add_training_arguments(parser, d)
    parser.add_argument("--tasks", default="kws,speakers,events", help="comma-separated tasks whose train audio is used")
    parser.add_argument("--out", required=True, metavar="CKPT", help="checkpoint file to write (.pth)")


def run(args) -> int:
    check_training_arguments(args)
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    for task in tasks:  # every name first, then whether each is built
        check_task(task)
    for task in tasks:
        read_manifest(task, cache=args.cache, small=args.small)
    torch.set_num_threads(args.threads)
    recipe = dataclasses.replace(PretrainRecipe(), steps=args.steps, batch=args.batch, lr=args.lr, seed=args.seed,
                                 scan_impl=args.scan_impl)
    name = registry_name(args.model, args.size)
    pre, summary = pretrain(name, tasks, recipe, cache=args.cache, small=args.small)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_pretrained(pre, out, name)
    out.with_suffix(".json").write_text(json.dumps({**summary, "recipe": dataclasses.asdict(recipe)}, indent=1) + "\n")
    print(f"wrote {out} ({name}, {summary['train_time_s']:.0f} s)")
    return 0
