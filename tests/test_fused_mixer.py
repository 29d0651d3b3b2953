"""The fused CPU Mamba mixer path (issue 19) computes the authors' model: the causal conv + SiLU kernel,
the reverse selective scan with its combining epilogue, and SSAMBA / AuM with `fused_mixer` on and
off, compared value by value (float32 within 2e-5, float64 within 1e-9), gradients included; and
the fused path really runs without flips or layout copies."""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from models.registry import create_model
from models.scan import selective_scan
from models.scan.causal_conv import MAX_FUSED_TAPS, _fused, causal_conv1d_silu, causal_conv1d_silu_reference
from models.scan.cpu import cpu_ext_available
from models.scan.split_channels import split_channels
from models.tokenizer import PatchGrid

pytestmark = pytest.mark.skipif(not cpu_ext_available(), reason="the C++ CPU kernels did not build here")

TOL = {torch.float32: 2e-5, torch.float64: 1e-9}


def lanes(batch: int, dim: int, length: int, dtype, width: int = 1) -> torch.Tensor:
    """A (B, E, L) view with unit stride along E, as SSAMBA's x (half of a transposed Linear output)."""
    return torch.randn(batch, length, width * dim, dtype=dtype).transpose(1, 2)[:, :dim]


def leaves(*tensors):
    return [None if t is None else t.detach().clone().requires_grad_(True) for t in tensors]


def assert_close(actual, expected, dtype, what):
    scale = max(1.0, expected.abs().max().item())
    err = (actual - expected).abs().max().item()
    assert err <= TOL[dtype] * scale, f"{what}: max error {err:.2e} (scale {scale:.2f})"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("shape,layout,with_bias", [
    ((2, 40, 37, 4), "lanes", True), ((1, 19, 300, 4), "lanes", True), ((3, 17, 2, 4), "rows", True),
    ((1, 5, 1, 3), "lanes", False), ((2, 9, 130, 2), "rows", False), ((1, 384, 64, 4), "lanes", True),
    ((1, 12, 50, 16), "lanes", True)])
def test_causal_conv_matches_the_authors_conv(dtype, reverse, shape, layout, with_bias):
    batch, dim, length, width = shape
    torch.manual_seed(0)
    x = lanes(batch, dim, length, dtype, 2) if layout == "lanes" else torch.randn(batch, dim, length, dtype=dtype)
    weight = torch.randn(dim, width, dtype=dtype) * 0.5
    bias = torch.randn(dim, dtype=dtype) if with_bias else None
    fused, ref = leaves(x, weight, bias), leaves(x, weight, bias)
    y = causal_conv1d_silu(*fused, reverse)
    y_ref = causal_conv1d_silu_reference(*ref, reverse)
    assert y.shape == y_ref.shape and y.stride(1) == 1  # written channel-contiguous, for x_proj
    assert_close(y, y_ref, dtype, "output")
    grad = torch.randn_like(y_ref)
    (y * grad).sum().backward()
    (y_ref * grad).sum().backward()
    for a, b, name in zip(fused, ref, ("dx", "dweight", "dbias")):
        if b is not None:
            assert_close(a.grad, b.grad, dtype, name)


def test_only_convs_the_kernel_can_take_go_to_it():
    x = lanes(1, 8, 20, torch.float32, 2)
    assert _fused(x, torch.randn(8, MAX_FUSED_TAPS))
    wide = torch.randn(8, MAX_FUSED_TAPS + 1)
    assert not _fused(x, wide)  # the reference computes it instead
    assert torch.equal(causal_conv1d_silu(x, wide, None), causal_conv1d_silu_reference(x, wide, None))
    assert not _fused(x.half(), torch.randn(8, 4).half())


@pytest.mark.parametrize("used", ["both", "x only", "z only"])
def test_split_channels_moves_gradients_exactly(used):
    """The fused path's split of in_proj's output: the same views as transpose + chunk, and a
    gradient equal bit for bit to theirs, in in_proj's (B, L, 2E) layout."""
    torch.manual_seed(0)
    xz = torch.randn(2, 33, 2 * 24)
    mine, theirs = leaves(xz, xz)
    x, z = split_channels(mine)
    x_ref, z_ref = theirs.transpose(1, 2).chunk(2, dim=1)
    assert torch.equal(x, x_ref) and torch.equal(z, z_ref) and x.stride() == x_ref.stride()
    gx, gz = torch.randn_like(x), torch.randn_like(z)

    def loss(a, b):  # a half left out of the loss gets no gradient at all (None in the backward)
        terms = [(a.sin() * gx).sum()] if used != "z only" else []
        return sum(terms + ([(b.cos() * gz).sum()] if used != "x only" else []))
    loss(x, z).backward()
    loss(x_ref, z_ref).backward()
    assert torch.equal(mine.grad, theirs.grad)
    assert mine.grad.is_contiguous()  # no transposing copy left for in_proj's backward


def test_causal_conv_reverse_is_flipped_causal_conv():
    torch.manual_seed(0)
    x, weight, bias = lanes(2, 24, 50, torch.float64), torch.randn(24, 4, dtype=torch.float64), torch.randn(24)
    bias = bias.double()
    forward_of_flipped = causal_conv1d_silu(x.flip(-1).contiguous(), weight, bias, False).flip(-1)
    assert torch.allclose(causal_conv1d_silu(x, weight, bias, True), forward_of_flipped, atol=1e-12)


