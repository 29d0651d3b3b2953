"""Command-line arguments (and their first check) shared by `ssamba-bench pretrain` and `finetune`.

Both train one model with a recipe (bench/accuracy/recipe.py); the options that pick the model, the
budget and the machine are the same, with the recipe's defaults shown in the help.
"""

from __future__ import annotations

from bench.accuracy.config import FAMILIES
from bench.cli.arg_types import positive_float, positive_int
from models.errors import UserInputError


def add_training_arguments(parser, recipe) -> None:
    """--model --size --steps --batch --lr --seed --scan-impl --threads --cache --small, defaults from `recipe`."""
    parser.add_argument("--model", required=True, help=f"model family: {', '.join(FAMILIES)}")
    parser.add_argument("--size", default="tiny", help="tiny | small | base | test (default tiny)")
    parser.add_argument("--steps", type=positive_int, default=recipe.steps,
                        help=f"optimiser steps (default {recipe.steps})")
    parser.add_argument("--batch", type=positive_int, default=recipe.batch,
                        help=f"clips per step (default {recipe.batch})")
    parser.add_argument("--lr", type=positive_float, default=recipe.lr,
                        help=f"peak learning rate (default {recipe.lr})")
    parser.add_argument("--seed", type=int, default=recipe.seed, help=f"seed (default {recipe.seed})")
    parser.add_argument("--scan-impl", default=recipe.scan_impl,
                        help="selective-scan backend of Mamba models (default auto)")
    parser.add_argument("--threads", type=positive_int, default=2, help="torch intra-op threads (default 2)")
    parser.add_argument("--cache", default=None, help="dataset cache directory")
    parser.add_argument("--small", action="store_true", help="use the reduced `--small` dataset builds")


def check_training_arguments(args) -> None:
    """One-line errors for an unknown --model family or a non-positive --steps / --batch."""
    if args.model not in FAMILIES:
        raise UserInputError(f"unknown model family {args.model!r}; choose one of {', '.join(FAMILIES)}")
    if args.steps < 1 or args.batch < 1:
        raise UserInputError("--steps and --batch must be >= 1")
