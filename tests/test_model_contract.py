"""The contract every registered model keeps (timm's test_models.py in spirit): it builds, maps
(B, T, 128) to (B, num_classes) for two input lengths, stays finite, back-propagates, and its token
count is the tokenizer's."""

import pytest
import torch

from models import create_model, list_models
from models.tokenizer import tokens_for_frames

FRAMES = (32, 48)  # 16 and 24 patch tokens at stride 16: small enough for the base models on CPU


@pytest.mark.parametrize("name", list_models())
def test_model_contract(name):
    torch.manual_seed(0)
    for frames in FRAMES:
        model = create_model(name, input_frames=frames, num_classes=5)
        x = torch.randn(2, frames, 128)
        out = model(x)
        assert out.shape == (2, 5)
        assert torch.isfinite(out).all()
        assert model.n_tokens == tokens_for_frames(frames)
        features = model.forward_features(x)
        assert features.shape == (2, model.num_prefix_tokens + model.n_tokens, model.embed_dim)
        out.sum().backward()
        grads = [p.grad for p in model.parameters() if p.requires_grad]
        assert all(g is not None and torch.isfinite(g).all() for g in grads)
        assert isinstance(model.family, str) and model.family and model.describe()["family"] == type(model).family


@pytest.mark.parametrize("name", list_models())
def test_features_without_head(name):
    model = create_model(name, input_frames=32, num_classes=0)
    assert model(torch.randn(1, 32, 128)).shape == (1, model.embed_dim)


# Exact parameter counts at the pretraining grid (1024 frames, stride 16, 512 patches), no heads.
EXPECTED_BACKBONE_PARAMS = {
    "ssast_tiny": 5_487_168,
    "ssast_small": 21_591_168,
    "ssast_base": 85_649_664,
    "ssamba_tiny": 6_922_176,
    "ssamba_small": 25_345_920,
    "ssamba_base": 96_698_112,
}


@pytest.mark.parametrize("name,expected", sorted(EXPECTED_BACKBONE_PARAMS.items()))
def test_backbone_parameter_counts(name, expected):
    with torch.device("meta"):
        model = create_model(name)
    assert model.n_tokens == 512
    assert model.num_parameters(include_head=False) == expected


def test_ssamba_block_parameter_count():
    with torch.device("meta"):
        model = create_model("ssamba_tiny")
    assert sum(p.numel() for p in model.layers[0].parameters()) == 282_240
    assert len(model.layers) == 24
