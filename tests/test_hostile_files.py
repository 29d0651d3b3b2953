"""Every file a verb reads, given binary, non-UTF-8, empty, truncated, a directory, or unreadable: one
`error:` line and exit 2 (or, where the damage is a torn or foreign line of a results file, the rest
read with at most one `warning:` line), never a traceback.

Tests run as root, so "unreadable" is simulated: opening that one path raises PermissionError.
"""

from __future__ import annotations

import builtins
import io
import shutil
from pathlib import Path

import pandas as pd
import pytest

from bench import cli

REPO = Path(__file__).resolve().parent.parent
BASELINE = REPO / "results" / "baseline" / "ci"
CI_TOML = REPO / "bench" / "configs" / "ci.toml"
CI_POLICY = REPO / "bench" / "policies" / "ci.toml"
KINDS = ("binary", "non_utf8", "empty", "truncated", "directory", "unreadable")


def _insert_line(valid: bytes, foreign: bytes) -> bytes:
    """`valid` with a line of `foreign` bytes after its first third (at a line end, so every valid
    line stays whole: how many rows a case has must not decide what the test sees)."""
    at = valid.find(b"\n", len(valid) // 3) + 1 or len(valid)
    return valid[:at] + foreign + b"\n" + valid[at:]


def hostile(path: Path, kind: str, valid: bytes, monkeypatch, cut: int | None = None) -> Path:
    """Write the `kind` of damaged copy of `valid` at `path`."""
    if kind == "directory":
        path.mkdir(parents=True)
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {
        "binary": bytes(range(256)) * 8,
        "non_utf8": _insert_line(valid, b"caf\xe9 \xff\xfe"),
        "empty": b"",
        "truncated": valid[: cut if cut is not None else len(valid) // 2],
        "unreadable": valid,
    }[kind]
    path.write_bytes(data)
    if kind == "unreadable":
        deny(path, monkeypatch)
    return path


def deny(path: Path, monkeypatch) -> None:
    """Opening `path` (by any of the ways the suite reads files) raises PermissionError."""
    target = str(path.resolve())

    def guarded(real):
        def opener(file, *args, **kwargs):
            if isinstance(file, (str, Path)) and str(Path(file).resolve()) == target:
                raise PermissionError(13, "Permission denied", str(file))
            return real(file, *args, **kwargs)
        return opener

    monkeypatch.setattr(builtins, "open", guarded(builtins.open))
    monkeypatch.setattr(io, "open", guarded(io.open))
    monkeypatch.setattr(pd, "read_parquet", guarded(pd.read_parquet))


def run(argv: list[str], capsys) -> tuple[int, list[str], str]:
    code = cli.main(argv)
    captured = capsys.readouterr()
    err = [ln for ln in captured.err.splitlines() if ln.strip()]
    assert "Traceback" not in captured.err + captured.out
    return code, err, captured.out


def assert_one_error(code: int, err: list[str]) -> None:
    assert code == 2, (code, err)
    assert len(err) == 1 and err[0].startswith("error: "), err


# --- TOML inputs: the sweep config and the compare policy ------------------------------------------

@pytest.mark.parametrize("kind", KINDS)
def test_sweep_config(tmp_path, capsys, monkeypatch, kind):
    valid = CI_TOML.read_bytes()
    config = hostile(tmp_path / "sweep.toml", kind, valid, monkeypatch, cut=valid.index(b"attn_impl") + 4)
    code, err, _ = run(["sweep", str(config), "--out", str(tmp_path / "run"), "--dry-run"], capsys)
    assert_one_error(code, err)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("kind", KINDS)
def test_compare_policy(tmp_path, capsys, monkeypatch, kind):
    valid = CI_POLICY.read_bytes()
    policy = hostile(tmp_path / "policy.toml", kind, valid, monkeypatch, cut=valid.index(b"threshold") + 4)
    code, err, _ = run(["compare", str(BASELINE), str(BASELINE), "--policy", str(policy)], capsys)
    assert_one_error(code, err)


# --- results files given to table, compare and claims --------------------------------------------

def _valid(suffix: str, tmp_path: Path) -> bytes:
    if suffix == ".jsonl":
        return (BASELINE / "results.jsonl").read_bytes()
    if suffix == ".csv":
        return (BASELINE / "results.csv").read_bytes()
    out = tmp_path / "valid.parquet"
    pd.read_csv(BASELINE / "results.csv").to_parquet(out, index=False)
    return out.read_bytes()


# Damage a results file can take and still be read: a torn last line / row (skipped, or its case's
# rows incomplete: at most one warning), and in JSON lines a line of foreign bytes (one warning).
READABLE = {(".jsonl", "truncated"), (".jsonl", "non_utf8"), (".csv", "truncated")}
RESULT_CASES = [(s, k) for s in (".jsonl", ".csv", ".parquet") for k in KINDS
                if not (s == ".parquet" and k == "non_utf8")]  # Parquet is binary: "not UTF-8" means nothing


def _check(suffix, kind, code, err):
    if (suffix, kind) in READABLE:
        assert code in (0, 1), (code, err)  # compare may find a case missing; never a crash
        assert len(err) <= 1 and all(ln.startswith("warning: ") for ln in err), err
    else:
        assert_one_error(code, err)


@pytest.mark.parametrize("suffix, kind", RESULT_CASES)
def test_table(tmp_path, capsys, monkeypatch, suffix, kind):
    path = hostile(tmp_path / f"results{suffix}", kind, _valid(suffix, tmp_path), monkeypatch)
    code, err, _ = run(["table", str(path)], capsys)
    _check(suffix, kind, code, err)


@pytest.mark.parametrize("suffix, kind", RESULT_CASES)
def test_compare_results(tmp_path, capsys, monkeypatch, suffix, kind):
    path = hostile(tmp_path / f"results{suffix}", kind, _valid(suffix, tmp_path), monkeypatch)
    for argv in (["compare", str(BASELINE), str(path), "--policy", "ci"],
                 ["compare", str(path), str(BASELINE), "--policy", "ci"]):
        code, err, _ = run(argv, capsys)
        _check(suffix, kind, code, err)


@pytest.mark.parametrize("suffix, kind", [c for c in RESULT_CASES if c[0] != ".parquet"])
def test_claims(tmp_path, capsys, monkeypatch, suffix, kind):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    hostile(run_dir / f"results{suffix}", kind, _valid(suffix, tmp_path), monkeypatch)
    code, err, _ = run(["claims", str(run_dir), "--no-predictions", "--quiet"], capsys)
    _check(suffix, kind, code, err)


# --- the run directory a sweep resumes ----------------------------------------------------------------

@pytest.mark.parametrize("content", [b"\xff\xfe\x00", b"", b"[1, 2]", b'{"config_name": "ci"}', b'{"run_id": 5}',
                                     "directory"])
def test_resumed_run_json(tmp_path, capsys, content):
    run_dir = tmp_path / "run"
    shutil.copytree(BASELINE, run_dir)
    (run_dir / "run.json").unlink()
    if content == "directory":
        (run_dir / "run.json").mkdir()
    else:
        (run_dir / "run.json").write_bytes(content)
    code, err, _ = run(["sweep", "ci", "--out", str(run_dir), "--quiet", "--no-table"], capsys)
    assert_one_error(code, err)
    assert "run.json" in err[0]


def test_results_jsonl_that_is_a_directory(tmp_path, capsys):
    run_dir = tmp_path / "run"
    shutil.copytree(BASELINE, run_dir)
    (run_dir / "results.jsonl").unlink()
    (run_dir / "results.jsonl").mkdir()
    code, err, _ = run(["sweep", "ci", "--out", str(run_dir), "--quiet", "--no-table"], capsys)
    assert_one_error(code, err)
    assert "results.jsonl" in err[0]


@pytest.mark.parametrize("column, cell", [("value", "fast"), ("n_tokens", "1.5"), ("batch", "9" * 30)])
def test_csv_cell_of_the_wrong_kind(tmp_path, capsys, column, cell):
    df = pd.read_csv(BASELINE / "results.csv")
    df[column] = df[column].astype(object)
    df.loc[3, column] = cell
    path = tmp_path / "results.csv"
    df.to_csv(path, index=False)
    code, err, _ = run(["table", str(path)], capsys)
    assert_one_error(code, err)
    assert column in err[0]
