"""A case, the point of a sweep that one row set describes, and how cases group into units and series.

A case is one point of the sweep: model, n_tokens (with its frames), batch, dtype, device, attn_impl,
scan_impl, protocol, amp (autocast: none | bfloat16 | float16; docs/results-schema.md). Its `case_id` is a hash of those parameters alone,
so the same case has the same id in every run and on every machine: runs resume, merge and compare
case by case.

Cases are grouped twice:
  - a *unit* is everything one child process runs: one model on one device, all its variants, each
    variant walking its token axis upward (the harness runs one child per unit);
  - a *series* is one variant of a unit (everything but n_tokens): an out-of-memory at some token
    count means the larger token counts of that series are recorded as skipped_after_oom
    (bench/harness/series_gate.py).
Standard library only: the parent process and the reports use cases without importing torch.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass

CASE_ID_FIELDS = ("model", "n_tokens", "frames", "batch", "dtype", "device", "attn_impl", "scan_impl", "protocol")


@dataclass(frozen=True)
class Case:
    """One point of a sweep. `scan_impl` is the *requested* backend ("auto"); rows also record the
    concrete one the model resolved it to."""

    model: str
    family: str
    size: str
    n_tokens: int
    frames: int
    batch: int
    dtype: str
    device: str
    attn_impl: str | None
    scan_impl: str | None
    protocol: str
    options: tuple[tuple[str, object], ...] = ()  # model constructor options (config `model_options`), sorted
    amp: str = "none"  # autocast dtype around the measured call ("none": the pure `dtype` alone)

    @property
    def case_id(self) -> str:
        """Stable 16-hex-digit hash of the case parameters (not of the run, the machine or the settings).
        Options and autocast join the hash only when set, so cases without them keep their ids."""
        fields = {f: getattr(self, f) for f in CASE_ID_FIELDS}
        if self.options:
            fields["options"] = [list(kv) for kv in self.options]
        if self.amp != "none":
            fields["amp"] = self.amp
        key = json.dumps(fields, sort_keys=True, separators=(",", ":"))
        return hashlib.sha1(key.encode()).hexdigest()[:16]

    @property
    def options_label(self) -> str | None:
        """'mixer=bi_bi' (the `model_options` column), None without options."""
        return ",".join(f"{k}={v}" for k, v in self.options) or None

    @property
    def unit_key(self) -> tuple:
        """One child process per (model, device)."""
        return (self.model, self.device)

    @property
    def unit_name(self) -> str:
        return unit_name(self.model, self.device)

    @property
    def series_key(self) -> tuple:
        """Everything but the token count: an OOM skips the larger token counts of the same series."""
        return (self.model, self.options, self.batch, self.dtype, self.device, self.attn_impl, self.scan_impl,
                self.protocol, self.amp)

    @property
    def variant(self) -> str:
        """Short label of the series within its model: 'eager', 'sdpa b4 paper', ..."""
        parts = [p for p in (self.options_label, self.attn_impl, self.scan_impl) if p]
        if self.batch != 1:
            parts.append(f"b{self.batch}")
        if self.dtype != "float32":
            parts.append(self.dtype)
        if self.amp != "none":
            parts.append(f"amp-{self.amp}")
        if self.protocol != "steady":
            parts.append(self.protocol)
        return " ".join(parts)

    @property
    def label(self) -> str:
        return f"{self.model} {self.variant} {self.n_tokens} tok".replace("  ", " ")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @property
    def model_kwargs(self) -> dict:
        """What create_model gets besides input_frames: the options and the kernel choices."""
        return model_kwargs(self.options, self.attn_impl, self.scan_impl)


def unit_name(model: str, device: str) -> str:
    """`<model>-<device>`: the name of a unit's child log and, on a cluster, of its job's shard."""
    return f"{model}-{device.replace(':', '')}"


def model_kwargs(options, attn_impl: str | None, scan_impl: str | None) -> dict:
    """create_model keyword arguments of a case: its model options, and the kernels the model has."""
    kernels = {k: v for k, v in (("attn_impl", attn_impl), ("scan_impl", scan_impl)) if v is not None}
    return {**dict(options), **kernels}


def run_order(case: Case) -> tuple:
    return (case.unit_key, tuple("" if v is None else str(v) for v in case.series_key), case.n_tokens, case.frames)


def group_units(cases: list[Case]) -> list[list[Case]]:
    """Cases grouped by unit (one child each), order kept; within a unit, by series then tokens."""
    units: dict[tuple, list[Case]] = {}
    for case in cases:
        units.setdefault(case.unit_key, []).append(case)
    return [sorted(u, key=run_order) for u in units.values()]
