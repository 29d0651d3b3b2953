"""`ssamba-bench scanbench` end to end on tiny lengths: the table, the JSON rows, the arguments."""

from __future__ import annotations

import argparse
import json

import pytest

from bench.cli import scanbench
from models.errors import UserInputError
from models.scan.cpu import cpu_ext_available


def parse(*argv):
    parser = argparse.ArgumentParser()
    scanbench.add_arguments(parser)
    return parser.parse_args(["--matmul-size", "256", *argv])


def test_scanbench_table_and_json(tmp_path, capsys):
    out = tmp_path / "scan.json"
    args = parse("--lengths", "40,70", "--dim", "24", "--repeats", "2", "--json", str(out))
    assert scanbench.run(args) == 0
    text = capsys.readouterr().out
    assert "yardstick: fp32 matmul" in text and "speed-up" in text
    payload = json.loads(out.read_text())
    impls = ["reference", "chunked"] + (["cpu_cpp"] if cpu_ext_available() else [])
    assert [(r["L"], r["impl"]) for r in payload["rows"]] == [(L, i) for L in (40, 70) for i in impls]
    for row in payload["rows"]:
        assert row["median_s"] > 0 and row["n_samples"] == 2 and row["gflops"] > 0
        assert row["max_abs_err_vs_reference"] < 1e-4
        assert row["speedup_vs_reference"] > 0
    assert payload["matmul_gflops"] > 0 and "torch_version" in payload["env"]


def test_scanbench_backward_and_contiguous(capsys):
    assert scanbench.run(parse("--lengths", "33", "--dim", "16", "--repeats", "1", "--impls", "chunked",
                               "--backward", "--contiguous")) == 0
    assert "forward+backward" in capsys.readouterr().out


def test_scanbench_rejects_bad_input():
    with pytest.raises(UserInputError, match="unknown backend"):
        scanbench.run(parse("--impls", "fastest", "--lengths", "8"))
    for bad in (["--lengths", "0"], ["--lengths", "nan"], ["--repeats", "0"], ["--batch", "0"], ["--dim", "-1"],
                ["--slow-seconds", "nan"], ["--matmul-size", "0"], ["--threads", "-1"]):
        with pytest.raises(SystemExit):  # argparse's one error line, exit status 2
            parse(*bad)


def test_scanbench_is_a_cli_verb():
    from bench import cli

    assert "scanbench" in cli.VERBS  # a verb that is not wired in fails here, it does not skip
    assert cli.main(["scanbench", "--lengths", "16", "--dim", "16", "--repeats", "1", "--impls", "reference",
                     "--matmul-size", "256"]) == 0
