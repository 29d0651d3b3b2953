#!/usr/bin/env bash
# One GPU session's reference measurements, as a single time-boxed script (README, "GPU reference").
#
#   OUT=/some/dir bash scripts/gpu_reference.sh        # on a machine with one CUDA GPU
#
# Stages, each with its own time limit so a slow one cannot eat the others' time, and each writing
# its results as it goes (a stopped stage keeps every finished case):
#   env          nvidia-smi, torch/triton versions
#   scan_check   the Triton scan against the reference on CUDA, and the fastest tiles (exported)
#   scanbench    the scan backends on CUDA at SSAMBA-tiny's shape, 512..22k steps
#   paper_tiny   bench/configs/paper_quick.toml, SSAST- and SSAMBA-tiny: the paper's protocol
#   steady_tiny  the same points under the steady-state protocol
#   paper_aum_tiny, paper_small   AuM-tiny, then the small models, under the paper's protocol
#   claims       the claims reports (paper: tiny, AuM, small; steady: tiny)
# Everything lands in $OUT: gpu_log.txt, scanbench.json, runs.tar.gz (the run directories).
# SIMULATE_CPU=1 runs the same stages on the CPU at three small token counts (to test this script).
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

run_stage env 30 bash -c 'nvidia-smi || true; '"$PY"' -c "import torch, timm; print(\"torch\", torch.__version__, \"timm\", timm.__version__, \"cuda\", torch.cuda.is_available() and torch.cuda.get_device_name())"; '"$PY"' -c "import triton; print(\"triton\", triton.__version__)"'

SCAN_SETS=()
if [ "$SCAN_DEVICE" = cuda ] && [ -z "${SSAMBA_BENCH_TRITON_TILES:-}" ]; then  # tiles given: skip the check
  if run_stage scan_check 80 "$PY" scripts/gpu_scan_check.py; then
    tiles=$(grep '^best_tiles ' "$LOG" | tail -1 | awk '{print $2}')
    [ -n "$tiles" ] && export SSAMBA_BENCH_TRITON_TILES="$tiles" && say "using Triton tiles $tiles"
  else
    say "the Triton scan is not usable here: the sweeps use the chunked scan"
    SCAN_SETS=(--set scan_impl=chunked)
  fi
fi
if [ "$SCAN_DEVICE" = cuda ]; then  # the reference loop is slow on a GPU: it stops at 8k steps
  run_stage scanbench 40 "$PY" -m bench scanbench --device cuda --impls reference,chunked,triton --batch 4 \
    --lengths 512,2048,8192 --repeats 10 --json "$OUT/scanbench.json"
  run_stage scanbench_22k 30 "$PY" -m bench scanbench --device cuda --impls chunked,triton --batch 4 \
    --lengths 22016,32768 --repeats 10 --json "$OUT/scanbench_22k.json"
fi

SWEEP=("$PY" -m bench sweep paper_quick --quiet "${SETS[@]}" "${SCAN_SETS[@]}")
PAIR='models=["ssast","ssamba"]'
run_stage paper_tiny 120 "${SWEEP[@]}" --set "$PAIR" --set 'sizes=["tiny"]' --out "$OUT/runs/paper_tiny"
run_stage steady_tiny 110 "${SWEEP[@]}" --set "$PAIR" --set 'sizes=["tiny"]' --set protocol=steady \
  --set steady.max_time_s=2 --set steady.warmup_max=10 --out "$OUT/runs/steady_tiny"
run_stage paper_aum_tiny 60 "${SWEEP[@]}" --set 'models=["aum"]' --set 'max_tokens={}' --set 'sizes=["tiny"]' --out "$OUT/runs/paper_aum_tiny"
run_stage paper_small 70 "${SWEEP[@]}" --set "$PAIR" --set 'sizes=["small"]' --out "$OUT/runs/paper_small"

run_stage claims_paper 30 "$PY" -m bench claims "$OUT/runs/paper_tiny" "$OUT/runs/paper_aum_tiny" "$OUT/runs/paper_small"
run_stage claims_steady 30 "$PY" -m bench claims "$OUT/runs/steady_tiny"
for run in "$OUT"/runs/*/; do
  run_stage "table_$(basename "$run")" 20 "$PY" -m bench table "$run"
done
tar czf "$OUT/runs.tar.gz" -C "$OUT" runs && rm -rf "$OUT/runs"
say "=== done in $(( $(date +%s) - T0 ))s"
