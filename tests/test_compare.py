"""`ssamba-bench compare` on crafted tables: what passes, what fails, and what is only reported."""

import json
import random

import pytest

from bench.cli import main
from bench.store.schema import COLUMNS, SCHEMA_VERSION


def _case_rows(case_id, model, family, attn_impl, scan_impl, n_tokens, latencies, tensor_bytes, status="ok",
               schema_version=SCHEMA_VERSION):
    base = {c: None for c in COLUMNS}
    base.update(schema_version=schema_version, run_id="r", case_id=case_id, attempt_id=f"a{case_id}",
                timestamp="2026-01-01T00:00:00+00:00", model=model, family=family, size="test", params=1000,
                n_tokens=n_tokens, frames=2 * n_tokens, batch=1, dtype="float32", device="cpu", device_name="cpu",
                attn_impl=attn_impl, scan_impl=scan_impl, scan_impl_requested=scan_impl, protocol="steady", threads=1)
    rows = [{**base, "metric": "status", "stat": "value", "status": status,
             "error": None if status == "ok" else "CPU out of memory"}]
    if status == "ok":
        lat = sorted(latencies)
        for stat, value in (("median", lat[len(lat) // 2]), ("min", lat[0])):
            rows.append({**base, "metric": "latency_s", "stat": stat, "value": value, "unit": "s",
                         "n_samples": len(lat), "status": "ok"})
        rows.append({**base, "metric": "peak_mem_bytes", "stat": "tensor_bytes", "value": tensor_bytes,
                     "unit": "bytes", "n_samples": 1, "status": "ok"})
    return rows


def write_table(path, cases, schema_version=SCHEMA_VERSION):
    """cases: dicts with id, model, family, attn, scan, tokens, latency (center), noise, bytes, status."""
    path.mkdir()
    rows, samples = [], []
    for c in cases:
        rng = random.Random(c["id"] + str(c["latency"]))
        lat = [c["latency"] * (1 + rng.uniform(-c["noise"], c["noise"])) for _ in range(20)]
        rows += _case_rows(c["id"], c["model"], c["family"], c.get("attn"), c.get("scan"), c["tokens"], lat,
                           c["bytes"], c.get("status", "ok"), schema_version)
        samples.append({"case_id": c["id"], "samples_s": lat})
    (path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (path / "samples.jsonl").write_text("".join(json.dumps(s) + "\n" for s in samples))
    return path


def cases(**changes):
    """Two SSAST cases and two SSAMBA cases; `changes` maps case id -> field overrides."""
    out = []
    for cid, model, family, attn, scan, tokens, lat in (
        ("0000000000000001", "test_ssast", "ssast", "eager", None, 128, 0.010),
        ("0000000000000002", "test_ssast", "ssast", "eager", None, 256, 0.020),
        ("0000000000000003", "test_ssamba", "ssamba", None, "cpu_cpp", 128, 0.015),
        ("0000000000000004", "test_ssamba", "ssamba", None, "cpu_cpp", 256, 0.025),
    ):
        c = dict(id=cid, model=model, family=family, attn=attn, scan=scan, tokens=tokens, latency=lat,
                 noise=0.02, bytes=1_000_000 + tokens)
        c.update(changes.get(cid, {}))
        out.append(c)
    return out


def run_compare(tmp_path, base_cases, new_cases, *args, capsys):
    base = write_table(tmp_path / "base", base_cases)
    new = write_table(tmp_path / "new", new_cases)
    code = main(["compare", str(base), str(new), *args])
    return code, capsys.readouterr()


def test_identical_tables_pass(tmp_path, capsys):
    code, out = run_compare(tmp_path, cases(), cases(), capsys=capsys)
    assert code == 0
    assert "PASS" in out.out and "SAME=" in out.out


def test_deterministic_metric_change_fails_naming_case_and_metric(tmp_path, capsys):
    changed = cases(**{"0000000000000002": {"bytes": 2_000_000}})
    code, out = run_compare(tmp_path, cases(), changed, "--policy", "ci", capsys=capsys)
    assert code == 1
    line = next(ln for ln in out.out.splitlines() if "FAIL " in ln and "peak_mem_bytes:tensor_bytes" in ln)
    assert "test_ssast eager steady b1 256tok" in line


def test_large_significant_latency_change_is_slower_and_fails_when_gated(tmp_path, capsys):
    slow = cases(**{"0000000000000003": {"latency": 0.015 * 1.5}})
    code, out = run_compare(tmp_path, cases(), slow, "--policy", "default", capsys=capsys)
    assert code == 1
    assert any(ln.startswith("SLOWER") and "latency_s:median" in ln and "128tok" in ln for ln in out.out.splitlines())
    # the CI policy reports raw latency but does not gate it (the within-run ratio moved only 1.2x here)
    (tmp_path / "ci").mkdir()
    code, out = run_compare(tmp_path / "ci", cases(), slow, "--policy", "ci", capsys=capsys)
    assert code == 0
    assert any(ln.startswith("SLOWER") and "latency_s:median" in ln for ln in out.out.splitlines())


def test_small_noisy_latency_change_is_not_a_failure(tmp_path, capsys):
    noisy_base = cases(**{k: {"noise": 0.3} for k in ("0000000000000001", "0000000000000002", "0000000000000003", "0000000000000004")})
    noisy_new = cases(**{k: {"noise": 0.3, "latency": lat * 1.05} for k, lat in
                         (("0000000000000001", 0.010), ("0000000000000002", 0.020), ("0000000000000003", 0.015), ("0000000000000004", 0.025))})
    code, out = run_compare(tmp_path, noisy_base, noisy_new, "--policy", "default", capsys=capsys)
    assert code == 0
    verdicts = [ln.split()[0] for ln in out.out.splitlines() if "latency_s" in ln]
    assert all(v in ("SAME", "AMBIGUOUS") for v in verdicts)


def test_case_turned_oom_fails(tmp_path, capsys):
    code, out = run_compare(tmp_path, cases(), cases(**{"0000000000000004": {"status": "oom"}}), "--policy", "ci",
                            capsys=capsys)
    assert code == 1
    assert any(ln.startswith("FAILED") and "FAIL" in ln and "256tok" in ln for ln in out.out.splitlines())


def test_missing_case_is_reported(tmp_path, capsys):
    code, out = run_compare(tmp_path, cases(), cases()[:3], "--policy", "ci", capsys=capsys)
    assert "MISSING=1" in out.out
    assert any(ln.startswith("MISSING") and "test_ssamba" in ln for ln in out.out.splitlines())
    assert code == 0  # reported, not gated


def test_within_run_ratio_regression_fails_even_if_machine_is_uniformly_faster(tmp_path, capsys):
    # New run: everything 2x faster (a faster machine) except SSAMBA, which got 4x slower relatively.
    new = cases(**{"0000000000000001": {"latency": 0.005}, "0000000000000002": {"latency": 0.010},
                   "0000000000000003": {"latency": 0.030}, "0000000000000004": {"latency": 0.050}})
    code, out = run_compare(tmp_path, cases(), new, "--policy", "ci", capsys=capsys)
    assert code == 1
    assert any("speedup_geomean" in ln and ln.startswith("SLOWER") for ln in out.out.splitlines())


def test_bad_input(tmp_path, capsys):
    base = write_table(tmp_path / "base", cases())
    other = write_table(tmp_path / "v0", cases(), schema_version=SCHEMA_VERSION + 1)
    assert main(["compare", str(base), str(other)]) == 2
    assert "schema versions differ" in capsys.readouterr().err
    disjoint = write_table(tmp_path / "disjoint", [dict(c, id=c["id"].replace("0", "f")) for c in cases()])
    assert main(["compare", str(base), str(disjoint)]) == 2
    assert "no common cases" in capsys.readouterr().err
    assert main(["compare", str(base), str(tmp_path / "nowhere")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "policy.toml").write_text("[latency]\nthreshhold = 2\n")
    assert main(["compare", str(base), str(base), "--policy", str(tmp_path / "policy.toml")]) == 2
    assert "threshhold" in capsys.readouterr().err


# --- hostile tables and policies: refused with one `error:` line (exit 2), or failed when nothing compared ---

def one_error_line(capsys) -> str:
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def csv_without(tmp_path, column):
    from bench.store.run_store import load

    table = write_table(tmp_path / f"full-{column}", cases())
    path = tmp_path / f"no-{column}.csv"
    load(table).drop(columns=[column]).to_csv(path, index=False)
    return table, path


def test_table_without_value_column_is_refused(tmp_path, capsys):
    base, no_value = csv_without(tmp_path, "value")
    assert main(["compare", str(base), str(no_value)]) == 2
    assert "value" in one_error_line(capsys)
    assert main(["compare", str(no_value), str(no_value)]) == 2
    assert "value" in one_error_line(capsys)


def test_table_without_status_column_is_refused(tmp_path, capsys):
    base, no_status = csv_without(tmp_path, "status")
    assert main(["compare", str(base), str(no_status)]) == 2
    assert "status" in one_error_line(capsys)
    assert main(["table", str(no_status)]) == 2
    assert "status" in one_error_line(capsys)


def test_nothing_comparable_fails(tmp_path, capsys):
    """Both tables have the same ok cases, but no value to compare (all null): not a pass."""
    table = write_table(tmp_path / "base", cases())
    rows = [json.loads(ln) for ln in (table / "results.jsonl").read_text().splitlines()]
    blank = tmp_path / "blank"
    blank.mkdir()
    (blank / "results.jsonl").write_text("".join(json.dumps(dict(r, value=None)) + "\n" for r in rows))
    for policy in ("default", "ci"):
        assert main(["compare", str(blank), str(blank), "--policy", policy]) == 1
        out = capsys.readouterr().out
        assert "nothing was comparable" in out.splitlines()[-1]


def test_only_failed_cases_in_both_still_compares_statuses(tmp_path, capsys):
    oom = cases(**{c: {"status": "oom"} for c in ("0000000000000001", "0000000000000002", "0000000000000003",
                                                   "0000000000000004")})
    code, out = run_compare(tmp_path, oom, oom, "--policy", "ci", capsys=capsys)
    assert code == 0 and "SAME=4" in out.out


@pytest.mark.parametrize("text, expected", [
    ("latency = 3\n", "[latency] must be a table"),
    ("[latency]\nthreshold = nan\n", "finite"),
    ("[latency]\nthreshold = 0.5\n", "threshold"),
    ("[latency]\nalpha = 2.0\n", "alpha"),
    ("[latency]\nalpha = \"x\"\n", "alpha must be a float"),
    ("[memory]\nrtol = -1\n", "rtol"),
    ("[memory]\nmetrics = 3\n", "metrics"),
    ("[ratios]\ntolerance = inf\n", "finite"),
    ("[status]\ngate = \"yes\"\n", "gate must be a boolean"),
    ("[latency\n", "not valid TOML"),
])
def test_bad_policy_is_one_error_line(tmp_path, capsys, text, expected):
    base = write_table(tmp_path / "base", cases())
    (tmp_path / "policy.toml").write_text(text)
    assert main(["compare", str(base), str(base), "--policy", str(tmp_path / "policy.toml")]) == 2
    assert expected in one_error_line(capsys)


def test_json_output_that_cannot_be_written_is_one_error_line(tmp_path, capsys):
    base = write_table(tmp_path / "base", cases())
    assert main(["compare", str(base), str(base), "--json", str(tmp_path)]) == 2
    assert "--json" in one_error_line(capsys)


def test_hostile_samples_are_skipped(tmp_path, capsys):
    base = write_table(tmp_path / "base", cases())
    with open(base / "samples.jsonl", "a") as f:
        f.write('{"case_id": "0000000000000001", "samples_s": "fast"}\n{"case_id": 5, "samples_s": [1]}\n'
                '{"case_id": "0000000000000002", "samples_s": [NaN, 1.0]}\n7\n')
    assert main(["compare", str(base), str(base)]) == 0
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and err[0].startswith("warning: ") and "samples.jsonl" in err[0], err
