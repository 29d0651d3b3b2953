"""Property-based tests (hypothesis): whatever a config table, a `--set` argument or a results file
holds, parsing it gives a value or one UserInputError, never another exception; and what is valid
round-trips unchanged.

Kept fast: modest max_examples, no deadline (the machine may be busy).
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.common.config_fields import apply_set, build, parse_set
from bench.common.vocabulary import STATUSES
from bench.harness.cases import Case
from bench.harness.config import SweepConfig, check_config, load_config
from bench.measure.protocol_settings import PaperConfig, SteadyConfig
from bench.report.table import short_table
from bench.store.jsonl import append_jsonl
from bench.store.run_store import RunStore, load
from bench.store.schema import Metric, case_rows
from models.errors import UserInputError

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

SWEEP_KEYS = [f.name for f in dataclasses.fields(SweepConfig)]
STEADY_KEYS = [f.name for f in dataclasses.fields(SteadyConfig)]
PAPER_KEYS = [f.name for f in dataclasses.fields(PaperConfig)]

# --- TOML values, and writing them back as TOML ------------------------------------------------------

scalars = st.one_of(st.integers(min_value=-(2**80), max_value=2**80), st.floats(), st.booleans(),
                    st.text(max_size=12))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(st.text(max_size=6), inner, max_size=3)),
                      max_leaves=10)


range_tables = st.dictionaries(st.sampled_from(["start", "stop", "step", "factor"]), scalars, max_size=4)
any_value = st.one_of(values, range_tables, st.lists(st.integers(min_value=-(2**70), max_value=2**70), max_size=4))


def section(keys):
    return st.dictionaries(st.sampled_from(keys), any_value, max_size=4)


# keys the config knows, with any value (an unknown key would stop the check at once); [steady] /
# [paper] often tables of their own keys
tables = st.dictionaries(st.sampled_from(SWEEP_KEYS), any_value, max_size=8).flatmap(
    lambda t: st.fixed_dictionaries({}, optional={"steady": section(STEADY_KEYS), "paper": section(PAPER_KEYS)})
    .map(lambda extra: {**t, **extra}))


def toml_str(s: str) -> str:
    out = []
    for c in s:
        out.append(f"\\u{ord(c):04x}" if c in '"\\' or ord(c) < 0x20 or ord(c) == 0x7F else c)
    return '"' + "".join(out) + '"'


def toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return toml_str(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    raise TypeError(v)


# --- config parsing -----------------------------------------------------------------------------------

@FAST
@given(tables)
def test_config_tables_give_a_config_or_one_user_error(table):
    try:
        cfg = build(SweepConfig, table, "probe.toml")
        check_config(cfg, "probe.toml")
    except UserInputError as err:
        assert "\n" not in str(err)


@FAST
@given(st.one_of(st.binary(max_size=200), st.text(max_size=200).map(str.encode)))
def test_config_files_give_a_config_or_one_user_error(data):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "probe.toml"
        path.write_bytes(data)
        try:
            load_config(path)
        except UserInputError:
            pass


names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_-.", min_size=1, max_size=12)
sizes = st.integers(min_value=1, max_value=2**31 - 1)
seconds = st.floats(min_value=0.001, max_value=86400, allow_nan=False)
valid_configs = st.fixed_dictionaries({
    "name": names,
    "description": st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=30),
    "models": st.lists(st.sampled_from(["test_ssast", "test_ssamba", "ssamba", "ssast"]), min_size=1, max_size=3),
    "tokens": st.lists(sizes, min_size=1, max_size=4),
    "batch": st.lists(sizes, min_size=1, max_size=3),
    "dtype": st.lists(st.sampled_from(["float32", "float16", "bfloat16", "fp16", "bf16"]), min_size=1, max_size=3),
    "device": st.lists(st.sampled_from(["cpu", "cuda", "cuda:1"]), min_size=1, max_size=2),
    "protocol": st.lists(st.sampled_from(["steady", "paper"]), min_size=1, max_size=2),
    "threads": st.integers(min_value=0, max_value=64),
    "timeout_s": seconds,
    "budget_s": st.one_of(st.just(0.0), seconds),
    "seed": st.integers(min_value=0, max_value=2**63 - 1),
    "memory_cap": st.sampled_from(["", "1MiB", "8GiB", "512MB", "1000"]),
}, optional={
    "steady": st.fixed_dictionaries({"warmup_min": st.integers(1, 5), "warmup_max": st.integers(5, 50),
                                     "warmup_rtol": st.floats(0, 1), "min_repeats": st.integers(1, 10),
                                     "max_repeats": st.integers(10, 1000), "min_time_s": st.floats(0, 10),
                                     "max_time_s": st.floats(0, 100)}),
    "paper": st.fixed_dictionaries({"runs": st.integers(1, 1000)}),
})


def render(table: dict) -> str:
    top = [f"{k} = {toml_value(v)}" for k, v in table.items() if not isinstance(v, dict)]
    sections = [f"[{k}]\n" + "\n".join(f"{kk} = {toml_value(vv)}" for kk, vv in v.items())
                for k, v in table.items() if isinstance(v, dict)]
    return "\n".join(top) + "\n" + "\n".join(sections) + "\n"


def expected_value(key, value):
    return tuple(value) if isinstance(value, list) else value


@FAST
@given(valid_configs)
def test_valid_configs_round_trip(table):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "sweep.toml"
        path.write_text(render(table))
        cfg = load_config(path)
    for key, value in table.items():
        if isinstance(value, dict):
            for k, v in value.items():
                assert getattr(getattr(cfg, key), k) == v
        else:
            assert getattr(cfg, key) == expected_value(key, value), key


# --- `--set` ------------------------------------------------------------------------------------------

@FAST
@given(st.text(max_size=40))
def test_parse_set_gives_a_value_or_one_user_error(text):
    try:
        keys, _ = parse_set(text)
    except UserInputError as err:
        assert "\n" not in str(err) or "\n" in text
    else:
        assert keys and all(keys)


identifiers = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,8}", fullmatch=True)
dotted = st.lists(identifiers, min_size=1, max_size=3).map(".".join)
set_values = st.one_of(st.integers(min_value=-(2**63), max_value=2**63 - 1),
                       st.floats(allow_nan=False, allow_infinity=False),
                       st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=12),
                       st.lists(st.integers(min_value=0, max_value=10**6), max_size=4), st.booleans())


@FAST
@given(dotted, set_values)
def test_parse_set_round_trips_toml_values(key, value):
    assert parse_set(f"{key}={toml_value(value)}") == (key.split("."), value)


@FAST
@given(st.dictionaries(identifiers, values, max_size=4), dotted, set_values)
def test_apply_set_sets_the_dotted_key_or_one_user_error(table, key, value):
    try:
        apply_set(table, f"{key}={toml_value(value)}")
    except UserInputError:
        return
    target = table
    for part in key.split("."):
        target = target[part]
    assert target == value


# --- the results reader ---------------------------------------------------------------------------------

def make_case(i: int, model: str = "test_ssast") -> Case:
    return Case(model=model, family="ssast", size="test", n_tokens=64 * (i + 1), frames=128 * (i + 1), batch=1,
                dtype="float32", device="cpu", attn_impl="eager", scan_impl=None, protocol="steady")


floats_any = st.one_of(st.none(), st.floats())
metrics = st.lists(st.builds(Metric, name=st.sampled_from(["latency_s", "peak_mem_bytes", "flops", "x"]),
                             stat=st.sampled_from(["median", "iqr", "tensor_bytes", "value", "min"]),
                             value=floats_any, unit=st.sampled_from(["s", "bytes", ""]),
                             method=st.one_of(st.none(), st.text(max_size=10))), max_size=6)
case_specs = st.lists(st.tuples(st.sampled_from(STATUSES), metrics, st.one_of(st.none(), st.text(max_size=20)),
                                st.text(min_size=1, max_size=10)), min_size=1, max_size=5)


def written(specs) -> list[list[dict]]:
    out = []
    for i, (status, ms, error, model) in enumerate(specs):
        out.append(case_rows(make_case(i, model), run_id="r", env={}, status=status,
                             metrics=ms if status == "ok" else [], error=error))
    return out


def same(a: list[dict], b: list[dict]) -> bool:
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)  # NaN == NaN here


@FAST
@given(case_specs)
def test_rows_written_by_case_rows_read_back(specs):
    with tempfile.TemporaryDirectory() as tmp:
        store = RunStore(tmp)
        sets = written(specs)
        for rows in sets:
            append_jsonl(store.results, rows)
        assert same(store.rows(), [r for rows in sets for r in rows])
        assert isinstance(short_table(load(tmp)), str)


# a row of another case with some columns changed: now a row, now not (a wrong type, a missing column)
TEMPLATE = dict(case_rows(make_case(99), run_id="r", env={}, status="ok")[0], attempt_id="junk")
mutated_rows = st.dictionaries(st.sampled_from(sorted(TEMPLATE)), st.one_of(values, st.none()), max_size=3).map(
    lambda changes: json.dumps({**TEMPLATE, **changes}).encode())
junk = st.one_of(st.binary(max_size=80), st.text(max_size=80).map(str.encode),
                 values.map(lambda v: json.dumps(v, default=str).encode()), mutated_rows)


@FAST
@given(case_specs, st.lists(junk, max_size=6), st.booleans())
def test_junk_lines_never_crash_the_reader(specs, lines, newline_at_end):
    with tempfile.TemporaryDirectory() as tmp:
        store = RunStore(tmp)
        sets = written(specs)
        for rows in sets:
            append_jsonl(store.results, rows)
        with open(store.results, "ab") as f:
            f.write(b"\n".join(lines) + (b"\n" if newline_at_end else b""))
        got = store.rows()
        ours = {rows[0]["attempt_id"] for rows in sets}
        assert same([r for r in got if r["attempt_id"] in ours], [r for rows in sets for r in rows])
        store.statuses()
        short_table(load(tmp))
