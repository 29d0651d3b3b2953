"""`ssamba-bench scanbench` end to end on tiny lengths: the table, the JSON rows, the arguments; the bytes
a scan moves, against hand counts."""

from __future__ import annotations

import argparse
import json

import pytest
import torch

from bench.cli import scanbench
from bench.measure.scan_kernels import make_inputs, scan_bytes_moved
from models.errors import UserInputError
from models.scan.cpu import cpu_ext_available


def parse(*argv):
    parser = argparse.ArgumentParser()
    scanbench.add_arguments(parser)
    return parser.parse_args(["--matmul-size", "256", "--copy-mib", "8", *argv])


def test_scanbench_table_and_json(tmp_path, capsys):
    out = tmp_path / "scan.json"
    args = parse("--lengths", "40,70", "--dim", "24", "--repeats", "2", "--json", str(out))
    assert scanbench.run(args) == 0
    text = capsys.readouterr().out
    assert "yardstick: fp32 matmul" in text and "fp32 copy 8 MiB" in text and "speed-up" in text
    assert "MB moved" in text and "% copy" in text
    payload = json.loads(out.read_text())
    impls = ["reference", "chunked"] + (["cpu_cpp"] if cpu_ext_available() else [])
    assert [(r["L"], r["impl"]) for r in payload["rows"]] == [(L, i) for L in (40, 70) for i in impls]
    for row in payload["rows"]:
        assert row["median_s"] > 0 and row["n_samples"] == 2 and row["gflops"] > 0
        assert row["max_abs_err_vs_reference"] < 1e-4
        assert row["speedup_vs_reference"] > 0
        # B=1, E=24, N=16, fp32, the CLI's (B, N, L) B and C: 4 (B, E, L) tensors, 2 (B, N, L), A, D, delta_bias
        assert row["bytes_moved"] == (4 * 24 * row["L"] + 2 * 16 * row["L"] + 24 * 16 + 2 * 24) * 4
        assert row["gb_per_s"] == pytest.approx(row["bytes_moved"] / row["median_s"] / 1e9, rel=1e-12)
        assert row["pct_of_copy"] == pytest.approx(100 * row["gb_per_s"] * 1e9 / payload["copy_bytes_per_s"],
                                                   rel=1e-12)
    assert payload["matmul_gflops"] > 0 and payload["copy_bytes_per_s"] > 0 and "torch_version" in payload["env"]


def test_scanbench_backward_and_contiguous(capsys):
    assert scanbench.run(parse("--lengths", "33", "--dim", "16", "--repeats", "1", "--impls", "chunked",
                               "--backward", "--contiguous")) == 0
    assert "forward+backward" in capsys.readouterr().out


def test_scanbench_rejects_bad_input():
    with pytest.raises(UserInputError, match="unknown backend"):
        scanbench.run(parse("--impls", "fastest", "--lengths", "8"))
    for bad in (["--lengths", "0"], ["--lengths", "nan"], ["--repeats", "0"], ["--batch", "0"], ["--dim", "-1"],
                ["--slow-seconds", "nan"], ["--matmul-size", "0"], ["--threads", "-1"], ["--copy-mib", "0"],
                ["--copy-mib", "1.5"]):
        with pytest.raises(SystemExit):  # argparse's one error line, exit status 2
            parse(*bad)


def test_scanbench_is_a_cli_verb():
    from bench import cli

    assert "scanbench" in cli.VERBS  # a verb that is not wired in fails here, it does not skip
    assert cli.main(["scanbench", "--lengths", "16", "--dim", "16", "--repeats", "1", "--impls", "reference",
                     "--matmul-size", "256"]) == 0


# the hand count's small case: B=2, E=8, N=4, L=10, fp32
NB, E, N, L = 2, 8, 4, 10
BEL, NL = NB * E * L * 4, NB * N * L * 4  # bytes of one (B, E, L) and one (B, N, L) fp32 tensor
PARAMS = (E * N + E + E) * 4  # A, D, delta_bias


def small_inputs(**overrides):
    inputs = make_inputs(NB, E, N, L, device="cpu", seed=0, contiguous=False)
    inputs.update(overrides)
    return inputs


def test_scan_bytes_forward_hand_count():
    inputs = small_inputs()
    assert inputs["B"].shape == (NB, N, L) and not inputs["B"].is_contiguous()  # views count their elements only
    assert inputs["B"].untyped_storage().nbytes() > NL
    assert scan_bytes_moved(inputs, backward=False) == 3 * BEL + 2 * NL + PARAMS + BEL  # u, delta, z in; y out
    contiguous = make_inputs(NB, E, N, L, device="cpu", seed=0, contiguous=True)
    assert scan_bytes_moved(contiguous, backward=False) == scan_bytes_moved(inputs, backward=False)


def test_scan_bytes_grouped_b_and_c():
    groups = 3
    bc = torch.randn(NB, groups, N, L)
    inputs = small_inputs(B=bc, C=bc.clone())
    assert scan_bytes_moved(inputs, backward=False) == 3 * BEL + 2 * groups * NL + PARAMS + BEL


def test_scan_bytes_without_z_or_d():
    assert scan_bytes_moved(small_inputs(z=None), backward=False) == 2 * BEL + 2 * NL + PARAMS + BEL
    assert scan_bytes_moved(small_inputs(D=None), backward=False) == 3 * BEL + 2 * NL + PARAMS - E * 4 + BEL
    no_z = small_inputs()
    del no_z["z"]  # a missing key is an absent input too
    assert scan_bytes_moved(no_z, backward=False) == 2 * BEL + 2 * NL + PARAMS + BEL


def test_scan_bytes_dtypes_and_backward():
    inputs = small_inputs()
    reads = 3 * BEL + 2 * NL + PARAMS
    # forward, then the backward: read dout (y's size) and every input again, write one gradient per input
    assert scan_bytes_moved(inputs, backward=True) == (reads + BEL) + (BEL + reads) + reads
    assert scan_bytes_moved(small_inputs(z=None), backward=True) == 3 * (reads - BEL) + 2 * BEL
    half = small_inputs(u=inputs["u"].half())  # y in u's dtype: u and y at 2 bytes an element
    assert scan_bytes_moved(half, backward=False) == (reads - BEL // 2) + BEL // 2
