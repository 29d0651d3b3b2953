"""What a measuring child tells its parent, over a one-way pipe: typed messages, one per event.

The child sends, per case, CaseStarted (the parent starts the case's timeout clock), CaseInfo (what
the model resolved: kernels, parameters; kept for the row if the child dies mid-case) and CaseEnded
(the case's rows are on disk: its commit point); and at the end either UnitDone or BudgetSpent.
The parent never learns results through the pipe: rows are in results.jsonl before CaseEnded is sent.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CaseStarted:
    case_id: str
    label: str


@dataclass(frozen=True)
class CaseInfo:
    case_id: str
    info: dict


@dataclass(frozen=True)
class CaseEnded:
    case_id: str
    status: str


@dataclass(frozen=True)
class UnitDone:
    """Every case of the child's list has its rows."""


@dataclass(frozen=True)
class BudgetSpent:
    """The session's budget ran out before the next case; the rest stays unrecorded."""


ChildMessage = CaseStarted | CaseInfo | CaseEnded | UnitDone | BudgetSpent
