#!/usr/bin/env bash
# ssamba-bench's one entry point.
#   ./run_all.sh         set up .venv if needed, then run the main job
#   ./run_all.sh test    set up .venv if needed, then run the test suite (extra args go to pytest)
# Set-up installs the project and its pinned dependencies into .venv (first time: a few minutes,
# ~5 GB: torch is a CUDA build that also runs on the CPU).
set -euo pipefail
cd "$(dirname "$0")"

PYTHON=${PYTHON:-python3}
VENV=.venv
STAMP=$VENV/.installed-$(sha256sum pyproject.toml | cut -c1-16)

setup() {
    if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
        echo "error: ssamba-bench needs Python >= 3.10 as '$PYTHON' (set PYTHON=/path/to/python3)" >&2
        exit 1
    fi
    if [ ! -x "$VENV/bin/python" ]; then
        echo "[setup] creating $VENV"
        "$PYTHON" -m venv "$VENV"
    fi
    if [ ! -f "$STAMP" ]; then
        echo "[setup] installing ssamba-bench and its pinned dependencies into $VENV"
        "$VENV/bin/python" -m pip install --quiet --upgrade pip
        "$VENV/bin/python" -m pip install --quiet -e '.[dev]'
        rm -f "$VENV"/.installed-*
        touch "$STAMP"
    fi
}

setup
export PYTHONUNBUFFERED=1
case "${1:-main}" in
    test)
        shift
        exec "$VENV/bin/python" -m pytest "$@"
        ;;
    main)
        "$VENV/bin/ssamba-bench" models
        "$VENV/bin/ssamba-bench" demo
        ;;
    *)
        echo "usage: ./run_all.sh [test [pytest args...]]" >&2
        exit 2
        ;;
esac
