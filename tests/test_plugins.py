"""Models registered from outside the repository (a "module:function" spec, an entry point in the
group `ssamba_bench.models`), and the contract check that rejects a model which breaks the contract
with a message naming the missing piece."""

import importlib.metadata
import sys
import textwrap

import pytest
import torch

from models import registry
from models.contract import check_model_contract
from models.errors import UserInputError
from models.registry import ENTRY_POINT_GROUP, create_model, import_model_spec, list_models
from models.tokenizer import tokens_for_frames

# An outside model written the way the README's "Add a model" says: one AudioModel subclass and
# builders; one builder decorated, one left for the spec or entry point to register.
EXTERNAL_MODEL = '''
import torch
from torch import nn

from models.base import AudioModel
from models.registry import register_model
from models.tokenizer import PatchGrid


class PatchMLP(AudioModel):
    family = "patchmlp"

    def __init__(self, *, size="tiny", embed_dim=16, input_frames=1024, num_classes=527):
        super().__init__(size=size, embed_dim=embed_dim, input_frames=input_frames, grid=PatchGrid(),
                         num_prefix_tokens=0, num_classes=num_classes)
        self.mlp = nn.Sequential(nn.Linear(embed_dim, embed_dim), nn.GELU())
        self.init_head()

    def encode(self, x):
        return self.mlp(self.patch_embed(x))  # (B, N, D)


def patchmlp_tiny(**overrides):
    return PatchMLP(**overrides)


@register_model
def patchmlp_small(**overrides):
    return PatchMLP(size="small", embed_dim=32, **overrides)
'''

# Models that break the contract, one way each.
BROKEN_MODELS = '''
import torch
from torch import nn

from models.base import AudioModel
from models.tokenizer import PatchGrid


class Unpooled(AudioModel):
    family = "broken"

    def __init__(self, **kw):
        super().__init__(size="tiny", embed_dim=8, input_frames=kw.get("input_frames", 32), grid=PatchGrid(),
                         num_prefix_tokens=0, num_classes=0)
        self.init_head()

    def encode(self, x):
        return self.patch_embed(x)

    def forward(self, x):
        return self.forward_features(x)  # (B, N, D): forgot to pool


class NoTokenCount(nn.Module):
    family, size, attn_impl, scan_impl, input_frames = "broken", "tiny", None, None, 32

    def __init__(self, **kw):
        super().__init__()
        self.proj = nn.Linear(128, 3)

    def forward(self, x):
        return self.proj(x).mean(1)


class Pooled(Unpooled):
    def forward(self, x):
        return self.pool(self.forward_features(x))


class NoImpl(Pooled):
    def __getattribute__(self, name):
        if name == "scan_impl":
            raise AttributeError(name)
        return super().__getattribute__(name)


class WrongTokenCount(Pooled):
    def __init__(self, **kw):
        super().__init__(**kw)
        self.n_tokens = 7


def wrong_rank(**kw):
    return Unpooled(**kw)


def no_token_count(**kw):
    return NoTokenCount(**kw)


def no_scan_impl(**kw):
    return NoImpl(**kw)


def wrong_token_count(**kw):
    return WrongTokenCount(**kw)


def not_a_module(**kw):
    return "a model"


raises_inside = 3


def ssamba_tiny(**kw):  # a name the suite already uses
    raise AssertionError("never built")
'''


@pytest.fixture
def outside(tmp_path, monkeypatch):
    """A fresh registry (the built-in models only, entry points not yet loaded) and a folder on
    sys.path holding the outside modules; both undone after the test."""
    monkeypatch.setattr(registry, "_BUILDERS", dict(registry._BUILDERS))
    monkeypatch.setattr(registry, "_entry_points_loaded", False)
    monkeypatch.setattr(registry, "_entry_point_error", None)
    modules = {"ext_models": EXTERNAL_MODEL, "ext_broken": BROKEN_MODELS,
               "ext_fails": "raise RuntimeError('CUDA extension missing')\n"}
    for name, text in modules.items():
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(text))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for name in modules:
        sys.modules.pop(name, None)


def fake_entry_points(monkeypatch, *specs):
    """Make importlib.metadata report `specs` ((name, value) pairs) in our group; returns a call counter."""
    eps = [importlib.metadata.EntryPoint(name=n, value=v, group=ENTRY_POINT_GROUP) for n, v in specs]
    calls = []

    def entry_points(**params):
        calls.append(params)
        return eps if params.get("group") == ENTRY_POINT_GROUP else []

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)
    return calls


def assert_keeps_contract(name):
    """What tests/test_model_contract.py checks, for a model that is not registered at collection time."""
    model = create_model(name, input_frames=48, num_classes=5)
    check_model_contract(model, name)
    out = model(torch.randn(2, 48, 128))
    assert out.shape == (2, 5) and torch.isfinite(out).all()
    assert model.n_tokens == tokens_for_frames(48)
    out.sum().backward()
    with torch.device("meta"):
        check_model_contract(create_model(name, input_frames=44_000), name)  # the sweep-start check: instant


