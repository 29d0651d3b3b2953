"""Where one training step of SSAMBA-tiny spends its time: the scan's backward against everything else.

    python scripts/gpu_train_profile.py --device cuda --tokens 8192 --batch 4

Issue 20's bar: on a GPU a training step at 8k tokens must not spend most of its time in the scan's
backward (before the Triton backward kernel, the chunked recompute did). Runs the `train` protocol's
step (bench/measure/train_step.py) twice untimed, then once under torch.profiler, and sums the device
self time of the scan's kernels (forward and backward, by kernel or operator name) against the step's
total. Prints one line per category and `scan_backward_share <fraction>`; --device cpu runs the same
on the CPU (where the C++ scan's backward operator is the category) to check this script.
"""

from __future__ import annotations

import argparse

import torch
from torch.profiler import ProfilerActivity, profile

from bench.measure.train_step import make_train_step
from models import create_model
from models.tokenizer import PatchGrid

# Kernel (CUDA) or operator (CPU) names of the scan, by direction.
SCAN_BACKWARD = ("_scan_bwd", "ssamba_scan_cpu::bwd", "selective_scan_cpu_backward", "selective_scan_bwd")
SCAN_FORWARD = ("_scan_fwd", "ssamba_scan_cpu::fwd", "selective_scan_fwd")


def category(name: str) -> str:
    if any(k in name for k in SCAN_BACKWARD):
        return "scan_backward"
    if any(k in name for k in SCAN_FORWARD):
        return "scan_forward"
    if "gemm" in name or "aten::mm" in name or "aten::addmm" in name or "aten::bmm" in name:
        return "matmul"
    return "other"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tokens", type=int, default=8192)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--model", default="ssamba_tiny")
    args = parser.parse_args()
    frames = PatchGrid().frames_for_tokens(args.tokens)
    torch.manual_seed(0)
    model = create_model(args.model, input_frames=frames).to(args.device)
    train = make_train_step(model, torch.randn(args.batch, frames, model.grid.n_mels, device=args.device))
    for _ in range(2):
        train.step()
    cuda = args.device.startswith("cuda")
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        train.step()
        if cuda:
            torch.cuda.synchronize()
    totals = {"scan_forward": 0.0, "scan_backward": 0.0, "matmul": 0.0, "other": 0.0}
    for event in prof.key_averages():
        seconds = (event.self_device_time_total if cuda else event.self_cpu_time_total) / 1e6
        totals[category(event.key)] += seconds
    step = sum(totals.values())
    print(f"model {args.model} tokens {args.tokens} batch {args.batch} device {args.device} scan "
          f"{model.scan_impl} step_self_time_s {step:.4f}")
    for name, seconds in totals.items():
        print(f"{name:14s} {seconds:9.4f} s  {seconds / step:6.1%}")
    print(f"scan_backward_share {totals['scan_backward'] / step:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
