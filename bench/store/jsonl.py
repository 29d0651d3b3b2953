"""Append-only JSON-lines files: one fsynced write per call; on read, what is not a record is skipped.

Every record file of a run (results, samples, events, sessions, shards) goes through these two
functions, so a crash at any moment loses at most the records of the call in flight, and no line a
reader cannot use (torn, foreign bytes, JSON that is not an object, a record its reader refuses) ever
stops a reader: it is skipped, and one warning line names the file and the lines.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

from models.errors import UserInputError

_warned: set[str] = set()  # a file read several times in one process (resume, then export) warns once
MAX_LINES_NAMED = 12  # line numbers a warning lists before "and N more"


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
        data = text.encode()
        while data:  # os.write may write less than asked (a signal, a full disk): finish, or raise
            data = data[os.write(fd, data):]
        os.fsync(fd)
    finally:
        os.close(fd)


def read_jsonl(path: Path, check: Callable[[dict], str | None] | None = None,
               what: str = "records") -> list[dict]:
    """Every record (a JSON object) of the file, in file order; [] when there is no file.

    Skipped: blank lines; a last line without its newline that is not valid JSON (a write in flight,
    or cut short by a kill: expected, so quietly); and, with one warning line on stderr naming the
    file and the lines, every other line that is not UTF-8 JSON, not an object, or that `check`
    refuses (it returns why, or None). A file that cannot be read at all is a UserInputError.
    """
    records, bad = scan_jsonl(path, check)
    if bad:
        warn_once(f"{path}: skipped {len(bad)} line(s) that are not {what}: {describe_lines(bad)}")
    return records


def scan_jsonl(path: Path, check: Callable[[dict], str | None] | None = None) -> tuple[list[dict], list]:
    """(records, [(line number, why it is not one)]): `read_jsonl` without the warning, for a reader
    that says more itself."""
    path = Path(path)
    if not path.exists():
        return [], []
    try:
        data = path.read_bytes()
    except OSError as err:
        raise UserInputError(f"{path}: cannot read it ({err.strerror or err})") from None
    lines = data.split(b"\n")
    records, bad = [], []
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        why = None
        try:
            record = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError:
            why = "not UTF-8 text"
        except (ValueError, RecursionError):  # JSONDecodeError, an absurdly long number, absurd nesting
            if number == len(lines):  # no newline after it: torn by a writer that was killed
                continue
            why = "not valid JSON"
        if why is None:
            why = "not a JSON object" if not isinstance(record, dict) else check(record) if check else None
        if why is None:
            records.append(record)
        else:
            bad.append((number, why))
    return records, bad


def describe_lines(bad: list[tuple[int, str]]) -> str:
    """'lines 3, 7, 9 (line 3: not valid JSON; line 7: not a JSON object)': at most MAX_LINES_NAMED
    numbers, and the first line of each of up to three different reasons."""
    numbers = [n for n, _ in bad]
    shown = ", ".join(map(str, numbers[:MAX_LINES_NAMED]))
    more = f" and {len(numbers) - MAX_LINES_NAMED} more" if len(numbers) > MAX_LINES_NAMED else ""
    first: dict[str, int] = {}
    for n, why in bad:
        first.setdefault(why, n)
    reasons = "; ".join(f"line {n}: {why}" for why, n in list(first.items())[:3])
    return f"{'line' if len(numbers) == 1 else 'lines'} {shown}{more} ({reasons})"


def warn_once(message: str) -> None:
    """One `warning:` line on stderr, once per process for the same message."""
    if message not in _warned:
        _warned.add(message)
        print(f"warning: {message}", file=sys.stderr, flush=True)
