"""Append-only JSON-lines files: one fsynced write per call, torn lines skipped on read.

Every record file of a run (results, samples, events, sessions, shards) goes through these two
functions, so a crash at any moment loses at most the records of the call in flight.
"""

from __future__ import annotations

import json
import os
from pathlib import Path


def append_jsonl(path: Path, records: list[dict]) -> None:
    """Append records as one write, then fsync: a crash loses at most this call's records.

    A previous writer killed mid-line leaves a line without its newline; start on a fresh line so
    that line stays the only casualty.
    """
    if not records:
        return
    text = "".join(json.dumps(r, default=str) + "\n" for r in records)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        size = os.fstat(fd).st_size
        if size:
            with open(path, "rb") as f:
                f.seek(size - 1)
                if f.read(1) != b"\n":
                    text = "\n" + text
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def read_jsonl(path: Path) -> list[dict]:
    """Every complete record; a torn line (a writer killed mid-write) is skipped."""
    if not Path(path).exists():
        return []
    records = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return records
