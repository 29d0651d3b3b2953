"""Fine-tune one model on one accuracy task and record accuracy / macro-F1 rows in a run directory.

  ssamba-bench finetune --model M --size S --task T --init scratch|PATH.pth --steps N --out RUN_DIR

The recipe every model shares (bench/accuracy/recipe.py): patch stride 10 (a pretrained pos_embed is
adapted by the checkpoint loader), the mean-pooled LayerNorm -> Linear head (AuM: its own cls-token
Linear), Adam (0.95, 0.999) with weight decay 5e-7, warm-up over 10% of the steps then cosine decay,
per-clip SpecAugment (freqm 48, timem 37), no mixup, fixed seeds; the last step's weights are
evaluated on val and test (and a kws model also on digits-real, the real asterisk digits, when
built). Rows (protocol "finetune", metrics accuracy / macro_f1 per split, train_time_s) are appended
to RUN_DIR/results.jsonl; a case already recorded ok is skipped, so rerunning resumes.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from bench.accuracy.recipe import FinetuneRecipe
from bench.accuracy.run import accuracy_table, digits_real_available, file_sha256, make_case, run_case
from bench.cli.training_args import add_training_arguments, check_training_arguments
from bench.data import check_task, read_manifest
from bench.measure.env import collect_env
from bench.store.run_lock import RunLock
from bench.store.run_store import RunStore, latest_attempts
from models.errors import UserInputError


def add_arguments(parser) -> None:
    d = FinetuneRecipe()
    add_training_arguments(parser, d)
    parser.add_argument("--task", required=True, help="kws, kws10, speakers or events")
    parser.add_argument("--init", default="scratch", help="'scratch' or a pretrained checkpoint (.pth)")
    parser.add_argument("--out", required=True, metavar="RUN_DIR", help="run directory (created or resumed)")


def run(args) -> int:
    check_training_arguments(args)
    check_task(args.task)
    if args.task == "digits-real":
        raise UserInputError("digits-real is a test-only set: fine-tune on kws, which is also evaluated on it")
    read_manifest(args.task, cache=args.cache, small=args.small)
    if args.init == "scratch":
        init, init_path, init_key = "scratch", None, "scratch"
    else:
        init_path = Path(args.init)
        if not init_path.is_file():
            raise UserInputError(f"--init: no checkpoint file {init_path} (give 'scratch' or a .pth file)")
        init, init_key = "pretrained", file_sha256(init_path)
    torch.set_num_threads(args.threads)
    recipe = dataclasses.replace(FinetuneRecipe(), steps=args.steps, batch=args.batch, lr=args.lr, seed=args.seed,
                                 scan_impl=args.scan_impl)
    case = make_case(args.model, args.size, args.task, init, init_key, recipe, args.small)
    store = RunStore(args.out)
    env = collect_env(args.threads)
    with RunLock(store.dir):  # one session writes into a run directory at a time
        run_id = store.open("finetune", {"case": case.label(), "init": str(args.init), **dataclasses.asdict(recipe)},
                            env)
        if store.statuses().get(case.case_id) == "ok":
            print(f"skip {case.label()}: already recorded ok in {args.out}")
        else:
            run_case(case, init_path, store, run_id, env, cache=args.cache,
                     digits_real=args.task == "kws" and digits_real_available(args.cache, args.small))
        store.export()
    rows = [r for r in latest_attempts(store.rows()) if r["case_id"] == case.case_id]
    print(accuracy_table(rows))
    return 0 if all(r["status"] == "ok" for r in rows) else 1
