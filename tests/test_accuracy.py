"""Pretraining, fine-tuning and accuracy rows (bench/accuracy/, issue 7): fast, on the test-size models,
the reduced kws10 build and synthetic tensors. No exact accuracies are asserted: thresholds only."""

from __future__ import annotations

import dataclasses
import json
from types import SimpleNamespace

import pytest
import torch

from bench import cli
from bench.accuracy.checkpoint import build_model, save_pretrained
from bench.accuracy.config import load_config, parse_config
from bench.accuracy.finetune_loop import classification_metrics, train_steps
from bench.accuracy.pretrain_loop import pretrain
from bench.accuracy.recipe import FinetuneRecipe, PretrainRecipe, mask_patch_for
from bench.accuracy.run import run_config
from bench.data import build_task, read_manifest
from bench.store.jsonl import read_jsonl
from bench.store.run_store import RunStore, load, load_runs
from bench.store.schema import Metric, case_rows, to_frame, validate
from models.errors import UserInputError

FAST_PRETRAIN = PretrainRecipe(steps=2, batch=4, heldout_per_task=4)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("acc_data")
    try:
        build_task("kws10", cache=root, small=True)
    except UserInputError as err:  # espeak-ng / flite missing: the install command is in the message
        pytest.skip(f"cannot build kws10 --small: {err}")
    return root


@pytest.fixture(scope="module")
def ssamba_ckpt(cache, tmp_path_factory):
    torch.set_num_threads(2)
    pre, summary = pretrain("test_ssamba", ["kws10"], FAST_PRETRAIN, cache=cache, small=True, log=lambda *_: None)
    path = tmp_path_factory.mktemp("ckpt") / "test_ssamba.pth"
    save_pretrained(pre, path, "test_ssamba")
    return path, pre, summary


def test_mask_patch_rule():
    assert mask_patch_for(512) == 400  # the released models
    assert mask_patch_for(48) == 38  # 1 s clips at stride 16
    assert mask_patch_for(2) == 1 and mask_patch_for(1 + 1) >= 1
    assert all(1 <= mask_patch_for(n) <= n - 1 for n in range(2, 600))


@pytest.mark.parametrize("name", ["test_ssast", "test_ssamba"])
def test_head_is_mean_of_patch_tokens_layernorm_linear(name):
    torch.manual_seed(0)
    model = build_model(name, None, num_classes=5, frames=98, stride=10).eval()
    assert (model.grid.fstride, model.grid.tstride) == (10, 10) and model.n_tokens == 12 * 9
    assert [type(m) for m in model.head] == [torch.nn.LayerNorm, torch.nn.Linear]
    x = torch.randn(2, 98, 128)
    with torch.no_grad():
        features = model.forward_features(x)
        pooled = features[:, model.num_prefix_tokens:].mean(dim=1)  # patch tokens only
        expected = model.head[1](model.head[0](pooled))
        assert torch.allclose(model(x), expected, atol=1e-5)


@pytest.mark.parametrize("name", ["test_ssast", "test_ssamba", "test_aum"])
def test_finetuning_steps_reduce_the_loss_on_a_fixed_batch(name):
    torch.manual_seed(0)
    model = build_model(name, None, num_classes=4, frames=98, stride=10)
    x, y = torch.randn(8, 98, 128), torch.arange(8) % 4
    recipe = FinetuneRecipe(steps=12, batch=8, lr=2e-3, freqm=0, timem=0)
    losses = train_steps(model, x, y, recipe)
    assert all(torch.isfinite(torch.tensor(losses)))
    assert sum(losses[-3:]) / 3 < 0.7 * losses[0]


def test_head_lr_is_a_param_group_and_the_schedule_warms_up_then_decays():
    from bench.accuracy.recipe import finetune_param_groups, lr_factor, make_optimizer

    model = build_model("test_ssast", None, num_classes=3, frames=98, stride=10)
    opt = make_optimizer(finetune_param_groups(model, 1e-3, 10.0), 1e-3, 0.0)
    assert [g["peak_lr"] for g in opt.param_groups] == [1e-3, 1e-2]
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.parameters()))
    factors = [lr_factor(s, 20, 0.1, decay=True) for s in range(20)]
    assert factors[0] == 0.5 and factors[1] == 1.0 and factors[-1] < 0.05
    assert all(a >= b for a, b in zip(factors[1:], factors[2:]))


def test_classification_metrics():
    m = classification_metrics(torch.tensor([0, 1, 1, 2]), torch.tensor([0, 1, 2, 2]))
    assert m["accuracy"] == pytest.approx(0.75)
    assert 0 < m["macro_f1"] < 1


