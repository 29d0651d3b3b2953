#!/usr/bin/env bash
# ssamba-bench's one entry point.
#   ./run_all.sh         set up .venv if needed, then run the main job
#   ./run_all.sh test    set up .venv if needed, then run the test suite (extra args go to pytest);
#                        as root, with a single-node Slurm of its own for tests/test_slurm.py
# Set-up installs the project and its pinned dependencies into .venv (first time: a few minutes,
# ~5 GB: torch is a CUDA build that also runs on the CPU).
set -euo pipefail
cd "$(dirname "$0")"

PYTHON=${PYTHON:-python3}
VENV=.venv
STAMP=$VENV/.installed-$(sha256sum pyproject.toml | cut -c1-16)

# pip install with retries: torch's CUDA wheels are several hundred MB each, and a dropped connection
# that pip's own resume cannot recover must not fail a fresh set-up (wheels already downloaded stay
# in pip's cache, so a retry fetches only what is missing).
pip_install() {
    local attempt
    for attempt in 1 2 3 4; do
        "$VENV/bin/python" -m pip install --quiet "$@" && return 0
        [ "$attempt" = 4 ] && break
        echo "[setup] pip install $* failed (attempt $attempt of 4); retrying in $((attempt * 20)) s" >&2
        sleep $((attempt * 20))
    done
    echo "error: pip could not install $* (see pip's message above; usually the network)." \
         "Rerun ./run_all.sh to resume." >&2
    exit 1
}

# A fresh install needs ~5 GB for .venv plus ~3 GB of wheels unpacked in the temp directory (an
# update of an existing .venv, less); pip reports a full disk mid-download as "Connection
# interrupted", so say it plainly before starting. SSAMBA_BENCH_SETUP_NEED_GB overrides the need.
check_free_space() {
    local dir avail_kb need_gb=10
    [ -x "$VENV/bin/python" ] && need_gb=4
    need_gb=${SSAMBA_BENCH_SETUP_NEED_GB:-$need_gb}
    for dir in . "${TMPDIR:-/tmp}"; do
        avail_kb=$(df -Pk "$dir" | awk 'NR == 2 {print $4}')
        if [ -n "$avail_kb" ] && [ "$avail_kb" -lt $((need_gb * 1024 * 1024)) ]; then
            echo "error: only $((avail_kb / 1024 / 1024)) GB free on the disk of $dir; installing torch needs" \
                 "about $need_gb GB. Free some space (or point TMPDIR elsewhere) and rerun." >&2
            exit 1
        fi
    done
}

setup() {
    if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
        echo "error: ssamba-bench needs Python >= 3.10 as '$PYTHON' (set PYTHON=/path/to/python3)" >&2
        exit 1
    fi
    if [ ! -f "$STAMP" ]; then
        check_free_space
        if [ ! -x "$VENV/bin/python" ]; then
            echo "[setup] creating $VENV"
            "$PYTHON" -m venv "$VENV"
        fi
        echo "[setup] installing ssamba-bench and its pinned dependencies into $VENV"
        pip_install --upgrade pip
        pip_install --resume-retries 20 -e '.[dev]'
        rm -f "$VENV"/.installed-*
        touch "$STAMP"
    fi
    setup_data_sources
}

# System packages and Debian archives the offline accuracy datasets are generated from (docs/datasets.md):
# installed with apt-get when running as root; otherwise a warning naming the command, and the
# dataset tests skip with the same command in their reason.
setup_data_sources() {
    local pkgs="espeak-ng flite fluidsynth timgm6mb-soundfont" missing="" p d
    for p in $pkgs; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
    done
    if [ -n "$missing" ]; then
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
            echo "[setup] installing accuracy-dataset packages:$missing"
            DEBIAN_FRONTEND=noninteractive apt-get update -qq
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
        else
            echo "warning: missing$missing: the accuracy datasets cannot be built; install with:" \
                 "sudo apt-get install -y --no-install-recommends$missing" >&2
        fi
    fi
    local debs="${SSAMBA_BENCH_DATA:-${XDG_CACHE_HOME:-$HOME/.cache}/ssamba-bench/data}/debs"
    mkdir -p "$debs"
    for d in hedgewars-data asterisk-core-sounds-en-wav; do
        ls "$debs/${d}"_*.deb >/dev/null 2>&1 || (cd "$debs" && apt-get download -qq "$d" 2>/dev/null) \
            || echo "warning: could not download $d (the speakers / digits-real datasets will be unavailable)" >&2
    done
}