def scan_inputs(batch, dim, length, nstate, dtype):
    A = -(torch.rand(dim, nstate, dtype=dtype) + 0.5)
    return [lanes(batch, dim, length, dtype), lanes(batch, dim, length, dtype) * 0.5, A,
            torch.randn(batch, length, nstate, dtype=dtype).transpose(1, 2),
            torch.randn(batch, length, nstate, dtype=dtype).transpose(1, 2),
            torch.randn(dim, dtype=dtype), lanes(batch, dim, length, dtype), torch.randn(dim, dtype=dtype)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("length", [1, 7, 300])
@pytest.mark.parametrize("epilogue", [None, 0.5, 1.0])
def test_reverse_scan_and_epilogue_match_the_reference(dtype, length, epilogue):
    torch.manual_seed(1)
    inputs = scan_inputs(2, 20, length, 16, dtype)
    addend = None if epilogue is None else lanes(2, 20, length, dtype)
    scale = 1.0 if epilogue is None else epilogue
    fused, ref = leaves(*inputs, addend), leaves(*inputs, addend)
    y = selective_scan(*fused[:8], impl="cpu_cpp", reverse=True, addend=fused[8], out_scale=scale)
    # The reference: flip every sequence, scan forwards, flip back, then combine as separate ops.
    u, delta, A, B, C, D, z, db = ref[:8]
    y_ref = selective_scan(u.flip(-1), delta.flip(-1), A, B.flip(-1), C.flip(-1), D, z.flip(-1), db,
                           impl="reference").flip(-1)
    if addend is not None:
        y_ref = (ref[8] + y_ref) * scale
    assert_close(y, y_ref, dtype, "y")
    grad = torch.randn_like(y_ref)
    (y * grad).sum().backward()
    (y_ref * grad).sum().backward()
    for i, (a, b) in enumerate(zip(fused, ref)):
        if b is not None:
            assert_close(a.grad, b.grad, dtype, f"grad of input {i}")


@pytest.mark.parametrize("impl", ["chunked", "reference"])
def test_reverse_scan_on_other_backends_flips(impl):
    torch.manual_seed(2)
    inputs = scan_inputs(1, 8, 40, 4, torch.float64)
    y = selective_scan(*inputs, impl=impl, reverse=True)
    y_cpp = selective_scan(*inputs, impl="cpu_cpp", reverse=True)
    assert torch.allclose(y, y_cpp, atol=1e-9)


def model_pair(name: str, tokens: int, dtype=torch.float32, **options):
    frames = PatchGrid().frames_for_tokens(tokens)
    torch.manual_seed(0)
    fused = create_model(name, input_frames=frames, num_classes=10, **options)
    plain = create_model(name, input_frames=frames, num_classes=10, fused_mixer=False, **options)
    plain.load_state_dict(fused.state_dict())
    return fused.to(dtype), plain.to(dtype), torch.randn(2, frames, 128, dtype=dtype)


@pytest.mark.parametrize("name,options", [("test_ssamba", {}), ("test_aum", {"mixer": "fo_bi"}),
                                          ("test_aum", {"mixer": "bi_bi"}), ("test_aum", {"mixer": "fo_fo"})])
def test_fused_model_equals_the_authors_path(name, options):
    fused, plain, x = model_pair(name, 150, **options)
    fused.train(), plain.train()  # stochastic depth draws the same masks in both (same RNG use)
    torch.manual_seed(3)
    y = fused(x)
    torch.manual_seed(3)
    y_ref = plain(x)
    assert_close(y, y_ref, torch.float32, "logits")
    y.square().sum().backward()
    y_ref.square().sum().backward()
    for (pname, p), q in zip(fused.named_parameters(), plain.parameters()):
        assert_close(p.grad, q.grad, torch.float32, f"grad of {pname}")


def test_fused_ssamba_tiny_equals_the_authors_path_in_float64():
    fused, plain, x = model_pair("ssamba_tiny", 100, torch.float64)
    with torch.no_grad():
        assert_close(fused.eval()(x), plain.eval()(x), torch.float64, "logits")


class OpCounter(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.names: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.append(func.__name__)
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("name", ["test_ssamba", "test_aum"])
def test_fused_path_makes_no_flips_or_layout_copies(name):
    fused, plain, x = model_pair(name, 150)
    counts = {}
    for label, model in (("fused", fused.eval()), ("plain", plain.eval())):
        with torch.no_grad(), OpCounter() as ops:
            model(x)
        counts[label] = ops.names
    flips = [n for n in counts["fused"] if n.startswith("flip")]
    copies = [n for n in counts["fused"] if n.startswith(("clone", "copy", "_to_copy", "contiguous"))]
    assert not flips and not copies, (flips, copies)
    assert any(n.startswith("flip") for n in counts["plain"])  # the authors' path flips
    assert "causal_conv1d_silu.default" in counts["fused"] and "causal_conv1d_silu.default" not in counts["plain"]


def test_fused_mixer_is_a_model_option_recorded_as_such():
    from bench.harness.config import parse_model_options

    options = parse_model_options({"ssamba": {"fused_mixer": [True, False]}}, "model_options", "test")
    assert options == {"ssamba": {"fused_mixer": [True, False]}}
    model = create_model("test_ssamba", fused_mixer=False)
    assert model.config.fused_mixer is False
