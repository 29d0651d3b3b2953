"""Hostile but realistic use of the command line: two sessions on one run directory, output paths that
cannot be written, absurd numbers. Each answer is one `error:` line and exit status 2, nothing lost."""

from __future__ import annotations

import json

import pytest

from bench import cli
from bench.store.run_lock import LOCK_FILE, RunLock
from models.errors import UserInputError


def one_error_line(capsys) -> str:
    err = [line for line in capsys.readouterr().err.strip().splitlines() if line]
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def test_a_second_session_on_a_locked_run_directory_is_refused(tmp_path, capsys):
    run = tmp_path / "run"
    with RunLock(run):  # another session (this process, through its own lock) holds it
        code = cli.main(["sweep", "ci", "--out", str(run), "--quiet", "--no-table"])
        line = one_error_line(capsys)
    assert code == 2 and "in use by another session" in line and "pid" in line
    assert not (run / "results.jsonl").exists()  # nothing ran


def test_a_stale_lock_of_a_dead_process_is_taken_over(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / LOCK_FILE).write_text(json.dumps({"pid": 2**22 + 1, "host": "gone", "argv": ["old"]}))
    with RunLock(run):  # no process holds the flock: the kernel released it with its owner
        assert json.loads((run / LOCK_FILE).read_text())["argv"] != ["old"]
    with RunLock(run):  # and released again on exit
        pass


def test_lock_names_its_holder(tmp_path):
    with RunLock(tmp_path):
        with pytest.raises(UserInputError, match=r"pid \d+ on .*, since "):
            with RunLock(tmp_path):
                pass


def test_an_output_path_that_cannot_be_written_is_one_line(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    code = cli.main(["sweep", "ci", "--out", str(blocker / "run"), "--quiet", "--no-table"])
    line = one_error_line(capsys)
    assert code == 2 and "Not a directory" in line and str(blocker / "run") in line


def test_a_file_given_as_the_run_directory_is_refused(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    assert cli.main(["sweep", "ci", "--out", str(blocker), "--quiet", "--no-table"]) == 2
    assert "is not a run directory" in one_error_line(capsys)


@pytest.mark.parametrize("argv", [
    ["estimate", "--model", "ssast", "--size", "tiny", "--tokens", "0"],
    ["estimate", "--model", "ssast", "--size", "tiny", "--tokens", "-3"],
    ["estimate", "--model", "ssast", "--size", "tiny", "--tokens", "512", "--batch", "0"],
    ["estimate", "--model", "ssast", "--size", "tiny", "--tokens", "512", "--fstride", "0"],
    ["scanbench", "--repeats", "0"],
    ["scanbench", "--lengths", "nan"],
    ["scanbench", "--slow-seconds", "inf"],
    ["finetune", "--model", "ssamba", "--task", "kws", "--out", "x", "--lr", "nan"],
    ["pretrain", "--model", "ssamba", "--out", "x.pth", "--steps", "-1"],
])
def test_absurd_numbers_on_the_command_line_are_refused(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "error: argument" in err and "Traceback" not in err


def test_a_token_count_no_device_could_hold_is_one_line(capsys):
    code = cli.main(["estimate", "--model", "ssast", "--size", "tiny", "--tokens", "1000000000", "--batch", "4",
                     "--attn-impl", "eager"])
    assert code == 2 and "2^63" in one_error_line(capsys)