# The Slurm tests (tests/test_slurm.py) need a controller. As root, when none answers, start this
# machine's own single-node Slurm (scripts/slurm_local.sh) for the test run and stop it when the run
# ends; if it cannot start, one warning line and those tests skip with the reason. Never fails the
# run, and every wait is bounded (the script's own limits, and timeout around it).
SLURM_STARTED=""
start_test_slurm() {
    local out
    [ "$(id -u)" = 0 ] || return 0  # not root: the tests skip unless a controller already answers
    if command -v sinfo >/dev/null && [ -n "$(timeout 20 sinfo --noheader --responding 2>/dev/null)" ]; then
        echo "[test] Slurm: a controller already answers; tests/test_slurm.py uses it"
        return 0
    fi
    if out=$(timeout 900 scripts/slurm_local.sh start 2>&1); then
        SLURM_STARTED=1
        export SLURM_CONF=${SSAMBA_SLURM_DIR:-/tmp/ssamba-slurm}/etc/slurm.conf
        echo "[test] ${out##*$'\n'} (for tests/test_slurm.py; stopped when the tests end)"
    else
        out=${out##*$'\n'}
        echo "warning: could not start a local Slurm (${out:-timed out}); tests/test_slurm.py will skip" >&2
        export SSAMBA_SLURM_SKIP_REASON="scripts/slurm_local.sh start failed: ${out:-timed out}"
    fi
}

stop_test_slurm() {
    [ -n "$SLURM_STARTED" ] || return 0
    timeout 120 scripts/slurm_local.sh stop >/dev/null 2>&1 \
        || echo "warning: scripts/slurm_local.sh stop failed; stop it by hand: sudo scripts/slurm_local.sh stop" >&2
}

setup
export PYTHONUNBUFFERED=1
case "${1:-main}" in
    test)
        shift
        trap stop_test_slurm EXIT
        start_test_slurm
        status=0
        "$VENV/bin/python" -m pytest "$@" || status=$?
        exit "$status"
        ;;
    main)
        # The CPU main job (<= 15 min on 2 cores, set-up excluded): the default sweep (steady
        # protocol), the paper's protocol for the tiny models beside it, training steps of the tiny
        # models (protocol train: the claims report's training section), an accuracy pipeline check
        # (kws10, SSAST- vs SSAMBA-tiny, pretrained vs scratch; at chance by design, reported beside the
        # committed reference accuracy tables), then the claims report and figures. Each part says how
        # long it took.
        STAMP=$(date -u +%Y%m%dT%H%M%SZ)
        RUN_DIR=${RUN_DIR:-results/runs/$STAMP-default}
        PAPER_DIR=${PAPER_DIR:-$RUN_DIR/paper_protocol}
        TRAIN_DIR=${TRAIN_DIR:-$RUN_DIR/train_protocol}
        ACC_DIR=${ACC_DIR:-$RUN_DIR/accuracy}
        START=$SECONDS
        timed() {
            local t0=$SECONDS
            "$VENV/bin/ssamba-bench" "$@"
            echo "[main] ssamba-bench $1 ${2:-} took $((SECONDS - t0)) s"
        }
        timed models
        timed sweep default --out "$RUN_DIR"
        timed sweep default_paper --out "$PAPER_DIR"
        timed sweep default_train --out "$TRAIN_DIR"
        timed data build kws10
        timed accuracy accuracy_ci --out "$ACC_DIR"
        timed claims "$RUN_DIR" "$PAPER_DIR" "$TRAIN_DIR" "$ACC_DIR"
        timed plot "$RUN_DIR" "$PAPER_DIR" "$TRAIN_DIR"
        echo "[main] done in $((SECONDS - START)) s"
        echo "results, claims.md and figures/ are in $RUN_DIR (paper protocol: $PAPER_DIR; training: $TRAIN_DIR; accuracy: $ACC_DIR)"
        ;;
    *)
        echo "usage: ./run_all.sh [test [pytest args...]]" >&2
        exit 2
        ;;
esac
