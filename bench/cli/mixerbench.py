"""Measure SSAMBA's CPU path, fused vs the authors' op-by-op mixer: profile shares, FLOP floor, training step.

One process, one machine, every number side by side (bench/measure/mixer_bench.py), for
SSAMBA-tiny with `fused_mixer` on and off:

  1. profile at --profile-tokens (default 8192), batch 1: self CPU time in matrix multiplies, the
     selective scan, the causal conv and everything else; "outside mm+scan" is the share of the
     forward spent elsewhere (target with the fused path: <= 15%);
  2. inference at --floor-tokens (default 22016), batch 1: median forward time against the FLOP
     floor, the time the model's FLOPs (FlopCounterMode, bench/estimate/trace.py) take at the fp32
     GEMM rate of an n x n x n matmul measured in this run (target: <= 1.6x the floor);
  3. a fine-tuning step as the accuracy recipe runs it (batch 32, 98 frames, patch stride 10:
     108 tokens, cross-entropy, Adam), against SSAST-tiny's step (target: SSAMBA <= 1.5x SSAST).

Timings are medians of --repeats calls after a warm-up call; the load average is printed because
other processes on the machine share its cores. --json writes everything with the environment.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bench.cli.arg_types import positive_int

TARGETS = {"outside_mm_scan_share": 0.15, "gemm_floor_ratio": 1.6, "train_step_ratio": 1.5}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--profile-tokens", type=positive_int, default=8192, help="(default: %(default)s)")
    parser.add_argument("--floor-tokens", type=positive_int, default=22016, help="(default: %(default)s)")
    parser.add_argument("--train-batch", type=positive_int, default=32, help="(default: %(default)s)")
    parser.add_argument("--repeats", type=positive_int, default=3, help="timed calls per measurement (default: %(default)s)")
    parser.add_argument("--threads", type=positive_int, default=2, help="torch intra-op threads (default: %(default)s)")
    parser.add_argument("--matmul-size", type=positive_int, default=2048,
                        help="n of the n x n x n fp32 matmul that gives the GEMM rate (default: %(default)s)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results and environment here")


def _model(name: str, frames: int, stride: int = 16, **options):
    import torch

    from models.registry import create_model

    torch.manual_seed(0)
    return create_model(name, input_frames=frames, fstride=stride, tstride=stride, **options)


def run(args) -> int:
    import warnings

    import torch

    from bench.accuracy.recipe import FinetuneRecipe
    from bench.estimate import estimate
    from bench.measure.env import collect_env, cpu_model
    from bench.measure.env import load_average_text as _load
    from bench.measure.mixer_bench import profile_forward, time_forward, time_train_step
    from bench.measure.scan_kernels import matmul_gflops
    from bench.measure.timing import make_timer
    from models.tokenizer import PatchGrid

    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message=".*Profiler clears events.*")  # one profile per model: intended
    timer, _ = make_timer("cpu")
    gemm = matmul_gflops("cpu", timer, args.matmul_size)
    paths = {"fused": {"fused_mixer": True}, "unfused": {"fused_mixer": False}}
    print(f"SSAMBA-tiny CPU path, fused vs unfused mixer; {cpu_model()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; fp32 GEMM rate {gemm:.1f} GFLOP/s ({args.matmul_size}^3); "
          f"load average {_load()}")
    result: dict = {"gemm_gflops": gemm, "threads": args.threads, "profile": {}, "floor": {}, "train": {}}

    frames = PatchGrid().frames_for_tokens(args.profile_tokens)
    x = torch.randn(1, frames, 128)
    print(f"\n1. profile, {args.profile_tokens} tokens, batch 1 (self CPU seconds)")
    print(f"{'path':8} {'total':>7} {'mm':>7} {'scan':>7} {'conv':>7} {'other':>7} {'outside mm+scan':>16}")
    for label, options in paths.items():
        p = profile_forward(_model("ssamba_tiny", frames, **options).eval(), x)
        result["profile"][label] = p
        print(f"{label:8} {p['total_s']:7.3f} {p['mm_s']:7.3f} {p['scan_s']:7.3f} {p['conv_s']:7.3f} "
              f"{p['other_s']:7.3f} {100 * p['outside_mm_scan_share']:15.1f}%")
        print("         top: " + ", ".join(f"{o['op']} {o['self_s']:.3f}" for o in p["top_ops"][:6]))

    frames = PatchGrid().frames_for_tokens(args.floor_tokens)
    x = torch.randn(1, frames, 128)
    flops = estimate("ssamba_tiny", args.floor_tokens, 1, frames=frames)["flops"]
    floor_s = flops / (gemm * 1e9)
    print(f"\n2. inference, {args.floor_tokens} tokens, batch 1: {flops / 1e9:.1f} GFLOP; floor at the GEMM rate "
          f"{floor_s:.2f} s")
    for label, options in paths.items():
        t = time_forward(_model("ssamba_tiny", frames, **options).eval(), x, args.repeats)
        result["floor"][label] = {**t, "flops": flops, "floor_s": floor_s, "gemm_floor_ratio": t["median"] / floor_s}
        print(f"{label:8} median {t['median']:.2f} s (min {t['min']:.2f}, max {t['max']:.2f}) = "
              f"{t['median'] / floor_s:.2f}x the floor")

    recipe = FinetuneRecipe()
    stride = 10  # the fine-tuning patch stride of the accuracy runs (bench/accuracy/checkpoint.py callers)
    x = torch.randn(args.train_batch, recipe.frames, 128)
    y = torch.randint(0, 10, (args.train_batch,))
    print(f"\n3. fine-tuning step, batch {args.train_batch}, {recipe.frames} frames, stride {stride}, Adam")
    contenders = {"ssast_tiny": ("ssast_tiny", {}), "ssamba fused": ("ssamba_tiny", paths["fused"]),
                  "ssamba unfused": ("ssamba_tiny", paths["unfused"])}
    for label, (name, options) in contenders.items():
        model = _model(name, recipe.frames, stride, num_classes=10, **options)
        t = time_train_step(model, x, y, args.repeats + 2)
        result["train"][label] = {**t, "tokens": model.n_tokens}
        print(f"{label:15} {model.n_tokens} tokens: first step {t['first_s']:.2f} s, median {t['median']:.3f} s")
    for label in ("ssamba fused", "ssamba unfused"):
        ratio = result["train"][label]["median"] / result["train"]["ssast_tiny"]["median"]
        result["train"][label]["ratio_to_ssast"] = ratio
        print(f"{label} / ssast_tiny = {ratio:.2f}x")

    fused = {"outside_mm_scan_share": result["profile"]["fused"]["outside_mm_scan_share"],
             "gemm_floor_ratio": result["floor"]["fused"]["gemm_floor_ratio"],
             "train_step_ratio": result["train"]["ssamba fused"]["ratio_to_ssast"]}
    result["targets"] = {k: {"value": fused[k], "target": v, "met": fused[k] <= v} for k, v in TARGETS.items()}
    print("\ntargets (fused path): " + "; ".join(
        f"{k} {t['value']:.3g} <= {t['target']} {'met' if t['met'] else 'NOT met'}" for k, t in result["targets"].items()))
    print(f"load average at the end {_load()}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({**result, "env": collect_env(torch.get_num_threads())}, indent=1, default=str))
        print(f"wrote {args.json}")
    return 0
