"""The `amp` axis (autocast beside the pure dtype; bench/measure/precision.py) and energy per call from
hardware counters (bench/measure/energy.py): config checks, case identity, what rows record, and the
RAPL reader on a powercap tree laid out as Linux lays it out."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from bench import cli
from bench.harness.cases import Case
from bench.harness.config import load_config
from bench.harness.expand import expand
from bench.measure.energy import RaplMeter, energy_meter, rapl_zones
from bench.measure.precision import sdpa_backend
from bench.store.run_store import load_runs
from models import create_model
from models.errors import UserInputError


def test_the_amp_axis_multiplies_cases_and_keeps_the_ids_of_cases_without_autocast():
    plain = expand(load_config("ci"))
    both = expand(load_config("ci", ["amp=['none', 'bf16']"]))
    assert len(both) == 2 * len(plain)
    assert {c.amp for c in both} == {"none", "bfloat16"}  # aliases resolved
    none_ids = {c.case_id for c in both if c.amp == "none"}
    assert none_ids == {c.case_id for c in plain}  # adding the axis changed no existing case's id
    amp_case = next(c for c in both if c.amp == "bfloat16")
    assert amp_case.case_id not in none_ids and "amp-bfloat16" in amp_case.label
    assert amp_case.series_key != dataclasses.replace(amp_case, amp="none").series_key


@pytest.mark.parametrize("overrides,message", [
    (["amp='int8'"], "unknown amp 'int8'"),
    (["amp=['bf16']", "dtype='bf16'"], "set dtype = 'float32' or amp = 'none'"),
    (["amp=[]"], "`amp` is empty"),
])
def test_bad_amp_settings_are_one_clear_error(overrides, message):
    with pytest.raises(UserInputError, match=message):
        load_config("ci", overrides)


def test_sdpa_backend_names_the_kernel_that_ran_or_math():
    model = create_model("test_ssast", input_frames=128, attn_impl="sdpa").eval()
    x = torch.randn(1, 128, model.grid.n_mels)
    with torch.no_grad():
        assert sdpa_backend(lambda: model(x), uses_sdpa=True) == "flash_cpu"
        # With the fused kernels ruled out, torch takes the math fallback, and the row says so.
        with sdpa_kernel(SDPBackend.MATH):
            assert sdpa_backend(lambda: model(x), uses_sdpa=True) == "math"
    assert sdpa_backend(lambda: pytest.fail("not called"), uses_sdpa=False) is None


def test_a_bf16_autocast_sweep_runs_both_families_and_records_its_precision(tmp_path):
    run_dir = tmp_path / "run"
    assert cli.main(["sweep", "ci", "--set", "amp=['bf16']", "--set", "protocol=['steady', 'train']",
                     "--set", "tokens=[64]", "--out", str(run_dir), "--quiet", "--no-table"]) == 0
    df = load_runs([run_dir])
    status = df[df["metric"] == "status"]
    assert set(status["status"]) == {"ok"} and set(status["amp"]) == {"bfloat16"} and len(status) == 6
    metrics = set(df["metric"])
    assert "flops" in metrics and "latency_s" in metrics
    # No memory prediction for an autocast case: the meta trace cannot follow autocast's casts.
    assert "predicted_peak_mem_bytes" not in metrics


def test_a_float16_training_step_scales_its_loss():
    from bench.measure.train_step import make_train_step

    torch.manual_seed(0)
    model = create_model("test_ssamba", input_frames=128)
    train = make_train_step(model, torch.randn(2, 128, model.grid.n_mels), amp="float16")
    assert train.scaler is not None
    initial_scale = train.scaler.get_scale()
    before = [p.detach().clone() for p in model.parameters()]
    for _ in range(20):  # the scaler skips steps whose scaled gradients overflow, halving its scale each time
        train.step()
    assert all(p.dtype == torch.float32 for p in model.parameters())  # autocast never converts the weights
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))  # some step was taken
    assert train.scaler.get_scale() <= initial_scale


def _zone(root, name: str, energy: int, span: int = 1000):
    zone = root / name
    zone.mkdir(parents=True)
    (zone / "energy_uj").write_text(f"{energy}\n")
    (zone / "max_energy_range_uj").write_text(f"{span}\n")
    return zone


def test_rapl_sums_the_packages_and_corrects_a_wrapped_counter(tmp_path):
    p0 = _zone(tmp_path, "intel-rapl:0", 900)
    p1 = _zone(tmp_path, "intel-rapl:1", 100)
    _zone(tmp_path, "intel-rapl:0:0", 5)  # a subzone (core) is inside its package: not counted twice
    assert [z.name for z in rapl_zones(tmp_path)] == ["intel-rapl:0", "intel-rapl:1"]
    meter = energy_meter("cpu", powercap_root=tmp_path)
    assert isinstance(meter, RaplMeter)
    with meter.window() as window:
        (p0 / "energy_uj").write_text("50\n")  # wrapped at 1000: 900 -> 1000 -> 50 is 150 uJ
        (p1 / "energy_uj").write_text("400\n")  # 300 uJ
    assert window.joules == pytest.approx(450e-6)
    rows = {m.name: m for m in meter.metrics(window, calls=3, what="call")}
    assert rows["energy_per_call_j"].value == pytest.approx(150e-6) and rows["energy_per_call_j"].unit == "J"
    assert rows["power_w"].value > 0 and "RAPL" in rows["power_w"].method


def test_no_readable_counter_means_no_energy_metric(tmp_path):
    assert energy_meter("cpu", powercap_root=tmp_path / "absent") is None
    broken = tmp_path / "intel-rapl:0"
    broken.mkdir()
    (broken / "energy_uj").write_text("")  # unreadable (as for a non-root user): no zone, no number
    assert energy_meter("cpu", powercap_root=tmp_path) is None


def test_case_rows_without_amp_fall_back_to_none():
    from bench.store.schema import case_rows

    case = Case(model="test_ssast", family="ssast", size="test", n_tokens=64, frames=128, batch=1, dtype="float32",
                device="cpu", attn_impl="eager", scan_impl=None, protocol="steady")
    rows = case_rows(case, run_id="r", env={}, status="ok")
    assert rows[0]["amp"] == "none" and rows[0]["sdpa_backend"] is None


def test_metered_energy_stands_beside_latency_in_the_claims(ci_run_dir):
    from bench.report.claims import case_values, comparisons
    from bench.report.claims_format import comparison_table

    cases = case_values(load_runs([ci_run_dir]))
    assert cases["energy_per_call_j"].isna().all()  # this VM has no readable counter: nothing invented
    assert all("energy_j" not in c for c in comparisons(cases))
    assert "energy" not in comparison_table(comparisons(cases), "ssamba")[0]
    cases["energy_per_call_j"] = cases["latency_s"] * 100.0  # as if a 100 W counter had metered every case
    comps = comparisons(cases)
    assert comps and all(c["energy_ratio"] == pytest.approx(c["speedup"]) for c in comps)
    table = comparison_table(comps, "ssamba")
    assert "energy ratio" in table[0] and table[2].count("|") == table[0].count("|")
