"""Settings of the two measurement protocols, `steady` and `paper` (docs/protocols.md).

Frozen dataclasses with a help string per field, standard library only: the sweep config embeds them
as its [steady] and [paper] sections (bench/harness/config.py) and bench/measure/protocols.py
follows them.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class SteadyConfig:
    """The `steady` protocol: warm up until stable, then time repeated forwards (docs/protocols.md)."""

    warmup_min: int = field(default=3, metadata={"help": "warm-up calls at least (after the cold call)"})
    warmup_max: int = field(default=25, metadata={"help": "warm-up calls at most"})
    warmup_rtol: float = field(default=0.05, metadata={
        "help": "warm-up ends when two consecutive running medians (of the last 5 calls) agree within this"})
    min_repeats: int = field(default=10, metadata={"help": "timed calls at least, unless max_time_s runs out"})
    max_repeats: int = field(default=100, metadata={"help": "timed calls at most"})
    min_time_s: float = field(default=1.0, metadata={
        "help": "time budget: keep timing until this much time is spent, once min_repeats are reached"})
    max_time_s: float = field(default=30.0, metadata={
        "help": "soft cap on the warm-up and on the timed phase each; slow cases stop early with "
                "n_samples < min_repeats (the rows say so); at least one timed call is always made"})


@dataclass(frozen=True)
class PaperConfig:
    """The `paper` protocol: the authors' (fresh model per run, no warm-up, mean incl. the cold run)."""

    runs: int = field(default=5, metadata={"help": "runs, each on a freshly built model"})
