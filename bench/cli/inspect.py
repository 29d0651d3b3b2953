"""Show what a checkpoint holds: family, size, parameters, pretraining input geometry, unexpected keys.

Reads an SSAST or SSAMBA checkpoint in the authors' layout (SSAST-*-Patch-400.pth, ssamba_*_400.pth,
a fine-tuned one, or one written by models.checkpoints.save_original_format) without loading it into
a model, and checks every key strictly against the registered model of its family and size. Exit
status 0 when it would load, 1 when keys are missing, unexpected or of the wrong shape, 2 when the
file is not an SSAST / SSAMBA checkpoint.
"""

from __future__ import annotations

import argparse
import json
import sys

from models.checkpoints import inspect_checkpoint


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="path to a .pth state dict")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the text summary")


def run(args) -> int:
    info = inspect_checkpoint(args.checkpoint)
    print(json.dumps(info.to_dict()) if args.json else info.summary())
    if not info.ok:
        print(f"error: {args.checkpoint} would not load strictly into {info.model_name}", file=sys.stderr)
        return 1
    return 0
