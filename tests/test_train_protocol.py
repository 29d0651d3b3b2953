"""The `train` protocol (bench/measure/train_step.py, protocols.py) and its memory prediction
(bench/estimate/train_trace.py): what a step keeps alive, what the sweep records, how close the meta-tensor
prediction comes to the measured tensor bytes, and the claims report's training section."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from bench import cli
from bench.estimate import estimate_train
from bench.estimate.fused_attention import fused_attention, sdpa_as_fused_op
from bench.measure.memory import measure_tensor_bytes
from bench.measure.train_step import make_train_step
from bench.report.claims import build_report
from bench.report.claims_markdown import render
from bench.store.run_store import load_runs
from models import create_model
from models.errors import UserInputError


def _train(name: str, frames: int, **options):
    torch.manual_seed(0)
    model = create_model(name, input_frames=frames, **options)
    return make_train_step(model, torch.randn(2, frames, model.grid.n_mels))


def test_a_step_starts_with_gradients_and_both_adam_moments_alive():
    train = _train("test_ssast", 128, attn_impl="eager")
    weights = sum(p.numel() * p.element_size() for p in train.model.parameters())
    assert not any(p.grad is not None for p in train.model.parameters())
    train.step()
    base, peak = measure_tensor_bytes(train.step, train.live_tensors())
    # weights + their gradients + exp_avg + exp_avg_sq, at least (buffers, batch, step counters on top)
    assert base >= 4 * weights
    assert peak > base  # the activations saved for the backward come on top
    assert all(len(train.optimizer.state[p]) == 3 for p in train.model.parameters())  # step, exp_avg, exp_avg_sq


def test_repeated_steps_on_the_fixed_batch_lower_its_loss():
    train = _train("test_ssamba", 128)
    losses = []
    for _ in range(6):
        with torch.no_grad():
            losses.append(float(torch.nn.functional.cross_entropy(train.model(train.inputs), train.labels)))
        train.step()
    assert losses[-1] < losses[0]


@pytest.mark.parametrize("name,options", [("test_ssast", {"attn_impl": "eager"}), ("test_ssast", {"attn_impl": "sdpa"}),
                                          ("test_ssamba", {}), ("ssamba_tiny", {}), ("ssast_tiny", {"attn_impl": "sdpa"})])
def test_predicted_training_memory_is_within_10_percent_of_the_measured_step(name, options):
    frames = 512  # 256 tokens (test models: 128)
    train = _train(name, frames, **options)
    train.step()
    _, measured = measure_tensor_bytes(train.step, train.live_tensors())
    predicted = estimate_train(name, 0, 2, frames=frames, target="cpu", **({"attn_impl": options["attn_impl"]}
                                                                           if options else {}))
    assert abs(predicted["peak_mem_bytes"] / measured - 1) <= 0.10, (predicted["peak_mem_bytes"], measured)


def test_the_cpu_target_traces_the_fused_mixer_and_the_cuda_target_the_authors_ops():
    cpu = estimate_train("ssamba_tiny", 1024, 1, target="cpu")
    cuda = estimate_train("ssamba_tiny", 1024, 1, target="cuda")
    # The op-by-op sequence saves the conv output, its SiLU input and the flipped copies for the backward.
    assert cuda["peak_mem_bytes"] > 1.1 * cpu["peak_mem_bytes"]
    assert cpu["resident_bytes"] == cuda["resident_bytes"]  # the same weights, gradients and Adam state
    with pytest.raises(UserInputError, match="target"):
        estimate_train("ssamba_tiny", 1024, 1, target="tpu")


def test_eager_attention_training_memory_grows_quadratically_and_the_scan_linearly():
    def activations(name, tokens, **kw):
        return estimate_train(name, tokens, 1, target="cuda", **kw)["activation_peak_bytes"]

    eager = activations("ssast_tiny", 8192, attn_impl="eager") / activations("ssast_tiny", 4096, attn_impl="eager")
    fused = activations("ssast_tiny", 8192, attn_impl="sdpa") / activations("ssast_tiny", 4096, attn_impl="sdpa")
    scan = activations("ssamba_tiny", 8192) / activations("ssamba_tiny", 4096)
    assert eager > 3.3  # the saved (B, H, N, N) softmax dominates
    assert 1.8 < fused < 2.2 and 1.8 < scan < 2.2


def test_fused_attention_backward_matches_autograd_of_sdpa():
    q, k, v = (torch.randn(1, 2, 16, 8, dtype=torch.float64, requires_grad=True) for _ in range(3))
    dout = torch.randn(1, 2, 16, 8, dtype=torch.float64)
    grads = torch.autograd.grad(fused_attention(q, k, v)[0], (q, k, v), dout)
    expected = torch.autograd.grad(torch.nn.functional.scaled_dot_product_attention(q, k, v), (q, k, v), dout)
    for g, e in zip(grads, expected):
        torch.testing.assert_close(g, e)
    with sdpa_as_fused_op():  # and the model-facing route differentiates the same way
        out = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    torch.testing.assert_close(torch.autograd.grad(out, q, dout)[0], expected[0])


@pytest.fixture(scope="module")
def train_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("train") / "run"
    assert cli.main(["sweep", "ci", "--set", 'protocol="train"', "--set", "tokens=[64,256]", "--out", str(run_dir),
                     "--quiet", "--no-table"]) == 0
    return run_dir


def test_a_train_sweep_records_steps_memory_and_prediction_per_case(train_run):
    df = load_runs([train_run])
    status = df[df["metric"] == "status"]
    assert set(status["protocol"]) == {"train"} and set(status["status"]) == {"ok"} and len(status) == 6
    for case_id, rows in df[df["metric"] != "status"].groupby("case_id"):
        metrics = set(zip(rows["metric"], rows["stat"]))
        assert {("latency_s", "median"), ("latency_cold_s", "value"), ("throughput_tokens_per_s", "median"),
                ("peak_mem_bytes", "tensor_bytes"), ("base_mem_bytes", "tensor_bytes"),
                ("predicted_peak_mem_bytes", "tensor_bytes"), ("flops", "value")} <= metrics
        value = dict(zip(zip(rows["metric"], rows["stat"]), rows["value"]))
        ratio = value[("predicted_peak_mem_bytes", "tensor_bytes")] / value[("peak_mem_bytes", "tensor_bytes")]
        assert abs(ratio - 1) <= 0.10, (case_id, ratio)
    sdpa = status[status["attn_impl"] == "sdpa"]
    assert set(sdpa["sdpa_backend"]) == {"flash_cpu"}  # which kernel ran, recorded
    assert status[status["attn_impl"] != "sdpa"]["sdpa_backend"].isna().all()


def test_the_claims_report_has_a_training_section_apart_from_inference(train_run):
    report = build_report([train_run], predict=False)
    assert report["comparisons"] == []  # no inference rows: nothing of the training run leaks in there
    training = report["training"]
    assert {c["protocol"] for c in training["comparisons"]} == {"train"}
    assert {c["attn_impl_ref"] for c in training["comparisons"]} == {"eager", "sdpa"}
    assert len(training["prediction_check"]) == 6 and all(c["within_tolerance"] for c in training["prediction_check"])
    text = render(report)
    assert "## Training" in text and "6 of 6 cases within 10%" in text and "## The claim" not in text


def test_the_training_predictions_at_the_paper_point_order_the_models_as_their_memory_should():
    from bench.report.claims_training import predictions_at_paper_point

    preds = {(p["model"], p["attn_impl"]): p for p in predictions_at_paper_point(["ssamba", "ssast"], "ssast")}
    eager, sdpa, ssamba = (preds[k]["peak_mem_bytes"] for k in
                           [("ssast_tiny", "eager"), ("ssast_tiny", "sdpa"), ("ssamba_tiny", None)])
    assert eager > ssamba > sdpa  # saved N^2 softmax > Mamba's saved (B, E, L) tensors > flash's O(N) state
    assert pd.Series([p["n_tokens"] for p in preds.values()]).eq(22016).all()


def test_estimate_train_on_the_command_line(capsys):
    import json

    assert cli.main(["estimate", "--model", "ssast_tiny", "--tokens", "512", "--attn-impl", "sdpa", "--train", "cpu",
                     "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["target"] == "cpu" and result["peak_mem_bytes"] > result["resident_bytes"] > 0
    assert cli.main(["estimate", "--model", "ssast_tiny", "--tokens", "512", "--train", "cpu", "--device", "l40"]) == 2
    assert "does not combine with --train" in capsys.readouterr().err