def test_pretraining_checkpoint_loads_strictly_at_stride_10(ssamba_ckpt):
    path, pre, summary = ssamba_ckpt
    assert summary["n_patches"] == 48 and summary["mask_patch"] == 38
    assert all(torch.isfinite(torch.tensor(v)) for v in summary["end"].values())
    model = build_model("test_ssamba", path, num_classes=4, frames=98, stride=10)
    report = model.checkpoint_report
    assert report.source_grid == (8, 6) and report.target_grid == (12, 9)
    assert set(report.new) == {"head.0.weight", "head.0.bias", "head.1.weight", "head.1.bias"}
    assert len(report.pretraining) == 9  # cpredlayer, gpredlayer (2 x 4 tensors) and mask_embed
    src = pre.v.state_dict()
    for key, value in model.state_dict().items():
        if key != "pos_embed" and not key.startswith("head."):
            assert torch.equal(value, src[key]), key


def test_aum_pretraining_checkpoint_round_trip(cache, tmp_path):
    pre, _ = pretrain("test_aum", ["kws10"], FAST_PRETRAIN, cache=cache, small=True, log=lambda *_: None)
    path = tmp_path / "aum.pth"
    save_pretrained(pre, path, "test_aum")
    model = build_model("test_aum", path, num_classes=4, frames=98, stride=10)
    assert model.pos_embed.shape[1] == 1 + 108
    assert torch.equal(model.layers[0].mixer.A_b_log, pre.v.layers[0].mixer.A_b_log)
    with pytest.raises(UserInputError, match="holds a pretrained test_aum.*not test_ssamba"):
        build_model("test_ssamba", path, num_classes=4, frames=98, stride=10)


