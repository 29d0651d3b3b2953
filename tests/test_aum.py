"""AuM's own properties. The shared contract (shapes, token count, backward, no NaN) is
tests/test_model_contract.py's, which covers aum_* through list_models() with no AuM code."""

import pytest
import torch
from torch import nn

from models import create_model
from models.aum import FoBiMixer, MambaMixer
from models.errors import UserInputError
from models.scan import selective_scan_reference
from models.ssamba import BiMambaMixer

# Parameter counts with a 527-class head at N = 512 patches (docs/models.md, "AuM"), in millions.
PUBLISHED_PARAMS_M = {
    ("aum_tiny", "fo_bi"): 6.44,
    ("aum_small", "fo_bi"): 23.94,
    ("aum_base", "fo_bi"): 92.11,
    ("aum_tiny", "bi_bi"): 7.02,
    ("aum_small", "bi_bi"): 25.54,
    ("aum_base", "bi_bi"): 97.08,
    ("aum_base", "fo_fo"): 91.52,
}


@pytest.mark.parametrize("name,mixer", sorted(PUBLISHED_PARAMS_M))
def test_parameter_counts_match_the_paper(name, mixer):
    with torch.device("meta"):
        model = create_model(name, mixer=mixer)
    assert model.n_tokens == 512 and model.num_classes == 527 and len(model.layers) == 24
    assert model.num_parameters(include_head=True) / 1e6 == pytest.approx(PUBLISHED_PARAMS_M[name, mixer], rel=1e-3)


def test_exact_tiny_block_parameter_counts():
    # Per block at D = 192 (E = 384, N = 16, R = 12): in_proj 147,456 + conv 1,920 + x_proj 16,896 +
    # dt_proj 4,992 + A 6,144 + D 384 + out_proj 73,728 + RMSNorm 192 = 251,712 for Fo-Fo; Fo-Bi adds
    # A_b_log (6,144); Bi-Bi is SSAMBA's block (282,240) with RMSNorm's 192 in place of LayerNorm's 384.
    for mixer, expected in (("fo_fo", 251_712), ("fo_bi", 257_856), ("bi_bi", 282_048)):
        with torch.device("meta"):
            model = create_model("aum_tiny", mixer=mixer)
        assert sum(p.numel() for p in model.layers[0].parameters()) == expected


def test_mixer_variants_and_their_parameters():
    names = {"in_proj.weight", "conv1d.weight", "conv1d.bias", "x_proj.weight", "dt_proj.weight", "dt_proj.bias",
             "A_log", "D", "out_proj.weight"}
    backward = {"conv1d_b.weight", "conv1d_b.bias", "x_proj_b.weight", "dt_proj_b.weight", "dt_proj_b.bias",
                "A_b_log", "D_b"}
    expected = {"fo_fo": (MambaMixer, names), "fo_bi": (FoBiMixer, names | {"A_b_log"}),
                "bi_bi": (BiMambaMixer, names | backward)}
    for mixer, (cls, params) in expected.items():
        model = create_model("test_aum", mixer=mixer)
        assert model.config.mixer == mixer and model.describe()["mixer"] == mixer
        assert all(type(layer.mixer) is cls for layer in model.layers)
        assert {n for n, _ in model.layers[0].mixer.named_parameters()} == params
        norm = model.layers[0].norm
        assert isinstance(norm, nn.RMSNorm) and norm.eps == 1e-5
        assert [n for n, _ in norm.named_parameters()] == ["weight"]  # weight only, no bias
    assert isinstance(model.norm_f, nn.RMSNorm) and model.norm_f.eps == 1e-5
    with pytest.raises(UserInputError, match="unknown AuM mixer 'bi_fo'; choose one of fo_bi, bi_bi, fo_fo"):
        create_model("test_aum", mixer="bi_fo")


