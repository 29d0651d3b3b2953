"""Shared fixtures. `ci_run_dir`: one real ci sweep (bench/configs/ci.toml, through the CLI) per test
session, for every test that needs a results table; copy it before changing anything in it."""

from __future__ import annotations

import pytest

from bench import cli


@pytest.fixture(scope="session")
def ci_run_dir(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("ci_sweep") / "run"
    assert cli.main(["sweep", "ci", "--out", str(run_dir), "--quiet", "--no-table"]) == 0
    return run_dir
