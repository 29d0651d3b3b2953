"""argparse types for the verbs' numeric options: a bad number is argparse's one `error:` line, exit 2.

Each checks what `int` / `float` alone let through: zero or negative counts, NaN and infinities.
"""

from __future__ import annotations

import argparse
import math


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _finite_float(text: str, *, allow_zero: bool) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        raise argparse.ArgumentTypeError(f"must be a finite number {'>= 0' if allow_zero else 'above 0'}, got {text}")
    return value


def positive_float(text: str) -> float:
    return _finite_float(text, allow_zero=False)


def nonnegative_float(text: str) -> float:
    return _finite_float(text, allow_zero=True)


def positive_int_list(text: str) -> list[int]:
    """'512,2048' -> [512, 2048]; every item at least 1."""
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise argparse.ArgumentTypeError("expected a comma-separated list of whole numbers, e.g. 512,2048")
    return [positive_int(t) for t in items]
