"""A run directory: its files, the latest attempt of each case, and loading results into pandas.

    results.jsonl    append-only rows, one JSON object per line, written and fsynced once per case
    samples.jsonl    raw timing samples, one line per case attempt (cold call, warm-up, timed calls)
    events.jsonl     run markers: session/child/case start and end, written by the orchestrating parent
    env.json         the environment of the latest session (sessions.jsonl keeps every session's)
    run.json         run id, config name and resolved config
    results.csv, results.parquet   export of results.jsonl, the latest attempt of each case only
    logs/            each child process's stdout/stderr

Rows follow bench/store/schema.py. pandas is imported only by the functions that build tables.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from bench.store.jsonl import append_jsonl, read_jsonl
from bench.store.schema import COLUMNS, SCHEMA_VERSION, now_iso, to_frame


def latest_attempts(rows: list[dict]) -> list[dict]:
    """Rows of the last attempt of each case (file order: later lines are later attempts)."""
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
        self.dir.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(exist_ok=True)
        if self.manifest.exists():
            run_id = json.loads(self.manifest.read_text())["run_id"]
        else:
            run_id = self.dir.name
            self.manifest.write_text(json.dumps({"run_id": run_id, "config_name": config_name, "created": now_iso(),
                                                 "schema_version": SCHEMA_VERSION, "config": config}, indent=2) + "\n")
        self.env.write_text(json.dumps(env, indent=2, default=str) + "\n")
        append_jsonl(self.sessions, [{"started": now_iso(), "env": env, "config": config}])
        return run_id

    def event(self, event: str, **fields) -> None:
        append_jsonl(self.events, [{"t": now_iso(), "event": event, **fields}])

    def rows(self) -> list[dict]:
        return read_jsonl(self.results)

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
    """A run directory, results.parquet/.csv/.jsonl -> DataFrame (latest attempt per case)."""
    import pandas as pd

    path = Path(path)
    if path.is_dir():  # a run directory, or a reference copy of one that keeps only its results.csv
        path = next((path / name for name in RESULT_FILES if (path / name).exists()), path / "results.jsonl")
    if path.suffix == ".jsonl":
        return to_frame(latest_attempts(read_jsonl(path)))
    df = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    for col in COLUMNS:  # files written before a column was added have it as null
        if col not in df:
            df[col] = None
    df = df[list(COLUMNS) + [c for c in df.columns if c not in COLUMNS]]
    return df.astype({col: dtype for col, (dtype, _) in COLUMNS.items()})


def load_runs(paths):
    """Several run directories or files (e.g. a sweep's latency rows and an accuracy run's rows of the
    same models) -> one DataFrame, each loaded with `load`."""
    import pandas as pd

    frames = [load(p) for p in paths]
    return pd.concat(frames, ignore_index=True) if frames else to_frame([])
