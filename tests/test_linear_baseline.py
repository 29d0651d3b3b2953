"""The fbank-statistics logistic-regression floor (bench/accuracy/linear_baseline.py)."""

from __future__ import annotations

import pytest
import torch

from bench.accuracy.linear_baseline import clip_statistics, fit_logistic, main
from bench.data import build_task
from models.errors import UserInputError


def test_clip_statistics_are_per_bin_mean_and_std_over_time():
    x = torch.randn(3, 50, 128)
    s = clip_statistics(x)
    assert s.shape == (3, 256)
    torch.testing.assert_close(s[:, :128], x.mean(1))
    torch.testing.assert_close(s[:, 128:], x.std(1))


def test_logistic_fit_separates_classes_that_differ_only_in_temporal_spread():
    """Classes with equal means and different per-bin variance: only the std half can tell them apart."""
    g = torch.Generator().manual_seed(0)
    n, classes = 240, 3
    y = torch.arange(n) % classes
    bins = torch.randint(0, 128, (classes, 8), generator=g)
    wide = torch.zeros(classes, 128)
    wide[torch.arange(classes)[:, None], bins] = 2.0
    scale = (1.0 + wide[y]).unsqueeze(1)  # (n, 1, 128): each class's bins spread 3x wider
    x = torch.randn(n, 40, 128, generator=g) * scale
    f = clip_statistics(x)
    f = (f - f.mean(0)) / f.std(0)
    w, b = fit_logistic(f[:180], y[:180], classes, steps=200)
    accuracy = float(((f[180:] @ w + b).argmax(-1) == y[180:]).float().mean())
    assert accuracy > 0.9


def test_cli_table_on_a_small_build_and_one_line_error_when_unbuilt(tmp_path, capsys):
    assert main(["--tasks", "kws10", "--small", "--cache", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err and "data build" in err
    try:
        build_task("kws10", cache=tmp_path, small=True)
    except UserInputError as err:  # espeak-ng / flite missing: the install command is in the message
        pytest.skip(f"cannot build kws10 --small: {err}")
    out = tmp_path / "table.md"
    assert main(["--tasks", "kws10", "--small", "--cache", str(tmp_path), "--out", str(out)]) == 0
    lines = out.read_text().splitlines()
    assert lines[0].startswith("| task | split | accuracy")
    assert [line.split("|")[2].strip() for line in lines[2:]] == ["val", "test"]
    assert all(0.0 <= float(line.split("|")[3]) <= 1.0 for line in lines[2:])
