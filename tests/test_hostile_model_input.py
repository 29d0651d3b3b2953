"""Hostile input to the models' public entry points: every input either works or raises one clear
UserInputError, never a crash of the process (SIGFPE, SIGSEGV) nor a cryptic error from deep inside.

An empty batch is valid input: it returns an empty output, (0, num_classes) or (0, D), for every
registered model on every scan backend that runs here, and back-propagates to zero-size input
gradients and zero (or absent) parameter gradients. It once killed the process with SIGFPE inside
the C++ scan, so those checks run in a child interpreter and the test reads its exit status.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from models import create_model, list_models
from models.errors import UserInputError
from models.pretrain import MaskedPatchPretrainer
from models.registry import get_builder
from models.scan.cpu import cpu_ext_available

ROOT = Path(__file__).resolve().parents[1]
FRAMES = 32  # 16 patch tokens: small enough to build every registered size
MODEL_BACKENDS = ("reference", "chunked", "cpu_cpp")  # the scan backends that run on a CPU here
TEST_MODELS = ("test_ssast", "test_ssamba", "test_aum")


def run_isolated(function: str, *args) -> subprocess.CompletedProcess:
    """Call `function(*args)` of this module in a child interpreter, so that a kernel crash kills the
    child, not the test session; the child prints `ok ...` per case as it passes."""
    code = (f"import sys; sys.path.insert(0, 'tests'); import test_hostile_model_input as t; "
            f"t.{function}(*{args!r})")
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=900)


def assert_child_ok(proc: subprocess.CompletedProcess) -> list[list[str]]:
    died = f"killed by signal {-proc.returncode}" if proc.returncode < 0 else f"exit status {proc.returncode}"
    assert proc.returncode == 0, f"child {died}; it got as far as:\n{proc.stdout}\n{proc.stderr[-3000:]}"
    return [line.split()[1:] for line in proc.stdout.splitlines() if line.startswith("ok ")]


def backends_here() -> tuple[str, ...]:
    return tuple(b for b in MODEL_BACKENDS if b != "cpu_cpp" or cpu_ext_available())


def check_parameter_grads_are_zero(model) -> None:
    for name, p in model.named_parameters():
        assert p.grad is None or (p.grad.shape == p.shape and not p.grad.any()), name


def check_empty_batch(names, backends) -> None:
    """Child side of test_empty_batch: each model built once, switched through the scan backends."""
    for name in names:
        torch.manual_seed(0)
        model = create_model(name, input_frames=FRAMES, num_classes=5)
        prefix_plus_n = model.num_prefix_tokens + model.n_tokens
        for impl in backends if hasattr(model, "set_scan_impl") else ("-",):
            if impl != "-":
                model.set_scan_impl(impl)
                assert model.scan_impl == impl
            for training in (True, False):  # train mode: stochastic depth draws a (0,) mask
                model.train(training)
                model.zero_grad(set_to_none=True)
                x = torch.randn(0, FRAMES, 128, requires_grad=True)
                out = model(x)
                assert out.shape == (0, 5) and out.dtype == torch.float32, out.shape
                out.sum().backward()
                assert x.grad is not None and x.grad.shape == x.shape
                check_parameter_grads_are_zero(model)
            with torch.inference_mode():
                assert model.forward_features(torch.randn(0, FRAMES, 128)).shape == (0, prefix_plus_n, model.embed_dim)
            print(f"ok {name} {impl}", flush=True)
        if name in TEST_MODELS:  # without a head: (0, D) features
            bare = create_model(name, input_frames=FRAMES, num_classes=0)
            for impl in backends if hasattr(bare, "set_scan_impl") else ("-",):
                if impl != "-":
                    bare.set_scan_impl(impl)
                assert bare(torch.randn(0, FRAMES, 128)).shape == (0, bare.embed_dim)
                print(f"ok {name}:features {impl}", flush=True)


def check_non_finite(names, backends) -> None:
    """Child side of test_non_finite_input: NaN and inf run through (non-finite output is fine)."""
    for name in names:
        torch.manual_seed(0)
        model = create_model(name, input_frames=FRAMES, num_classes=5)
        for impl in backends if hasattr(model, "set_scan_impl") else ("-",):
            if impl != "-":
                model.set_scan_impl(impl)
            for value in (float("nan"), float("inf"), float("-inf")):
                x = torch.randn(2, FRAMES, 128)
                x[0, 3, 5] = value  # one bad bin in the first clip only
                x.requires_grad_(True)
                out = model(x)
                assert out.shape == (2, 5)
                out.sum().backward()  # NaN gradients are fine; a crash is not
                assert x.grad.shape == x.shape
            print(f"ok {name} {impl}", flush=True)


def test_empty_batch():
    """Every built-in model, every scan backend here: forward, backward, features, eval and train.
    (Models other tests register in this process, e.g. from a "module:function" spec, do not exist
    in the child: it checks the built-in ones.)"""
    names, backends = [n for n in list_models() if get_builder(n).__module__.startswith("models.")], backends_here()
    done = assert_child_ok(run_isolated("check_empty_batch", names, backends))
    covered: dict[str, set[str]] = {}
    for name, impl in done:
        covered.setdefault(name, set()).add(impl)
    assert set(covered) == set(names) | {f"{n}:features" for n in TEST_MODELS}
    assert all(impls in ({"-"}, set(backends)) for impls in covered.values()), covered
    assert covered["test_ssamba"] == covered["test_aum"] == set(backends)


def test_non_finite_input():
    done = assert_child_ok(run_isolated("check_non_finite", TEST_MODELS, backends_here()))
    assert len(done) == 1 + 2 * len(backends_here())


def test_non_finite_input_gives_non_finite_output_only_where_it_was():
    # Clips are independent: a NaN in one clip leaves the other clip's output finite and unchanged.
    for name in TEST_MODELS:
        torch.manual_seed(0)
        model = create_model(name, input_frames=FRAMES, num_classes=5).eval()
        x = torch.randn(2, FRAMES, 128)
        bad = x.clone()
        bad[0, 3, 5] = float("nan")
        with torch.no_grad():
            clean, dirty = model(x), model(bad)
        assert torch.isnan(dirty[0]).all(), name
        torch.testing.assert_close(dirty[1], clean[1], rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.parametrize("name", TEST_MODELS)
@pytest.mark.parametrize(
    "make_input,match",
    [
        pytest.param(lambda: torch.randn(FRAMES, 128), r"shape \(B, T, 128\)", id="2d"),
        pytest.param(lambda: torch.randn(1, 1, FRAMES, 128), r"shape \(B, T, 128\)", id="4d"),
        pytest.param(lambda: torch.randn(1, FRAMES, 80), "80 mel bins", id="80_mels"),
        pytest.param(lambda: torch.randn(1, 128, FRAMES), r"transpose\(1, 2\)", id="mels_before_frames"),
        pytest.param(lambda: torch.randn(1, 48, 128), f"built for {FRAMES} frames but got 48", id="frames"),
        pytest.param(lambda: torch.randn(1, 8, 128), f"built for {FRAMES} frames but got 8", id="under_one_patch"),
        pytest.param(lambda: torch.randn(1, 0, 128), f"built for {FRAMES} frames but got 0", id="no_frames"),
        pytest.param(lambda: torch.randint(0, 9, (1, FRAMES, 128)), "torch.int64.*floating", id="int64"),
        pytest.param(lambda: torch.ones(1, FRAMES, 128, dtype=torch.bool), "torch.bool.*floating", id="bool"),
        pytest.param(lambda: torch.randn(1, FRAMES, 128, dtype=torch.complex64), "complex64.*floating", id="complex"),
        pytest.param(lambda: torch.randn(1, FRAMES, 128, dtype=torch.float64), "float64.*float32", id="float64"),
        pytest.param(lambda: torch.randn(1, FRAMES, 128, dtype=torch.bfloat16), "bfloat16.*float32", id="bfloat16"),
        pytest.param(lambda: torch.randn(1, FRAMES, 128, device="meta"), "on meta.*on cpu", id="other_device"),
        pytest.param(lambda: torch.randn(1, FRAMES, 128).tolist(), "must be a torch.Tensor", id="list"),
    ],
)
def test_bad_input_is_one_clear_error(name, make_input, match):
    model = create_model(name, input_frames=FRAMES, num_classes=5)
    with pytest.raises(UserInputError, match=match):
        model(make_input())
    with pytest.raises(UserInputError, match=match):
        model.forward_features(make_input())


@pytest.mark.parametrize("name", TEST_MODELS)
def test_strided_input_works_and_matches(name):
    """Non-contiguous views of a (B, T, F) tensor are valid input and give the contiguous answer."""
    torch.manual_seed(0)
    model = create_model(name, input_frames=FRAMES, num_classes=5).eval()
    base = torch.randn(2, FRAMES, 128)
    views = {
        "transposed": base.transpose(1, 2).contiguous().transpose(1, 2),  # (B, F, T) storage
        "every_other": torch.stack([base, base], dim=-1).flatten(2)[..., ::2],  # stride 2 along F
        "expanded": base[:1].expand(2, -1, -1),  # zero stride along B
    }
    with torch.no_grad():
        expected = model(base)
        for label, x in views.items():
            assert not x.is_contiguous(), label
            want = expected if label != "expanded" else model(base[:1].contiguous()).expand(2, -1)
            torch.testing.assert_close(model(x), want, rtol=1e-5, atol=1e-6, msg=label)


@pytest.mark.parametrize("name", TEST_MODELS)
def test_matching_dtypes_and_autocast_still_work(name):
    """The dtype check refuses only what the patch convolution would refuse: a model converted to
    float64 takes float64 input, and under autocast the input's float dtype may differ."""
    torch.manual_seed(0)
    model = create_model(name, input_frames=FRAMES, num_classes=5).eval()
    with torch.no_grad():
        assert model.double()(torch.randn(1, FRAMES, 128, dtype=torch.float64)).dtype == torch.float64
        model.float()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert model(torch.randn(1, FRAMES, 128, dtype=torch.bfloat16)).shape == (1, 5)
            assert model(torch.randn(1, FRAMES, 128)).shape == (1, 5)


