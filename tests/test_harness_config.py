"""Sweep configuration and case expansion: parsing, overrides, validation, stable case ids; and bad
input through the real CLI (one `error:` line, exit status 2, nothing run)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from bench import cli
from bench.common.config_fields import CONFIG_DIR, parse_bytes, parse_set
from bench.harness.cases import Case
from bench.harness.config import load_config
from bench.harness.expand import expand
from models.errors import UserInputError
from models.tokenizer import frames_for_tokens, tokens_for_frames

MINIMAL = 'models = ["test_ssast"]\ntokens = [64]\n'


def write(tmp_path: Path, text: str, name: str = "sweep.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize("name", ["default", "paper", "ci", "paper_quick"])
def test_shipped_configs_load(name):
    cfg = load_config(name)
    assert cfg.name == name
    assert Path(cfg.source) == CONFIG_DIR / f"{name}.toml"


def test_default_config_is_the_cpu_main_job():
    cases = expand(load_config("default"))
    assert {c.model for c in cases} == {"ssast_tiny", "ssast_small", "ssamba_tiny", "ssamba_small", "aum_tiny"}
    assert {c.n_tokens for c in cases} == {128, 256, 512, 1024, 2048, 4096, 8192}
    assert {c.attn_impl for c in cases if c.family == "ssast"} == {"eager", "sdpa"}
    assert {c.attn_impl for c in cases if c.family in ("ssamba", "aum")} == {None}
    assert {(c.batch, c.device, c.protocol) for c in cases} == {(1, "cpu", "steady")}
    assert max(c.n_tokens for c in cases if c.size == "small") == 2048  # small models stop at 2048 tokens
    # SSAST x 2 kernels (tiny 7 token counts, small 5), SSAMBA (7 + 5), AuM-tiny (7)
    assert len(cases) == 2 * (7 + 5) + (7 + 5) + 7


def test_paper_config_follows_the_authors():
    cfg = load_config("paper", ["device=cpu"])  # expandable here; the file itself asks for cuda
    cases = expand(cfg)
    ssast_tiny = sorted(c.frames for c in cases if c.model == "ssast_tiny")
    assert ssast_tiny[0] == 1024 and ssast_tiny[1] - ssast_tiny[0] == 512
    assert max(c.n_tokens for c in cases if c.model == "ssast_tiny") == 22016
    assert max(c.n_tokens for c in cases if c.model == "ssamba_tiny") > 22016
    assert {(c.batch, c.dtype, c.protocol, c.attn_impl or "eager") for c in cases} == {(4, "float32", "paper", "eager")}
    assert {c.size for c in cases} == {"tiny", "small", "base"}
    assert load_config("paper").device == ("cuda",)


def test_token_arithmetic_comes_from_the_tokenizer(tmp_path):
    cfg = load_config(write(tmp_path, 'models = ["test_ssast"]\ntokens = [100, 22000]\n'))
    cases = expand(cfg)
    for case in cases:
        assert case.frames == frames_for_tokens(case.n_tokens)
        assert tokens_for_frames(case.frames) == case.n_tokens
    assert {c.n_tokens for c in cases} == {104, 22000}  # 100 rounds up to whole patch columns
    assert max(c.frames for c in cases) == 44000


def test_ranges_and_frames(tmp_path):
    cfg = load_config(write(tmp_path, 'models = ["test_ssast"]\ntokens = { start = 128, stop = 1024, factor = 2 }\n'))
    assert cfg.tokens == (128, 256, 512, 1024)
    cfg = load_config(write(tmp_path, 'models = ["test_ssast"]\nframes = { start = 1024, stop = 2048, step = 512 }\n'))
    assert [c.n_tokens for c in expand(cfg)] == [512, 768, 1024]


def test_set_overrides(tmp_path):
    path = write(tmp_path, MINIMAL)
    cfg = load_config(path, ["tokens=[64,128]", "steady.max_time_s=2", "memory_cap=8GiB", "batch=2"])
    assert cfg.tokens == (64, 128) and cfg.steady.max_time_s == 2.0 and cfg.batch == (2,)
    assert cfg.memory_cap_bytes == 8 * 2**30
    assert load_config(path, ["frames=[1024]"]).frames == (1024,)  # replaces the tokens axis
    assert parse_set("models=[\"a\", \"b\"]") == (["models"], ["a", "b"])
    assert parse_bytes("512MiB") == 512 * 2**20 and parse_bytes("2GB") == 2 * 10**9


def test_families_and_sizes(tmp_path):
    cfg = load_config(write(tmp_path, 'models = ["ssamba", "test_ssast"]\nsizes = ["tiny", "base"]\ntokens = [64]\n'))
    assert sorted({c.model for c in expand(cfg)}) == ["ssamba_base", "ssamba_tiny", "test_ssast"]


def test_case_id_is_stable_and_depends_on_case_parameters_only(tmp_path):
    a = expand(load_config(write(tmp_path, MINIMAL), ["steady.min_repeats=3", "timeout_s=5"]))[0]
    b = expand(load_config(write(tmp_path, MINIMAL, "other.toml"), ["name=other", "memory_cap=1GiB"]))[0]
    assert a.case_id == b.case_id
    fixed = Case(model="ssast_tiny", family="ssast", size="tiny", n_tokens=512, frames=1024, batch=1,
                 dtype="float32", device="cpu", attn_impl="eager", scan_impl=None, protocol="steady")
    assert fixed.case_id == "4135f11d39dc908d"  # pinned: changing the hash breaks resume and compare
    assert dataclasses.replace(fixed, attn_impl="sdpa").case_id != fixed.case_id
    assert dataclasses.replace(fixed, protocol="paper").case_id != fixed.case_id
    assert dataclasses.replace(fixed, options=(("x", 1),)).case_id != fixed.case_id


def test_model_options_sweep_aum_mixers_as_separate_series(tmp_path):
    from bench.store.schema import case_rows

    text = ('models = ["test_aum", "test_ssast"]\ntokens = [32, 64]\n'
            'model_options = { aum = { mixer = ["fo_bi", "bi_bi"] }, test_aum = { d_state = 8 } }\n')
    cases = expand(load_config(write(tmp_path, text)))
    aum = [c for c in cases if c.model == "test_aum"]
    assert sorted({c.options for c in aum}) == [(("d_state", 8), ("mixer", "bi_bi")), (("d_state", 8), ("mixer", "fo_bi"))]
    assert len({c.case_id for c in aum}) == 4 and len({c.series_key for c in aum}) == 2
    assert all(c.options == () for c in cases if c.model == "test_ssast")  # options apply to their model only
    case = next(c for c in aum if ("mixer", "bi_bi") in c.options)
    assert case.model_kwargs == {"d_state": 8, "mixer": "bi_bi", "scan_impl": "auto"}
    assert case_rows(case, run_id="r", env={}, status="ok")[0]["model_options"] == "d_state=8,mixer=bi_bi"
    assert "mixer=bi_bi" in case.label


@pytest.mark.parametrize("options, expected", [
    ("{ test_aum = { mixer = 'nope' } }", "unknown AuM mixer 'nope'"),
    ("{ test_aum = { mixr = 'bi_bi' } }", "unknown option(s) mixr"),
    ("{ aum_tiny = { mixer = 'bi_bi' } }", "model_options names aum_tiny"),
    ("{ test_aum = 3 }", "model_options must be a table"),
])
def test_bad_model_options_are_one_clear_error(tmp_path, options, expected):
    path = write(tmp_path, 'models = ["test_aum"]\ntokens = [32]\n')
    with pytest.raises(UserInputError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        expand(load_config(path, [f"model_options={options}"]))


@pytest.mark.parametrize("text, expected", [
    ('models = ["test_ssast"]\ntokens = [64]\ntokenz = [1]\n', "unknown key 'tokenz'"),
    ('models = ["test_ssast"]\ntokens = [64]\n[steady]\nwarmup = 3\n', "unknown key 'warmup'"),
    ('models = ["ssast_tinyy"]\ntokens = [64]\n', "did you mean ssast_tiny"),
    ('models = ["test_ssast"]\ntokens = [4]\n', "fewer than one column of patches"),
    ('models = ["test_ssast"]\nframes = [8]\n', "fewer than one 16-frame patch"),
    ('models = ["test_ssast"]\ntokens = [64]\nattn_impl = "flash"\n', "unknown attn_impl 'flash'"),
    ('models = ["test_ssast"]\ntokens = [64]\nprotocol = "fast"\n', "unknown protocol 'fast'"),
    ('models = ["test_ssast"]\ntokens = [64]\nbatch = "one"\n', "batch must be an integer"),
    ('models = ["test_ssast"]\ntokens = [64]\nmemory_cap = "lots"\n', "is not a size"),
    ('models = ["test_ssast"]\n', "exactly one of `tokens` or `frames`"),
])
def test_bad_config_is_one_error_line(tmp_path, capsys, text, expected):
    out = tmp_path / "run"
    code = cli.main(["sweep", str(write(tmp_path, text)), "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("error: ") and expected in err[0], err
    assert not out.exists()  # nothing ran


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_cuda_without_cuda_is_an_error(tmp_path, capsys):
    code = cli.main(["sweep", str(write(tmp_path, MINIMAL + 'device = "cuda"\n')), "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "CUDA is not available" in err[0]


@pytest.mark.parametrize("args, expected", [
    (["--set", "tokens"], "expected key=value"),
    (["--set", "tokens=[1,"], "not a valid TOML value"),
    (["--set", "steady.nope=1"], "unknown key 'nope'"),
    (["--retry", "broken"], "unknown status broken"),
])
def test_bad_command_line_is_one_error_line(tmp_path, capsys, args, expected):
    code = cli.main(["sweep", str(write(tmp_path, MINIMAL)), "--out", str(tmp_path / "r"), *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and expected in err[0], err


def test_unknown_config_name(capsys):
    assert cli.main(["sweep", "no_such_config"]) == 2
    err = capsys.readouterr().err
    assert "no config file 'no_such_config'" in err and "default_paper" in err and "paper_quick" in err
    assert "accuracy" not in err  # accuracy configs are not sweeps
    assert cli.main(["sweep", "accuracy_ci"]) == 2
    assert "run it with `ssamba-bench accuracy accuracy_ci`" in capsys.readouterr().err


def test_max_tokens_must_name_a_model_of_the_sweep(tmp_path):
    with pytest.raises(UserInputError, match="max_tokens names ssamba"):
        expand(load_config(write(tmp_path, MINIMAL + "max_tokens = { ssamba = 10 }\n")))


def spec_test_model(**overrides):
    """A model builder from "outside": a sweep names it as 'test_harness_config:spec_test_model'."""
    from models import create_model

    return create_model("test_ssast", **overrides)


def test_a_model_spec_is_a_models_entry(tmp_path):
    cfg = load_config(write(tmp_path, 'models = ["test_harness_config:spec_test_model"]\ntokens = [64]\n'))
    (case,) = [c for c in expand(cfg) if c.attn_impl == "eager"]
    assert case.model == "spec_test_model" and case.family == "ssast"


# --- numeric values: nan, inf, 0, negative and absurdly large, through --set and through TOML ----------

HUGE_INT = str(10**30)
PROBES = ("nan", "inf", "-inf", "0", "-1", "1e300", HUGE_INT, "1.5")
# key -> (a value that must load, the probes that must load too; every other probe is one clear error)
NUMERIC_KEYS = {
    "timeout_s": ("5", ("1.5",)),
    "budget_s": ("60", ("0", "1.5")),  # 0 = no budget
    "threads": ("2", ("0",)),  # 0 = all usable cores
    "seed": ("7", ("0",)),
    "batch": ("2", ()),
    "tokens": ("64", ()),
    "frames": ("128", ()),
    "steady.warmup_min": ("1", ()),
    "steady.warmup_max": ("30", ()),
    "steady.warmup_rtol": ("0.1", ("0", "1e300", HUGE_INT, "1.5")),  # 0: warm up to warmup_max; huge: stop at once
    "steady.min_repeats": ("2", ()),
    "steady.max_repeats": ("20", ()),
    "steady.min_time_s": ("0.5", ("0", "1.5")),
    "steady.max_time_s": ("2", ("0", "1.5")),  # 0: one timed call (at least one is always made)
    "paper.runs": ("3", ()),
}


def _as_value(key: str, probe: str) -> str:
    return f"[{probe}]" if key in ("tokens", "frames") else probe


def _toml_with(key: str, value: str) -> str:
    base = 'models = ["test_ssast"]\n' + ("" if key in ("tokens", "frames") else "tokens = [64]\n")
    section, _, name = key.rpartition(".")
    return base + (f"[{section}]\n{name} = {value}\n" if section else f"{name} = {value}\n")


def _get(cfg, key: str):
    value = cfg
    for part in key.split("."):
        value = getattr(value, part)
    return value


@pytest.mark.parametrize("key", NUMERIC_KEYS)
@pytest.mark.parametrize("probe", PROBES)
def test_numeric_values_work_or_are_one_clear_error(tmp_path, key, probe):
    good, accepted = NUMERIC_KEYS[key]
    assert load_config(write(tmp_path, _toml_with(key, _as_value(key, good)), "good.toml"))  # the key itself works
    value = _as_value(key, probe)
    for how, load in (("--set", lambda: load_config(write(tmp_path, MINIMAL), [f"{key}={value}"])),
                      ("toml", lambda: load_config(write(tmp_path, _toml_with(key, value), "probe.toml")))):
        if probe in accepted:
            cfg = load()
            got = _get(cfg, key)
            assert float(got) == float(probe), (how, got)
            continue
        with pytest.raises(UserInputError) as err:
            load()
        message = str(err.value)
        assert "\n" not in message and key.split(".")[-1] in message, (how, message)


@pytest.mark.parametrize("cap", ["nan", "inf", "0", "0B", "-1", "-1GiB", "1e30", "99999999999TiB", "", " ", "0.4B"])
def test_bad_memory_caps_are_one_clear_error(tmp_path, cap):
    for assignment in (f"memory_cap={cap}", f"memory_cap='{cap}'"):
        if cap == "" and assignment.endswith("="):
            continue  # `memory_cap=` is a missing value, checked by parse_set
        if cap in ("", " ") and "'" in assignment:
            assert load_config(write(tmp_path, MINIMAL), [assignment]).memory_cap_bytes is None  # '' = none
            continue
        with pytest.raises(UserInputError, match="memory_cap"):
            load_config(write(tmp_path, MINIMAL), [assignment])
    for literal in ("nan", "inf", "-5", "0"):
        with pytest.raises(UserInputError, match="memory_cap"):
            load_config(write(tmp_path, MINIMAL + f"memory_cap = {literal}\n"))


def test_memory_cap_as_a_byte_count(tmp_path):
    assert load_config(write(tmp_path, MINIMAL), ["memory_cap=1048576"]).memory_cap_bytes == 2**20
    assert load_config(write(tmp_path, MINIMAL + "memory_cap = 1048576\n")).memory_cap_bytes == 2**20
    assert load_config(write(tmp_path, MINIMAL), ["memory_cap=1MiB"]).memory_cap_bytes == 2**20


@pytest.mark.parametrize("text, expected", [
    ("tokens = { start = 1, stop = 1000000000, step = 1 }", "more than"),
    ("tokens = { start = 'a', stop = 10, step = 1 }", "start must be an integer"),
    ("tokens = { start = nan, stop = 10, step = 1 }", "start must be an integer"),
    ("tokens = { start = 1.5, stop = 10, step = 1 }", "start must be an integer"),
    ("tokens = { start = 64, stop = inf, step = 1 }", "stop must be an integer"),
    ("tokens = { start = 64, stop = 128, step = 0.5 }", "step must be an integer"),
    ("tokens = { start = 64, stop = 128, factor = nan }", "factor"),
    ("tokens = { start = 64, stop = 128, factor = inf }", "factor"),
    ("tokens = { start = 64, stop = 128, factor = 'x' }", "factor"),
    ("tokens = { start = 64, stop = 100000000000000000000, factor = 2 }", "tokens"),
    ("max_tokens = { test_ssast = 0 }", "max_tokens"),
    ("max_tokens = { test_ssast = 100000000000000000000 }", "max_tokens"),
    ("model_options = { test_ssast = { drop = nan } }", "finite"),
    ("timeout_s = 1e400", "finite"),
])
def test_bad_numbers_in_tables_are_one_clear_error(tmp_path, text, expected):
    base = 'models = ["test_ssast"]\n' + ("" if text.startswith("tokens") else "tokens = [64]\n")
    with pytest.raises(UserInputError, match=expected):
        load_config(write(tmp_path, base + text + "\n"))


@pytest.mark.parametrize("axis", ["batch", "dtype", "device", "attn_impl", "scan_impl", "protocol"])
def test_an_empty_axis_is_one_clear_error(tmp_path, axis):
    with pytest.raises(UserInputError, match=f"`{axis}` is empty"):
        load_config(write(tmp_path, MINIMAL), [f"{axis}=[]"])


def test_unreadable_config_is_one_error_line(tmp_path, capsys, monkeypatch):
    path = write(tmp_path, MINIMAL)

    def denied(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_bytes", denied)
    monkeypatch.setattr(Path, "read_text", denied)
    code = cli.main(["sweep", str(path), "--out", str(tmp_path / "r"), "--dry-run"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "Permission denied" in err[0], err
