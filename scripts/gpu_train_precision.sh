#!/usr/bin/env bash
# Issue 20's GPU steps as one time-boxed script (about 6 minutes; README, "GPU reference"):
#
#   OUT=/some/dir bash scripts/gpu_train_precision.sh     # on a machine with one CUDA GPU
#
# Stages, each with its own time limit and writing results as it goes:
#   env            nvidia-smi, torch/triton versions
#   scan_backward  the scan backends' forward + backward on CUDA (Triton's own backward kernel vs the
#                  chunked recompute) at SSAMBA-tiny's shape, batch 4, 2k..22k steps
#   train_profile  where a training step of SSAMBA-tiny at 8k tokens spends its time (profiler)
#   sweep          bench/configs/gpu_train_precision.toml: steady + train, fp32 + bf16 autocast
#   claims         the claims report with its training section
# Everything lands in $OUT: gpu_log.txt, scan_backward.json, runs.tar.gz.
# SIMULATE_CPU=1 runs the same stages on the CPU at small sizes (to test this script).
set -u
OUT=${OUT:-/tmp/ssamba-bench-gpu-train}
PY=${PYTHON:-python3}
mkdir -p "$OUT/runs"
LOG="$OUT/gpu_log.txt"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
T0=$(date +%s)
# shellcheck source=scripts/gpu_stages.sh
. "$(dirname "$0")/gpu_stages.sh"   # say, run_stage
DEVICE=cuda LENGTHS=2048,8192,22016 TOKENS=8192 BATCH=4 SETS=()
if [ "${SIMULATE_CPU:-0}" = 1 ]; then
  DEVICE=cpu LENGTHS=256,512 TOKENS=256 BATCH=1
  SETS=(--set device=cpu --set 'frames=[256,512]' --set memory_cap=8GiB --set batch=1)
fi

run_stage env 30 bash -c 'nvidia-smi || true; '"$PY"' -c "import torch, triton; print(\"torch\", torch.__version__, \"triton\", triton.__version__, torch.cuda.get_device_name())"'
IMPLS=chunked,triton
[ "$DEVICE" = cpu ] && IMPLS=chunked,cpu_cpp
run_stage scan_backward 60 "$PY" -m bench scanbench --device "$DEVICE" --impls "$IMPLS" --batch "$BATCH" --backward \
  --lengths "$LENGTHS" --repeats 5 --json "$OUT/scan_backward.json"
run_stage train_profile 60 "$PY" scripts/gpu_train_profile.py --device "$DEVICE" --tokens "$TOKENS" --batch "$BATCH"
run_stage sweep 240 "$PY" -m bench sweep gpu_train_precision --quiet "${SETS[@]}" --out "$OUT/runs/train_precision"
run_stage claims 60 "$PY" -m bench claims "$OUT/runs/train_precision"
run_stage table 20 "$PY" -m bench table "$OUT/runs/train_precision"
tar czf "$OUT/runs.tar.gz" -C "$OUT" runs && rm -rf "$OUT/runs"
say "=== done in $(( $(date +%s) - T0 ))s"