def test_cls_token_sits_in_the_middle_with_its_positional_vector():
    torch.manual_seed(0)
    model = create_model("test_aum", input_frames=48, num_classes=5, scan_impl="reference").eval()
    n, k = model.n_tokens, model.cls_position
    assert (n, k) == (24, 12)
    seen = {}
    model.layers[0].register_forward_pre_hook(lambda mod, args: seen.update(h=args[0]))  # the block's input
    x = torch.randn(2, 48, 128)
    with torch.no_grad():
        features = model.forward_features(x)
        patches = model.patch_embed(x)  # (B, N, D)
        pe = model.pos_embed
        h = seen["h"]
        assert h.shape == (2, n + 1, model.embed_dim)
        torch.testing.assert_close(h[:, k], (model.cls_token + pe[:, 0]).expand(2, -1, -1)[:, 0])
        torch.testing.assert_close(h[:, :k], patches[:, :k] + pe[:, 1:1 + k])
        torch.testing.assert_close(h[:, k + 1:], patches[:, k:] + pe[:, 1 + k:])
        # The head reads the final-norm state at the cls position: one Linear, no LayerNorm, no pooling.
        assert type(model.head) is nn.Linear
        torch.testing.assert_close(model(x), model.head(features[:, k]))
        # patch_tokens drops the cls token and keeps the grid order.
        torch.testing.assert_close(model.patch_tokens(features), torch.cat((features[:, :k], features[:, k + 1:]), 1))
    bare = create_model("test_aum", input_frames=48, num_classes=0, scan_impl="reference").eval()
    assert isinstance(bare.head, nn.Identity)
    with torch.no_grad():
        torch.testing.assert_close(bare(x), bare.forward_features(x)[:, k])


def test_fo_bi_shares_everything_but_A_and_sums_the_directions():
    # Fo-Bi = Fo-Fo with the same shared weights + the backward scan of the FLIPPED conv output,
    # delta, B, C and z under A_b, summed (not averaged) before out_proj.
    torch.manual_seed(0)
    fo_bi = FoBiMixer(32, n_layer=4, scan_impl="reference")
    fo_fo = MambaMixer(32, n_layer=4, scan_impl="reference")
    missing, unexpected = fo_fo.load_state_dict(fo_bi.state_dict(), strict=False)
    assert (missing, unexpected) == ([], ["A_b_log"])
    with torch.no_grad():
        fo_bi.A_b_log.add_(torch.rand_like(fo_bi.A_b_log))  # make A_b differ from A
        h = torch.randn(2, 20, 32)
        x, z, delta, B, C = fo_bi._project(h)
        y_b = selective_scan_reference(
            x.flip(-1), delta.flip(-1), -torch.exp(fo_bi.A_b_log), B.flip(-1), C.flip(-1), fo_bi.D,
            z=z.flip(-1), delta_bias=fo_bi.dt_proj.bias, delta_softplus=True,
        )
        expected = fo_fo(h) + fo_bi.out_proj(y_b.flip(-1).transpose(1, 2))
        torch.testing.assert_close(fo_bi(h), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mixer,bidirectional", [("fo_bi", True), ("bi_bi", True), ("fo_fo", False)])
def test_backward_direction_sees_the_flipped_sequence(mixer, bidirectional):
    # Tokens are frequency-major, so the last frame touches only the last time patch of each frequency
    # row: the first row's earlier tokens (all before the middle cls) precede every changed patch, and
    # only a backward scan carries the change to them. Fo-Fo, a causal model, is the control.
    model = create_model("test_aum", input_frames=64, mixer=mixer, scan_impl="reference").eval()
    torch.manual_seed(1)
    x = torch.randn(1, 64, 128)
    y = x.clone()
    y[:, -1] += 5.0
    with torch.no_grad():
        fx, fy = model.forward_features(x), model.forward_features(y)
    first_row = slice(0, model.grid.t_dim(64) - 1)  # f = 0, t < t_dim - 1; before cls_position
    assert first_row.stop <= model.cls_position
    change = (fx[:, first_row] - fy[:, first_row]).abs().max().item()
    if bidirectional:
        assert change > 1e-5
    else:
        assert change == 0.0


def test_scan_impl_is_per_instance_and_recorded():
    model = create_model("test_aum", scan_impl="reference", mixer="bi_bi")
    assert model.scan_impl == "reference" and model.describe()["scan_impl"] == "reference"
    assert model.attn_impl is None and model.family == "aum" and model.size == "test"
    model.set_scan_impl("chunked")
    assert model.scan_impl == "chunked" and model.requested_scan_impl == "chunked"
    assert all(layer.mixer.scan_impl == "chunked" for layer in model.layers)
    with pytest.raises(UserInputError, match="unknown scan_impl"):
        create_model("test_aum", scan_impl="nope")
    with pytest.raises(UserInputError, match="unknown option.*attn_impl"):
        create_model("aum_tiny", attn_impl="eager")  # AuM has no attention
