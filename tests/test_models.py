"""Model-specific properties: attention implementations agree, SSAMBA is bidirectional, bad input fails clearly."""

import pytest
import torch

from models import create_model
from models.errors import UserInputError


def test_ssast_eager_and_sdpa_agree():
    torch.manual_seed(0)
    eager = create_model("ssast_tiny", input_frames=256, attn_impl="eager").eval()
    sdpa = create_model("ssast_tiny", input_frames=256, attn_impl="sdpa").eval()
    sdpa.load_state_dict(eager.state_dict())
    assert (eager.attn_impl, sdpa.attn_impl) == ("eager", "sdpa")
    x = torch.randn(2, 256, 128)
    with torch.inference_mode():
        a, b = eager.forward_features(x), sdpa.forward_features(x)
    assert (a - b).abs().max().item() < 1e-5


def test_attn_impl_is_per_instance():
    a = create_model("test_ssast", attn_impl="eager")
    b = create_model("test_ssast", attn_impl="sdpa")
    assert not any(blk.attn.fused_attn for blk in a.blocks)
    assert all(blk.attn.fused_attn for blk in b.blocks)


def _first_row_change(model, frames):
    """Max change of the patch tokens of the first frequency row (except its last time patch)
    when only the last frame of the input changes."""
    torch.manual_seed(1)
    x = torch.randn(1, frames, 128)
    y = x.clone()
    y[:, -1] += 5.0
    with torch.inference_mode():
        fx, fy = model.forward_features(x), model.forward_features(y)
    t_dim = model.grid.t_dim(frames)
    first_row = slice(model.num_prefix_tokens, model.num_prefix_tokens + t_dim - 1)  # f = 0, t < t_dim - 1
    return (fx[:, first_row] - fy[:, first_row]).abs().max().item()


def test_ssamba_is_bidirectional():
    # With frequency-major tokens, the last frame only touches the last time patch of each frequency
    # row, so the first row's earlier tokens precede every changed patch: only a backward pass reaches them.
    model = create_model("test_ssamba", input_frames=64, scan_impl="reference").eval()
    assert _first_row_change(model, 64) > 1e-5  # a unidirectional model gives exactly 0


def test_forward_direction_alone_is_causal():
    # The control: one direction of the mixer cannot see the future, so the same change leaves the
    # earlier positions exactly as they were. This is what a unidirectional model would give.
    torch.manual_seed(2)
    mixer = create_model("test_ssamba", scan_impl="reference").layers[0].mixer
    h = torch.randn(1, 20, 32)
    h2 = h.clone()
    h2[:, -1] += 1.0
    with torch.no_grad():
        def forward_only(inp):
            x, z = mixer.in_proj(inp).transpose(1, 2).chunk(2, dim=1)
            return mixer._direction(x, z, mixer.conv1d, mixer.x_proj, mixer.dt_proj, mixer.A_log, mixer.D)
        assert torch.equal(forward_only(h)[..., :-1], forward_only(h2)[..., :-1])
        assert (mixer(h)[:, :-1] - mixer(h2)[:, :-1]).abs().max() > 1e-6


def test_ssamba_keeps_the_doubling_residual_quirk():
    # The flipped pair adds, not averages, its two residual streams: with zeroed mixers the residual
    # doubles per pair, and norm_f (applied twice) is scale-invariant, so we look before it.
    model = create_model("test_ssamba", input_frames=32).eval()
    for layer in model.layers:
        torch.nn.init.zeros_(layer.mixer.out_proj.weight)
    x = model.patch_embed(torch.randn(1, 32, 128))
    x = torch.cat((model.cls_token, x), 1) + model.pos_embed
    h, residual = x, None
    with torch.no_grad():
        for i in range(0, len(model.layers), 2):
            h_f, r_f = model.layers[i](h, residual)
            h_b, r_b = model.layers[i + 1](h.flip(1), None if residual is None else residual.flip(1))
            h, residual = h_f + h_b.flip(1), r_f + r_b.flip(1)
    assert torch.allclose(residual, x * 2 ** (len(model.layers) // 2))


@pytest.mark.parametrize(
    "make_input,match",
    [
        (lambda: torch.randn(64, 128), r"shape \(B, T, 128\)"),
        (lambda: torch.randn(1, 64, 80), "80 mel bins"),
        (lambda: torch.randn(1, 48, 128), "built for 64 frames but got 48"),
    ],
)
@pytest.mark.parametrize("name", ["test_ssast", "test_ssamba"])
def test_bad_input_is_a_clear_error(name, make_input, match):
    model = create_model(name, input_frames=64)
    with pytest.raises(UserInputError, match=match):
        model(make_input())


def test_bad_construction_is_a_clear_error():
    with pytest.raises(UserInputError, match="fewer than one 16-frame patch"):
        create_model("test_ssast", input_frames=8)
    with pytest.raises(UserInputError, match="did you mean ssamba_tiny"):
        create_model("ssamba_tiyn")
    with pytest.raises(UserInputError, match="unknown attn_impl 'flash3'"):
        create_model("ssast_tiny", attn_impl="flash3")
    with pytest.raises(UserInputError, match="unknown scan_impl"):
        create_model("ssamba_tiny", scan_impl="nope")
    with pytest.raises(UserInputError, match="unknown option.*attn_impl"):
        create_model("ssamba_tiny", attn_impl="eager")  # SSAMBA has no attention


def test_ssast_blocks_use_the_authors_timm_vit_init():
    # The authors' encoder came from timm's VisionTransformer, which initialises every Linear with
    # trunc-normal(0.02) and zero bias, LayerNorms with 1 / 0 (PyTorch's default would give ~0.04 here).
    torch.manual_seed(0)
    model = create_model("ssast_tiny", input_frames=128)
    qkv = model.blocks[0].attn.qkv
    assert abs(qkv.weight.std().item() - 0.02) < 0.002
    assert torch.count_nonzero(qkv.bias) == 0 and torch.count_nonzero(model.blocks[3].mlp.fc2.bias) == 0
    assert torch.all(model.norm.weight == 1) and torch.all(model.blocks[0].norm1.bias == 0)
