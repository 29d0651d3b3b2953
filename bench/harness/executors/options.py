"""Executor options of a sweep (`--executor`, `--slurm-*`, `--max-parallel`, `--no-wait`), checked up front.

Plain values in, a frozen ClusterOptions out: every mistake is one UserInputError before anything is
submitted. The command line (bench/cli/sweep.py) only maps its flags onto `check_options`' arguments.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass

from models.errors import UserInputError

EXECUTORS = ("local", "submitit-local", "slurm")
SLURM_DEFAULT_TIME_MIN = 240


@dataclass(frozen=True)
class ClusterOptions:
    """The executor and its submission parameters."""

    executor: str = "local"
    partition: str | None = None
    gpus_per_job: int | None = None
    time_min: int | None = None
    cpus_per_task: int | None = None
    constraint: str | None = None
    max_parallel: int | None = None
    wait: bool = True


def parse_time_min(text: str) -> int:
    """Slurm-style time -> whole minutes (rounded up): '90', '02:00:00', '1-00:00:00', '30:00'."""
    m = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text.strip())
    if not m:
        raise UserInputError(f"--slurm-time {text!r}: give minutes, HH:MM:SS or D-HH:MM:SS")
    days, a, b, c = (int(g) if g else None for g in m.groups())
    if b is None and c is None:  # minutes (or D-HH)
        minutes = (days or 0) * 1440 + (a * 60 if days is not None else a)
    elif c is None:  # MM:SS, or D-HH:MM
        minutes = (days * 1440 + a * 60 + b) if days is not None else a + (b > 0)
    else:  # HH:MM:SS
        minutes = (days or 0) * 1440 + a * 60 + b + (c > 0)
    if minutes < 1:
        raise UserInputError(f"--slurm-time {text!r}: must be at least one minute")
    return minutes


def check_options(executor: str = "local", *, partition: str | None = None, gpus_per_job: int | None = None,
                  time: str | None = None, cpus_per_task: int | None = None, constraint: str | None = None,
                  max_parallel: int | None = None, no_wait: bool = False) -> ClusterOptions:
    """The executor options as given on the command line, checked (flag names in the messages)."""
    slurm_only = {"--slurm-partition": partition, "--slurm-gpus-per-job": gpus_per_job, "--slurm-time": time,
                  "--slurm-cpus-per-task": cpus_per_task, "--slurm-constraint": constraint}
    given = [flag for flag, value in slurm_only.items() if value is not None]
    if given and executor != "slurm":
        raise UserInputError(f"{', '.join(given)} only apply with --executor slurm (executor is {executor})")
    if max_parallel is not None and executor == "local":
        raise UserInputError("--max-parallel applies to --executor submitit-local or slurm; the local runner "
                             "runs one unit at a time")
    if max_parallel is not None and max_parallel < 1:
        raise UserInputError(f"--max-parallel must be >= 1, got {max_parallel}")
    if no_wait and executor != "slurm":
        raise UserInputError("--no-wait applies to --executor slurm only")
    for flag, value, least in (("--slurm-gpus-per-job", gpus_per_job, 0), ("--slurm-cpus-per-task", cpus_per_task, 1)):
        if value is not None and value < least:
            raise UserInputError(f"{flag} must be >= {least}, got {value}")
    if executor == "slurm":
        # waiting for the jobs asks squeue (never sacct: accounting is optional); --no-wait only submits
        tools = ("sbatch", "srun") + (() if no_wait else ("squeue",))
        missing = [tool for tool in tools if shutil.which(tool) is None]
        if missing:
            names = " and ".join(missing) if len(missing) < 3 else f"{', '.join(missing[:-1])} and {missing[-1]}"
            raise UserInputError(f"--executor slurm: {names} not found on PATH; run the sweep on a "
                                 f"Slurm login node, or use --executor submitit-local on this machine")
    return ClusterOptions(executor=executor, partition=partition, gpus_per_job=gpus_per_job,
                          time_min=parse_time_min(time) if time else None, cpus_per_task=cpus_per_task,
                          constraint=constraint, max_parallel=max_parallel, wait=not no_wait)
