# Shared by the time-boxed GPU session scripts (gpu_reference.sh, gpu_train_precision.sh): sourced,
# not run. Needs LOG (the log file) and T0 (the script's start, seconds since the epoch). BUDGET_S,
# if set, is the whole script's time: a stage's limit is cut to what is left of it, and a stage with
# under 10 s left is skipped (so the script ends inside the device time a session has).

say() { echo "$*" | tee -a "$LOG"; }

# run_stage NAME LIMIT_S CMD...: run CMD in its own process group; at the limit interrupt the whole
# group (the sweep's measuring children too), so no stray process holds GPU memory afterwards.
run_stage() {
  local name=$1 limit=$2
  shift 2
  if [ -n "${BUDGET_S:-}" ]; then
    local left=$(( BUDGET_S - ($(date +%s) - T0) ))
    if [ "$left" -lt 10 ]; then
      say "=== $name: skipped, ${left}s of the ${BUDGET_S}s budget left"
      return 124
    fi
    [ "$left" -lt "$limit" ] && limit=$left
  fi
  say "=== $name: start (limit ${limit}s) at +$(( $(date +%s) - T0 ))s"
  setsid "$@" >>"$LOG" 2>&1 &
  local pid=$! waited=0
  while kill -0 "$pid" 2>/dev/null; do
    if [ "$waited" -ge "$limit" ]; then
      say "=== $name: reached its ${limit}s limit, interrupting"
      kill -INT -- "-$pid" 2>/dev/null
      for _ in 1 2 3 4 5 6 7 8; do kill -0 "$pid" 2>/dev/null || break; sleep 1; done  # up to 8 s to stop
      kill -KILL -- "-$pid" 2>/dev/null
      break
    fi
    sleep 1; waited=$((waited + 1))
  done
  wait "$pid"; local rc=$?
  say "=== $name: exit $rc after ${waited}s (+$(( $(date +%s) - T0 ))s in all)"
  return $rc
}