def test_checkpoint_of_another_size_is_one_line_cli_error(ssamba_ckpt, cache, tmp_path, capsys):
    path, _, _ = ssamba_ckpt
    code = cli.main(["finetune", "--model", "ssamba", "--size", "tiny", "--task", "kws10", "--small",
                     "--cache", str(cache), "--init", str(path), "--steps", "1", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert err.startswith("error:") and "test_ssamba" in err and "not ssamba_tiny" in err
    code = cli.main(["finetune", "--model", "ssast", "--size", "test", "--task", "kws10", "--small",
                     "--cache", str(cache), "--init", str(path), "--steps", "1", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "not test_ssast" in err and len(err.splitlines()) == 1


def test_unknown_task_and_unbuilt_dataset_are_one_line_errors(tmp_path, capsys):
    assert cli.main(["finetune", "--model", "ssamba", "--task", "kws1O", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "unknown task 'kws1O'" in err and "did you mean" in err
    assert cli.main(["finetune", "--model", "ssamba", "--task", "events", "--cache", str(tmp_path / "empty"),
                     "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "ssamba-bench data build events" in err
    assert cli.main(["pretrain", "--model", "ssamba", "--tasks", "kws,evnts", "--out", str(tmp_path / "c.pth")]) == 2
    assert "did you mean 'events'" in capsys.readouterr().err


def test_config_keys_are_checked():
    with pytest.raises(UserInputError, match="unknown key 'task'.*did you mean 'tasks'"):
        parse_config({"task": ["kws"]})
    with pytest.raises(UserInputError, match=r"\[finetune\].*unknown key 'step'.*did you mean 'steps'"):
        parse_config({"finetune": {"step": 3}})
    with pytest.raises(UserInputError, match="unknown model family 'ssamab'"):
        parse_config({"models": ["ssamab"]})
    with pytest.raises(UserInputError, match="lr must be a float"):
        parse_config({"finetune": {"lr": "fast"}})
    for name in ("accuracy", "accuracy_ci"):
        cfg = load_config(name)
        assert cfg.size == "tiny" and set(cfg.inits) == {"pretrained", "scratch"}
    assert load_config("accuracy").finetune_recipe("kws").steps >= 50


def test_purpose_is_checked_and_the_main_jobs_run_is_a_pipeline_check():
    with pytest.raises(UserInputError, match="purpose must be one of result, pipeline_check, got 'demo'"):
        parse_config({"purpose": "demo"})
    assert parse_config({}).purpose == "result"
    assert load_config("accuracy").purpose == "result"
    assert load_config("accuracy_ci").purpose == "pipeline_check"  # at chance by design: never shown as a result


def _tiny_config(cache, **extra):
    return parse_config({"name": "t", "models": ["ssast", "ssamba"], "size": "test", "tasks": ["kws10"],
                         "small": True, "cache": str(cache), "threads": 2,
                         "pretrain": {"steps": 2, "batch": 4, "heldout_per_task": 4},
                         "finetune": {"steps": 3, "batch": 4}, **extra})


def test_accuracy_run_rows_validate_resume_and_load_with_benchmark_rows(cache, tmp_path):
    run_dir = tmp_path / "acc"
    logs: list[str] = []
    rows = run_config(_tiny_config(cache), run_dir, log=logs.append)
    df = load(run_dir)
    assert validate(df) == []
    status = df[df["metric"] == "status"]
    assert len(status) == 4 and set(status["status"]) == {"ok"} and set(status["protocol"]) == {"finetune"}
    assert set(status["init"]) == {"pretrained", "scratch"} and set(status["train_steps"]) == {3}
    n_classes = len(read_manifest("kws10", cache=cache, small=True)["label_names"])
    assert set(df["n_classes"]) == {n_classes} and set(df["purpose"]) == {"result"}  # recorded in every row
    acc = df[df["metric"] == "accuracy"]
    assert set(acc["split"]) == {"val", "test"} and set(acc["unit"]) == {"fraction"}
    assert ((acc["value"] >= 0) & (acc["value"] <= 1)).all()
    assert set(df.loc[df["family"] == "ssamba", "scan_impl"].dropna()) <= {"cpu_cpp", "chunked", "reference"}
    assert len(list((run_dir / "checkpoints").glob("*.pth"))) == 2  # one pretraining per model
    assert len(list((run_dir / "pretrain").glob("*.json"))) == 2
    assert (run_dir / "results.csv").is_file() and validate(load(run_dir / "results.csv")) == []

    # resume: every case is skipped, nothing is appended, no pretraining runs again
    n_lines = len(read_jsonl(run_dir / "results.jsonl"))
    logs.clear()
    run_config(_tiny_config(cache), run_dir, log=logs.append)
    assert len(read_jsonl(run_dir / "results.jsonl")) == n_lines
    assert sum(line.startswith("skip ") for line in logs) == 4 and not any(line.startswith(("pretrain ", "pretrained ")) for line in logs)
    # another budget is another case
    ids = set(status["case_id"])
    run_config(dataclasses.replace(_tiny_config(cache), inits=("scratch",), models=("ssast",),
                                   task_steps={"kws10": 2}), run_dir, log=lambda *_: None)
    assert len(set(load(run_dir)["case_id"]) - ids) == 1

    # a benchmark case of the same model loads beside the accuracy rows and still validates
    bench_case = SimpleNamespace(case_id="0123456789abcdef", model="test_ssamba", family="ssamba", size="test",
                                 n_tokens=48, frames=98, batch=1, dtype="float32", device="cpu", attn_impl=None,
                                 scan_impl="auto", protocol="steady")
    bench_rows = case_rows(bench_case, run_id="sweep", env={}, status="ok",
                           metrics=[Metric("latency_s", "median", 0.01, "s", 10)], info={"params": 1})
    sweep_dir = tmp_path / "sweep"
    RunStore(sweep_dir).dir.mkdir()
    (sweep_dir / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in bench_rows))
    both = load_runs([sweep_dir, run_dir])
    assert validate(both) == []
    assert set(both["protocol"]) == {"steady", "finetune"}
    assert validate(to_frame(bench_rows)) == []
    assert rows


def test_pipeline_check_run_records_its_purpose_and_claims_labels_it(cache, tmp_path, capsys):
    """accuracy_ci's shape on the test models: the config's purpose reaches every row, the run's table.md and
    the claims report, which labels the rows and adds the committed reference table."""
    cfg = dataclasses.replace(_tiny_config(cache, purpose="pipeline_check"), inits=("scratch",), models=("ssast",))
    run_dir = tmp_path / "check"
    run_config(cfg, run_dir, log=lambda *_: None)
    df = load(run_dir)
    assert validate(df) == [] and set(df["purpose"]) == {"pipeline_check"}
    assert cli.main(["claims", str(run_dir), "--quiet", "--no-predictions"]) == 0
    text = (run_dir / "claims.md").read_text()
    assert "**The accuracy run here is a pipeline check, not a result.**" in text
    assert "## Reference accuracy (committed results, not measured by this run)" in text
    test_line = next(line for line in text.splitlines() if line.startswith("| test_ssast | scratch | test |"))
    assert test_line.endswith("pipeline check, not a result |") or "within the pipeline check's budget" in test_line


def test_validate_still_requires_latency_for_benchmark_cases():
    case = SimpleNamespace(case_id="0123456789abcdef", model="m", family="f", size="s", n_tokens=8, frames=16,
                           batch=1, dtype="float32", device="cpu", attn_impl=None, scan_impl=None, protocol="steady")
    df = to_frame(case_rows(case, run_id="r", env={}, status="ok", metrics=[]))
    assert "ok cases without a latency_s value" in validate(df)
