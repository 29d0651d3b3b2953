"""Where results live: the row schema, append-only JSON-lines files, run directories and cluster shards.

The public entry points for reading results:

    from bench.store import load, load_runs   # a run directory or results file -> DataFrame
"""

from bench.store.run_store import load, load_runs

__all__ = ["load", "load_runs"]
