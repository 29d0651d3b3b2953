"""A run directory: its files, the latest attempt of each case, and loading results into pandas.

    results.jsonl    append-only rows, one JSON object per line, written and fsynced once per case
    samples.jsonl    raw timing samples, one line per case attempt (cold call, warm-up, timed calls)
    events.jsonl     run markers: session/child/case start and end, written by the orchestrating parent
    env.json         the environment of the latest session (sessions.jsonl keeps every session's)
    run.json         run id, config name and resolved config
    results.csv, results.parquet   export of results.jsonl, the latest attempt of each case only
    logs/            each child process's stdout/stderr

Rows follow bench/store/schema.py. pandas is imported only by the functions that build tables.

Reading never trusts the files: `read_rows` keeps only lines that are rows (schema.row_problem) of
attempts whose rows are all there (`attempt_rows`), and says on stderr what it left out; `load` turns
a file it cannot read into one UserInputError.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

from bench.common.vocabulary import STATUSES
from bench.store.jsonl import append_jsonl, describe_lines, scan_jsonl, warn_once
from bench.store.schema import (
    COLUMNS,
    REQUIRED_COLUMNS,
    SCHEMA_VERSION,
    TABLE_COLUMNS,
    now_iso,
    row_problem,
    to_frame,
)
from models.errors import UserInputError

MAX_CASES_NAMED = 6  # unfinished attempts a warning names before "and N more"


def read_rows(path: Path, *, required: bool = False) -> list[dict]:
    """The rows of a results JSON-lines file that count: lines that are rows, of finished attempts.

    A line that is not a row (schema.row_problem) is skipped. An attempt with fewer (or more) rows in
    the file than its `attempt_rows` says was cut short: its rows are left out, so its case counts as
    not run, or as its previous finished attempt, and a resumed sweep runs it again. Rows without
    `attempt_rows` (written before it existed) count as finished. What is left out is named in one
    warning line each; with `required`, a file left with no rows is one UserInputError saying why.
    """
    rows, bad = scan_jsonl(path, row_problem)
    have = Counter(r["attempt_id"] for r in rows)
    declared = {r["attempt_id"]: r["attempt_rows"] for r in rows if r.get("attempt_rows") is not None}
    cut = {a: n for a, n in declared.items() if have[a] != n}
    kept = [r for r in rows if r["attempt_id"] not in cut] if cut else rows
    skipped = f"{len(bad)} line(s) that are not result rows: {describe_lines(bad)}" if bad else ""
    unfinished = ""
    if cut:
        finished = {r["case_id"] for r in kept}
        cases = {r["attempt_id"]: r["case_id"] for r in rows if r["attempt_id"] in cut}
        also = "; another attempt of it finished"
        named = [f"case {cases[a]} ({have[a]} of {n} rows{also if cases[a] in finished else ''})"
                 for a, n in list(cut.items())[:MAX_CASES_NAMED]]
        more = f" and {len(cut) - MAX_CASES_NAMED} more" if len(cut) > MAX_CASES_NAMED else ""
        unfinished = (f"{len(cut)} case attempt(s) whose rows are not all there (a write cut short): "
                      f"{', '.join(named)}{more}; a case without a finished attempt counts as not run, and a "
                      f"resumed sweep runs it again")
    if required and not kept:
        why = "; ".join(w for w in (skipped, unfinished) if w) or "an empty file"
        raise UserInputError(f"{path}: no result rows in it ({why})")
    if skipped:
        warn_once(f"{path}: skipped {skipped}")
    if unfinished:
        warn_once(f"{path}: left out {unfinished}")
    return kept


def latest_attempts(rows: list[dict]) -> list[dict]:
    """Rows of the last attempt of each case (file order: later lines are later attempts); `rows` as
    `read_rows` gives them."""
    last: dict[str, str] = {}
    for row in rows:
        last[row["case_id"]] = row["attempt_id"]
    return [r for r in rows if last.get(r["case_id"]) == r["attempt_id"]]


def case_statuses(rows: list[dict]) -> dict[str, str]:
    """case_id -> status of its latest attempt."""
    return {r["case_id"]: r["status"] for r in latest_attempts(rows) if r["metric"] == "status"}


class RunStore:
    """The files of one run directory (see the module docstring)."""

    def __init__(self, run_dir: str | Path):
        self.dir = Path(run_dir)
        self.results = self.dir / "results.jsonl"
        self.samples = self.dir / "samples.jsonl"
        self.events = self.dir / "events.jsonl"
        self.env = self.dir / "env.json"
        self.sessions = self.dir / "sessions.jsonl"
        self.manifest = self.dir / "run.json"
        self.csv = self.dir / "results.csv"
        self.parquet = self.dir / "results.parquet"
        self.logs = self.dir / "logs"

    def open(self, config_name: str, config: dict, env: dict) -> str:
        """Create or reopen the run; returns its run id (kept across resumed sessions)."""
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            self.logs.mkdir(exist_ok=True)
            if self.manifest.exists():
                run_id = self.recorded_run_id()
            else:
                run_id = self.dir.name
                self.manifest.write_text(json.dumps({"run_id": run_id, "config_name": config_name, "created": now_iso(),
                                                     "schema_version": SCHEMA_VERSION, "config": config},
                                                    indent=2) + "\n")
            self.env.write_text(json.dumps(env, indent=2, default=str) + "\n")
            append_jsonl(self.sessions, [{"started": now_iso(), "env": env, "config": config}])
        except OSError as err:  # a file where the run directory should be, a full disk, no permission
            raise UserInputError(f"{self.dir}: cannot write the run directory ({err.strerror or err}); "
                                 f"choose another --out") from None
        return run_id

    def recorded_run_id(self) -> str:
        """The run id run.json records; a run.json that does not hold one is a UserInputError."""
        try:
            manifest = json.loads(self.manifest.read_bytes().decode("utf-8"))
        except (OSError, UnicodeDecodeError, ValueError, RecursionError) as err:
            why = err.strerror if isinstance(err, OSError) else "not UTF-8 JSON"
            raise UserInputError(f"{self.manifest}: not a run.json of this suite ({why}); choose another --out") \
                from None
        run_id = manifest.get("run_id") if isinstance(manifest, dict) else None
        if not isinstance(run_id, str) or not run_id:
            raise UserInputError(f"{self.manifest}: not a run.json of this suite (no run_id); choose another --out")
        return run_id

    def event(self, event: str, **fields) -> None:
        append_jsonl(self.events, [{"t": now_iso(), "event": event, **fields}])

    def rows(self) -> list[dict]:
        return read_rows(self.results)

    def statuses(self) -> dict[str, str]:
        return case_statuses(self.rows())

    def export(self):
        """Write results.csv and results.parquet (latest attempt per case); returns the DataFrame."""
        df = to_frame(latest_attempts(self.rows()))
        tmp_csv, tmp_pq = self.csv.with_suffix(".csv.tmp"), self.parquet.with_suffix(".parquet.tmp")
        df.to_csv(tmp_csv, index=False)
        df.to_parquet(tmp_pq, index=False)
        os.replace(tmp_csv, self.csv)
        os.replace(tmp_pq, self.parquet)
        return df


RESULT_FILES = ("results.jsonl", "results.parquet", "results.csv")  # what `load` reads from a directory


def load(path: str | Path):
    """A run directory, results.parquet/.csv/.jsonl -> DataFrame (latest attempt per case).

    Whatever the file holds, the answer is a table that follows the schema's columns and dtypes, or
    one UserInputError: no such file, unreadable, not a results table, no rows."""
    path = Path(path)
    if not path.exists():
        raise UserInputError(f"{path}: no such run directory or results file")
    if path.is_dir():  # a run directory, or a reference copy of one that keeps only its results.csv
        found = next((path / name for name in RESULT_FILES if (path / name).exists()), None)
        if found is None:
            raise UserInputError(f"{path}: no results here (none of {', '.join(RESULT_FILES)})")
        path = found
    if path.is_dir():
        raise UserInputError(f"{path}: a directory, not a results file")
    if path.suffix == ".jsonl":
        return to_frame(latest_attempts(read_rows(path, required=True)))
    return _load_table(path)


def _load_table(path: Path):
    """A results .parquet or .csv export -> DataFrame with the schema's columns and dtypes."""
    import pandas as pd

    try:
        df = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    except (ValueError, TypeError, OSError, NotImplementedError) as err:
        # pandas and pyarrow name a damaged file by many exception types (ParserError, EmptyDataError,
        # UnicodeDecodeError, ArrowInvalid, ...): to the user each means the same thing
        why = err.strerror if isinstance(err, OSError) and err.strerror else \
            (str(err).splitlines() or [type(err).__name__])[0][:160]
        raise UserInputError(f"{path}: not a readable results table ({why})") from None
    missing = [c for c in TABLE_COLUMNS if c not in df.columns]
    if missing:
        raise UserInputError(f"{path}: not a results table (missing column(s) {', '.join(missing)})")
    for col in COLUMNS:  # files written before a column was added have it as null
        if col not in df:
            df[col] = None
    df = df[list(COLUMNS) + [c for c in df.columns if c not in COLUMNS]]
    for col, (dtype, _) in COLUMNS.items():
        try:
            df[col] = df[col].astype(dtype)
        except (ValueError, TypeError, OverflowError):
            raise UserInputError(f"{path}: not a results table (column {col} does not hold "
                                 f"{'numbers' if dtype in ('Int64', 'Float64') else dtype} values)") from None
    # a row without what identifies it, or with an unknown status, is not a row (as in read_rows)
    bad = df[list(REQUIRED_COLUMNS)].isna().any(axis=1) | ~df["status"].isin(STATUSES).fillna(False)
    if bad.any():
        csv = path.suffix != ".parquet"
        first = 2 if csv else 1  # CSV: line numbers (1-based, after the header); Parquet: row numbers
        numbers = [str(i + first) for i in df.index[bad][:12]]
        more = f" and {int(bad.sum()) - len(numbers)} more" if int(bad.sum()) > len(numbers) else ""
        warn_once(f"{path}: skipped {int(bad.sum())} row(s) that are not result rows (a required column empty, or "
                  f"an unknown status): {'line' if csv else 'row'}{'s' if len(numbers) > 1 else ''} "
                  f"{', '.join(numbers)}{more}")
        df = df[~bad].reset_index(drop=True)
    if df.empty:
        raise UserInputError(f"{path}: no result rows in it")
    return df


def load_runs(paths):
    """Several run directories or files (e.g. a sweep's latency rows and an accuracy run's rows of the
    same models) -> one DataFrame, each loaded with `load`."""
    import pandas as pd

    frames = [load(p) for p in paths]
    return pd.concat(frames, ignore_index=True) if frames else to_frame([])