def test_module_function_spec_registers_an_outside_model(outside):
    assert "patchmlp_tiny" not in list_models()
    assert import_model_spec("ext_models:patchmlp_tiny") == "patchmlp_tiny"
    assert import_model_spec("ext_models:patchmlp_tiny") == "patchmlp_tiny"  # twice is harmless
    assert import_model_spec("ext_models:patchmlp_small") == "patchmlp_small"  # registered by its import
    assert {"patchmlp_tiny", "patchmlp_small"} <= set(list_models("patchmlp*"))
    assert_keeps_contract("patchmlp_tiny")
    assert_keeps_contract("patchmlp_small")
    # A sweep config may name the spec itself wherever a model name goes.
    assert create_model("ext_models:patchmlp_tiny", input_frames=32).describe()["family"] == "patchmlp"


def test_entry_points_load_lazily_once(outside, monkeypatch):
    calls = fake_entry_points(monkeypatch, ("mlp-module", "ext_models"), ("mlp-tiny", "ext_models:patchmlp_tiny"))
    assert "ext_models" not in sys.modules  # nothing imported before the registry is asked
    assert {"patchmlp_tiny", "patchmlp_small"} <= set(list_models())
    assert list_models("patchmlp*") == ["patchmlp_small", "patchmlp_tiny"]
    assert len(calls) == 1
    assert_keeps_contract("patchmlp_tiny")


def test_a_broken_entry_point_is_named_every_time(outside, monkeypatch):
    fake_entry_points(monkeypatch, ("fast-models", "ext_fails"))
    for _ in range(2):
        with pytest.raises(UserInputError, match=r"entry point 'fast-models' = 'ext_fails' in group "
                                                 r"'ssamba_bench.models' failed to load: RuntimeError: CUDA extension"):
            create_model("test_aum")


def test_an_entry_point_cannot_take_a_builtin_name(outside, monkeypatch):
    fake_entry_points(monkeypatch, ("clash", "ext_broken:ssamba_tiny"))
    with pytest.raises(UserInputError, match="'clash'.*'ssamba_tiny' is already registered"):
        list_models()


@pytest.mark.parametrize(
    "spec,match",
    [
        ("ext_models", r"not of the form 'package.module:function'"),
        ("ext_models:", r"not of the form"),
        ("ext models:patchmlp_tiny", r"not of the form"),
        ("no_such_pkg.models:fn", r"importing 'no_such_pkg.models' failed: ModuleNotFoundError.*PYTHONPATH"),
        ("ext_fails:fn", r"importing 'ext_fails' failed: RuntimeError: CUDA extension missing"),
        ("ext_models:patchmlp_huge", r"module 'ext_models' has no attribute 'patchmlp_huge'"),
        ("ext_broken:raises_inside", r"'raises_inside' is not callable \(int\); name a model builder function"),
        ("ext_broken:ssamba_tiny", r"'ssamba_tiny' is already registered \(by models.ssamba\)"),
    ],
)
def test_bad_specs_are_clear_errors(outside, spec, match):
    with pytest.raises(UserInputError, match=match):
        import_model_spec(spec)


@pytest.mark.parametrize(
    "builder,match",
    [
        ("wrong_rank", r"returned shape \(1, 16, 8\), not rank 2 \(1, k\)"),
        ("no_token_count", r"no `n_tokens` attribute.*no `grid` attribute"),
        ("no_scan_impl", r"no `scan_impl` attribute"),
        ("wrong_token_count", r"`n_tokens` is 7 but its grid gives 16 for 32 frames"),
        ("not_a_module", r"its builder returned a str, not a torch.nn.Module"),
    ],
)
def test_contract_violations_are_rejected_naming_the_missing_piece(outside, builder, match):
    name = import_model_spec(f"ext_broken:{builder}")
    model = create_model(name, input_frames=32)
    with pytest.raises(UserInputError, match=f"model '{builder}'.*" + match):
        check_model_contract(model, name)


def test_every_registered_model_keeps_the_contract_on_meta():
    for name in list_models():
        with torch.device("meta"):
            model = create_model(name)
        check_model_contract(model, name)


def test_outside_model_is_swept_through_the_cli(outside, tmp_path):
    """A model living outside the repository, named as module:function in a sweep config, runs through
    the real CLI (spawned children import it too) and appears in the results table."""
    import pandas as pd

    from bench.cli import main

    config = tmp_path / "outside.toml"
    config.write_text('name = "outside"\nmodels = ["ext_models:patchmlp_tiny", "test_ssast"]\ntokens = [64, 128]\n'
                      'protocol = "paper"\nthreads = 1\n[paper]\nruns = 1\n')
    run = tmp_path / "run"
    assert main(["sweep", str(config), "--out", str(run), "--quiet", "--no-table"]) == 0
    df = pd.read_csv(run / "results.csv")
    status = df[df["metric"] == "status"]
    assert set(status.loc[status["model"] == "patchmlp_tiny", "status"]) == {"ok"}
    assert set(status.loc[status["model"] == "patchmlp_tiny", "n_tokens"]) == {64, 128}
    assert (df.loc[df["model"] == "patchmlp_tiny", "family"] == "patchmlp").all()
    lat = df[(df["model"] == "patchmlp_tiny") & (df["metric"] == "latency_s") & (df["stat"] == "mean")]
    assert len(lat) == 2 and (lat["value"] > 0).all()
