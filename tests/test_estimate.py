"""FLOP and memory predictions on meta tensors: the paper's point, and agreement with real CPU runs."""

import pytest
import torch

from bench.cli import main
from bench.estimate import estimate
from bench.measure.memory import measure_tensor_bytes, model_tensors
from models import create_model
from models.tokenizer import frames_for_tokens


def test_paper_point_predictions():
    ssast = estimate("ssast_tiny", 22000, batch=4, attn_impl="eager")
    ssamba = estimate("ssamba_tiny", 22000, batch=4)
    # Published at 22k tokens, batch 4, fp32 on an L40: ~44.7 GB and ~2.04 GB.
    assert 40e9 <= ssast["peak_mem_bytes"] <= 50e9
    assert 1.5e9 <= ssamba["peak_mem_bytes"] <= 3e9
    # FLOPs per batch of 4: SSAST-tiny ~18.8 TFLOP, SSAMBA-tiny ~1.36 TFLOP (within 10%).
    assert ssast["flops"] == pytest.approx(18.8e12, rel=0.10)
    assert ssamba["flops"] == pytest.approx(1.36e12, rel=0.10)


def test_eager_attention_memory_is_quadratic_and_fused_is_not():
    eager = [estimate("ssast_tiny", n, attn_impl="eager")["activation_peak_bytes"] for n in (2048, 4096)]
    fused = [estimate("ssast_tiny", n, attn_impl="sdpa")["activation_peak_bytes"] for n in (2048, 4096)]
    assert eager[1] / eager[0] == pytest.approx(4, rel=0.1)
    assert fused[1] / fused[0] == pytest.approx(2, rel=0.1)
    # Two (B, H, N, N) fp32 buffers alive at once: 2 * 1 * 3 * N^2 * 4 bytes.
    n = 4096 + 2
    assert eager[1] >= 2 * 3 * n * n * 4


def measured_tensor_peak(name: str, n_tokens: int, batch: int, **kw) -> int:
    """Peak live tensor bytes of a real CPU forward, weights and input included."""
    torch.manual_seed(0)
    model = create_model(name, input_frames=frames_for_tokens(n_tokens), **kw).eval()
    x = torch.randn(batch, model.input_frames, 128)
    with torch.inference_mode():
        model(x)  # as the harness does: measure after the cold call (first-call setup is not the forward's)
        return measure_tensor_bytes(lambda: model(x), model_tensors(model, x))[1]


@pytest.mark.parametrize(
    "name,tokens,batch,kw",
    [
        ("ssast_tiny", 512, 2, {"attn_impl": "eager"}),
        ("ssast_tiny", 512, 2, {"attn_impl": "sdpa"}),
        ("ssamba_tiny", 256, 2, {}),
        ("test_ssamba", 1024, 1, {"scan_impl": "reference"}),
    ],
)
def test_prediction_matches_measured_cpu_tensor_bytes(name, tokens, batch, kw):
    predicted = estimate(name, tokens, batch, **kw)["peak_mem_bytes"]
    measured = measured_tensor_peak(name, tokens, batch, **kw)
    assert predicted == pytest.approx(measured, rel=0.10)


def test_tensor_tracker_is_deterministic():
    assert measured_tensor_peak("test_ssast", 256, 1) == measured_tensor_peak("test_ssast", 256, 1)


def test_estimate_cli_json_and_bad_input(capsys):
    assert main(["estimate", "--model", "ssamba", "--size", "tiny", "--tokens", "1000", "--batch", "2", "--json"]) == 0
    out = capsys.readouterr().out
    assert '"flops"' in out and '"peak_mem_bytes"' in out and '"n_tokens": 1000' in out
    assert main(["estimate", "--model", "ssamba", "--size", "huge", "--tokens", "1000"]) == 2
    assert "unknown model 'ssamba_huge'" in capsys.readouterr().err
    assert main(["estimate", "--model", "ssast_tiny", "--tokens", "3"]) == 2
    assert "fewer than one column" in capsys.readouterr().err
