"""RunSettings: how every case of a run is measured, handed to each measuring child and cluster job.

Nothing here is part of a case's identity (a case_id never depends on it): the protocol settings,
threads, memory cap, timeout, seed, TF32, plugins and extra metric producers, checkpoints and the
session's budget. Frozen and picklable: it crosses process boundaries (spawned children, submitit
jobs), so its field names are kept stable for jobs pickled by older versions.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bench.harness.budget import Budget
from bench.harness.config import SweepConfig
from bench.harness.plugins import absolute_plugin
from bench.measure.protocol_settings import PaperConfig, SteadyConfig


@dataclass(frozen=True)
class RunSettings:
    run_id: str
    steady: SteadyConfig = SteadyConfig()
    paper: PaperConfig = PaperConfig()
    threads: int = 0
    memory_cap_bytes: int | None = None
    timeout_s: float = 600.0
    skip_after_timeout: bool = True
    seed: int = 0
    tf32: str = "default"
    cpu_allocator: str = "glibc"
    track_tensor_bytes: bool = True
    extra_metrics: tuple[str, ...] = ()
    plugins: tuple[str, ...] = ()
    checkpoints: tuple[tuple[str, str], ...] = ()  # (model name, checkpoint path)
    budget_deadline: float | None = None  # time.time() after which no case starts (None: no budget)

    @classmethod
    def from_config(cls, cfg: SweepConfig, run_id: str) -> RunSettings:
        return cls(run_id=run_id, steady=cfg.steady, paper=cfg.paper, threads=cfg.threads,
                   budget_deadline=Budget.starting_now(cfg.budget_s).deadline,
                   memory_cap_bytes=cfg.memory_cap_bytes, timeout_s=cfg.timeout_s,
                   skip_after_timeout=cfg.skip_after_timeout, seed=cfg.seed, tf32=cfg.tf32,
                   cpu_allocator=cfg.cpu_allocator,
                   track_tensor_bytes=cfg.track_tensor_bytes, extra_metrics=cfg.extra_metrics,
                   checkpoints=tuple((m, str(Path(p).resolve())) for m, p in sorted(cfg.checkpoints.items())),
                   plugins=tuple(absolute_plugin(p) for p in cfg.plugins)
                   + tuple(m for m in cfg.models if ":" in m))  # model specs: children import them too

    @property
    def budget(self) -> Budget:
        return Budget(self.budget_deadline)
