"""run_unit in this process (the unit of work any executor runs): extra metric producers, the sweep's
time budget, and rows that validate; no child processes here."""

from __future__ import annotations

import gc
import time

import pytest
import torch

from bench.harness import unit as unit_runner
from bench.harness.cases import Case
from bench.harness.messages import BudgetSpent, CaseEnded, CaseInfo, CaseStarted
from bench.harness.settings import RunSettings
from bench.harness.unit import run_unit
from bench.measure.protocol_settings import SteadyConfig
from bench.store.jsonl import read_jsonl
from bench.store.schema import to_frame, validate

FAST = SteadyConfig(warmup_min=1, warmup_max=2, min_repeats=2, max_repeats=3, min_time_s=0.0, max_time_s=1.0)


@pytest.fixture(autouse=True)
def restore_process_state():
    """run_unit prepares the process it runs in (threads, frozen gc); give pytest's process back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)
    gc.unfreeze()
    unit_runner._prepared.clear()


def fake_flops(model, inputs, case):
    """An extra metric producer, as a later FLOPs counter would plug in."""
    return [{"metric": "flops", "stat": "value", "value": 2.0 * model.num_parameters() * case.n_tokens,
             "unit": "flop", "method": "2 * params * tokens (test)"}]


def broken_producer(model, inputs, case):
    raise ValueError("producer bug")


def case(n_tokens: int) -> Case:
    return Case(model="test_ssast", family="ssast", size="test", n_tokens=n_tokens, frames=2 * n_tokens, batch=1,
                dtype="float32", device="cpu", attn_impl="sdpa", scan_impl=None, protocol="steady")


def test_run_unit_with_extra_metrics(tmp_path):
    settings = RunSettings(run_id="unit", steady=FAST, threads=1,
                           extra_metrics=("test_harness_runner:fake_flops", "test_harness_runner:broken_producer"))
    messages = []
    shard = tmp_path / "shard.jsonl"
    statuses = run_unit([case(128), case(64)], shard, settings=settings, env={"git_sha": "x"},
                        notify=messages.append)
    assert set(statuses.values()) == {"ok"}
    assert [type(m) for m in messages] == [CaseStarted, CaseInfo, CaseEnded] * 2
    assert [m.case_id for m in messages if isinstance(m, CaseStarted)] == [case(64).case_id, case(128).case_id]  # upward
    df = to_frame(read_jsonl(shard))
    assert validate(df) == []
    flops = df[df["metric"] == "flops"]
    assert len(flops) == 2 and (flops["status"] == "ok").all() and (flops["unit"] == "flop").all()
    broken = df[df["metric"] == "test_harness_runner:broken_producer"]
    assert (broken["status"] == "error").all() and broken["error"].str.contains("producer bug").all()
    assert (df.loc[df["metric"] == "status", "status"] == "ok").all()  # a broken producer does not fail the case


def test_run_unit_stops_at_the_budget(tmp_path):
    settings = RunSettings(run_id="unit", steady=FAST, threads=1, budget_deadline=time.time() - 1)
    messages = []
    statuses = run_unit([case(64)], tmp_path / "shard.jsonl", settings=settings, env={},
                        notify=messages.append)
    assert statuses == {} and messages == [BudgetSpent()]
    assert not (tmp_path / "shard.jsonl").exists()  # unrecorded: a resume runs it
