"""One writer per run directory: an exclusive lock held for a whole session that writes into it.

Two sweeps writing to the same `--out` at once would both run everything and interleave their rows.
A session takes `RunLock(run_dir)` before it writes anything; a second one is refused with one line
naming the process that holds it (pid, host, command, start time, from the lock file). The lock is
`flock` on RUN_DIR/.lock: the kernel releases it when its process dies (kill -9 included), so a
stale lock file left by a dead process is simply taken over by the next session. Cluster jobs write
only their own shards (bench/store/shards.py) and take no lock; the sweep that waits for them holds it.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
from pathlib import Path

from bench.store.schema import now_iso
from models.errors import UserInputError

LOCK_FILE = ".lock"


class RunLock:
    def __init__(self, run_dir: str | Path):
        self.path = Path(run_dir) / LOCK_FILE
        self._fd: int | None = None

    def __enter__(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = self._holder(fd)
            os.close(fd)
            raise UserInputError(f"{self.path.parent} is in use by another session ({holder}); wait for it to end, "
                                 f"or choose another --out") from None
        os.ftruncate(fd, 0)  # a stale holder's record (its process is gone: the kernel released its lock)
        os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": now_iso(),
                                 "argv": sys.argv}).encode())
        self._fd = fd
        return self

    @staticmethod
    def _holder(fd: int) -> str:
        try:
            info = json.loads(os.pread(fd, 4096, 0) or b"{}")
            return (f"pid {info.get('pid')} on {info.get('host')}, since {info.get('started')}: "
                    f"{' '.join(map(str, info.get('argv') or [])) or '?'}")
        except (OSError, ValueError):
            return "a process whose record is unreadable"

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
