"""The time budget of one sweep session (`budget_s`): no case starts after it, a case in flight is dropped.

The deadline is wall-clock time (`time.time()`), so it means the same in the parent, in its spawned
children and in a cluster job's process. A case stopped by the budget stays unrecorded: running the
same sweep again resumes it. A cluster job's budget starts when the job starts, not when it was
queued (`starting_now`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Budget:
    deadline: float | None = None  # time.time() after which no case starts; None: no budget

    @classmethod
    def starting_now(cls, seconds: float) -> Budget:
        return cls(time.time() + seconds if seconds else None)

    def spent(self) -> bool:
        return self.deadline is not None and time.time() >= self.deadline