def test_meta_model_takes_meta_input():
    # What the memory estimates do: model and input both on the meta device.
    with torch.device("meta"):
        model = create_model("test_ssamba", input_frames=FRAMES, num_classes=5)
        assert model(torch.randn(0, FRAMES, 128)).shape == (0, 5)
        assert model(torch.randn(2, FRAMES, 128)).shape == (2, 5)


def test_pretraining_on_an_empty_batch_is_a_clear_error():
    # Its losses are means over clips: undefined for no clips, so say so rather than return NaN.
    pretrainer = MaskedPatchPretrainer(create_model("test_ssamba", input_frames=64, num_classes=0,
                                                    scan_impl="reference"), mask_patch=8)
    with pytest.raises(UserInputError, match="empty batch"):
        pretrainer(torch.randn(0, 64, 128))
    with pytest.raises(UserInputError, match="floating"):
        pretrainer(torch.randint(0, 9, (2, 64, 128)))


def test_front_end_names_a_samples_by_channels_waveform():
    pytest.importorskip("torchaudio")
    from models.tokenizer import AudioFrontend

    with pytest.raises(UserInputError, match=r"\(samples, channels\): pass waveform.T"):
        AudioFrontend(target_length=64)(torch.randn(16000, 2))
    assert AudioFrontend(target_length=64)(torch.randn(16000, 2).T).shape == (64, 128)
