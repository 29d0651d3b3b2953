#!/usr/bin/env bash
# One GPU session's reference measurements, as a single time-boxed script (README, "GPU reference").
#
#   python scripts/mamba_kernel.py fetch               # first, on a machine with PyPI (the CPU one)
#   OUT=/some/dir BUDGET_S=540 bash scripts/gpu_reference.sh   # then on a machine with one CUDA GPU,
#                                                      # with build/mamba-sdist brought along; keep
#                                                      # BUDGET_S a minute under the call's time limit
# Stages, each with its own time limit (cut to what is left of BUDGET_S) so a slow one cannot eat the
# others' time, and each writing its results as it goes (a stopped stage keeps every finished case):
#   env          nvidia-smi, torch/triton versions
#   mamba_kernel mamba-ssm's fp32 forward scan kernel, compiled from its sdist for this card
#                (scripts/mamba_kernel.py); on success scan_impl "mamba_ssm" is measured too
#   scan_check   every scan kernel against the reference on CUDA, SSAMBA-tiny's output with mamba_ssm vs
#                triton, and the fastest Triton launch (exported), with bandwidth against a copy
#   scanbench    the scan backends on CUDA at SSAMBA-tiny's shape, 512..32k steps, with bandwidth
#   paper_tiny   bench/configs/paper_quick.toml, SSAST-tiny (eager, sdpa) and SSAMBA-tiny (triton,
#                mamba_ssm): the paper's protocol
#   steady_tiny  the same points under the steady-state protocol
#   paper_aum_tiny, paper_small   AuM-tiny, then the small models, under the paper's protocol
# Everything lands in $OUT: gpu_log.txt, scanbench*.json, runs.tar.gz (the run directories). The claims
# reports and tables are made afterwards from runs.tar.gz on any machine (README, "GPU reference").
# SIMULATE_CPU=1 runs the same sweep stages on the CPU at three small token counts (to test this script).
set -u
OUT=${OUT:-/tmp/ssamba-bench-gpu}
PY=${PYTHON:-python3}
mkdir -p "$OUT/runs"
LOG="$OUT/gpu_log.txt"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
T0=$(date +%s)
SETS=()
SCAN_DEVICE=cuda
if [ "${SIMULATE_CPU:-0}" = 1 ]; then
  SETS=(--set device=cpu --set 'frames=[1024,2048,4096]' --set memory_cap=8GiB)
  SCAN_DEVICE=cpu
fi

# shellcheck source=scripts/gpu_stages.sh
. "$(dirname "$0")/gpu_stages.sh"   # say, run_stage

run_stage env 30 bash -c 'nvidia-smi || true; nvcc --version | tail -2 || true; '"$PY"' -c "import torch, timm; print(\"torch\", torch.__version__, \"timm\", timm.__version__, \"cuda\", torch.cuda.is_available() and torch.cuda.get_device_name())"; '"$PY"' -c "import triton; print(\"triton\", triton.__version__)"'

SCANS='"triton"'
SCAN_IMPLS=chunked,triton
MAMBA_BUILT=0
if [ "$SCAN_DEVICE" = cuda ]; then
  KERNEL_DIR="$PWD/build/mamba-kernel-gpu"
  if run_stage mamba_kernel 150 "$PY" scripts/mamba_kernel.py build --kernels fwd-fp32 --out "$KERNEL_DIR"; then
    export SSAMBA_BENCH_MAMBA_KERNEL="$KERNEL_DIR"
    MAMBA_BUILT=1
  else
    say "mamba-ssm's kernel did not build: SSAMBA is measured with the Triton scan only"
  fi
fi
if [ "$SCAN_DEVICE" = cuda ] && [ -z "${SSAMBA_BENCH_TRITON_TILES:-}" ]; then  # tiles given: skip the check
  run_stage scan_check 150 "$PY" scripts/gpu_scan_check.py
  check_rc=$?
  # its verdicts are lines of the log, printed as they are reached (a stage cut short keeps them)
  tiles=$(grep '^best_tiles ' "$LOG" | tail -1 | awk '{print $2}')
  [ -n "$tiles" ] && export SSAMBA_BENCH_TRITON_TILES="$tiles" && say "using Triton tiles $tiles"
  if [ "$check_rc" = 3 ]; then
    say "the Triton scan is wrong here: the sweeps use the chunked scan in its place"
    SCANS='"chunked"'
    SCAN_IMPLS=chunked
  fi
  if [ "$MAMBA_BUILT" = 1 ] && ! grep -q '^mamba_ok 1' "$LOG"; then
    say "mamba-ssm's kernel failed its check (or was not checked): left out of the sweeps"
    MAMBA_BUILT=0
  fi
fi
if [ "$MAMBA_BUILT" = 1 ]; then
  SCANS="$SCANS,\"mamba_ssm\""
  SCAN_IMPLS="$SCAN_IMPLS,mamba_ssm"
fi
if [ "$SCAN_DEVICE" = cuda ]; then  # the reference loop is slow on a GPU: it stops at 8k steps
  run_stage scanbench 40 "$PY" -m bench scanbench --device cuda --impls "reference,$SCAN_IMPLS" --batch 4 \
    --lengths 512,2048,8192 --repeats 10 --json "$OUT/scanbench.json"
  run_stage scanbench_22k 30 "$PY" -m bench scanbench --device cuda --impls "$SCAN_IMPLS" --batch 4 \
    --lengths 22016,32768 --repeats 10 --json "$OUT/scanbench_22k.json"
fi
SCAN_SETS=()
[ "$SCAN_DEVICE" = cuda ] && SCAN_SETS=(--set "scan_impl=[$SCANS]")

SWEEP=("$PY" -m bench sweep paper_quick --quiet "${SETS[@]}" "${SCAN_SETS[@]}")
PAIR=(--set 'models=["ssast","ssamba"]' --set 'attn_impl=["eager","sdpa"]' --set 'sizes=["tiny"]')
run_stage paper_tiny 150 "${SWEEP[@]}" "${PAIR[@]}" --out "$OUT/runs/paper_tiny"
run_stage steady_tiny 150 "${SWEEP[@]}" "${PAIR[@]}" --set protocol=steady \
  --set steady.max_time_s=2 --set steady.warmup_max=10 --out "$OUT/runs/steady_tiny"
run_stage paper_aum_tiny 60 "${SWEEP[@]}" --set 'models=["aum"]' --set 'max_tokens={}' --set 'sizes=["tiny"]' --out "$OUT/runs/paper_aum_tiny"
run_stage paper_small 70 "${SWEEP[@]}" --set 'models=["ssast","ssamba"]' --set 'sizes=["small"]' --out "$OUT/runs/paper_small"

if [ "${RUN_REPORTS:-0}" = 1 ]; then  # off by default: the GPU's minutes are for measuring
  run_stage claims 60 "$PY" -m bench claims "$OUT"/runs/*/
fi
tar czf "$OUT/runs.tar.gz" -C "$OUT" runs && rm -rf "$OUT/runs"
say "=== done in $(( $(date +%s) - T0 ))s"
