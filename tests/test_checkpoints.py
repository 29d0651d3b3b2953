"""The authors' checkpoints load strictly, give the same outputs after a round trip, adapt their
positional embedding as the authors did, and bad files fail with one clear error."""

import io
import math

import pytest
import torch
from checkpoint_fixtures import original_state_dict, random_model
from torch import nn

from bench.cli import main
from models import create_model
from models.checkpoints import (
    adapt_pos_embed,
    inspect_checkpoint,
    load_checkpoint,
    load_finetuned,
    load_pretrained,
    load_pretraining_heads,
    save_original_format,
    to_original_state_dict,
)
from models.errors import UserInputError

FAMILIES = ("ssast", "ssamba")
# Chunked scan: pure PyTorch, deterministic, no C++ build in the test run.
FAST = {"ssast": {}, "ssamba": {"scan_impl": "chunked"}}


@pytest.fixture(autouse=True)
def one_thread():
    # The tensors here are tiny: on the shared 2-core machine, intra-op threads only add contention
    # (a base SSAMBA forward at 9 tokens takes ~0.5 s on one thread, several seconds on two under load).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _save(sd, tmp_path, name="ckpt.pth"):
    path = tmp_path / name
    torch.save(sd, path)
    return path


# ---------------------------------------------------------------------------------------------- the authors' layout


@pytest.mark.parametrize("family,backbone", [("ssast", 5_487_168), ("ssamba", 6_922_176)])
def test_authors_layout_loads_with_every_key_accounted_for(family, backbone, tmp_path):
    sd = original_state_dict(family, "tiny")  # docs/models.md's tiny layout at the 128 x 1024 pretraining grid
    path = _save(sd, tmp_path)
    info = inspect_checkpoint(path)
    assert (info.family, info.size, info.kind, info.model_name) == (family, "tiny", "pretrained", f"{family}_tiny")
    assert info.backbone_params == backbone  # docs/models.md's parameter counts
    assert (info.pretrain_input, info.pretrain_grid) == ((128, 1024), (8, 64))
    assert info.ok and not info.unexpected

    model = load_pretrained(path, family=family, num_classes=0)
    report = model.checkpoint_report
    groups = [report.loaded, report.dropped, report.pretraining, report.metadata]
    assert sorted(k for g in groups for k in g) == sorted(sd)  # every key in exactly one group
    assert set(report.dropped) == {k for k in sd if k.startswith(("module.v.head.", "module.v.head_dist."))}
    assert set(report.metadata) == {"module.p_input_fdim", "module.p_input_tdim"}
    assert len(report.pretraining) == 9 and report.new == ()
    state = model.state_dict()
    for key in report.loaded:
        assert torch.equal(state[key[len("module.v."):]], sd[key]), key


def test_pretraining_heads_go_to_the_pretraining_module(tmp_path):
    sd = original_state_dict("ssamba", "test", input_tdim=64)
    model = load_pretrained(sd, num_classes=0)
    state = model.checkpoint_report.pretraining_state
    assert sorted(state) == sorted(k[len("module."):] for k in sd if k.startswith(("module.cpred", "module.gpred",
                                                                                    "module.mask")))

    class Pretrainer(nn.Module):  # the attributes models/pretrain.py will have
        def __init__(self, d):
            super().__init__()
            self.cpredlayer = nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Linear(d, 256))
            self.gpredlayer = nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Linear(d, 256))
            self.mask_embed = nn.Parameter(torch.zeros(1, 1, d))

    pre = Pretrainer(32)
    load_pretraining_heads(pre, state)
    assert torch.equal(pre.gpredlayer[2].weight, sd["module.gpredlayer.2.weight"])
    assert torch.equal(pre.mask_embed, sd["module.mask_embed"])
    with pytest.raises(UserInputError, match="cpredlayer"):
        load_pretraining_heads(Pretrainer(48), state)

    # ... and back: the written file has exactly the authors' keys.
    save_original_format(model, tmp_path / "back.pth", pretraining_state=state)
    back = torch.load(tmp_path / "back.pth", weights_only=True)
    assert sorted(back) == sorted(sd)
    for key in sd:
        if ".head." not in key:  # the ImageNet heads are written as zeros
            assert torch.equal(back[key], sd[key]), key


# ---------------------------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("size", ["test", "tiny", "small", "base"])
@pytest.mark.parametrize("family", FAMILIES)
def test_round_trip_is_bit_identical(family, size, tmp_path):
    name = f"test_{family}" if size == "test" else f"{family}_{size}"
    model = random_model(name, input_frames=32, num_classes=5, **FAST[family])  # 8 x 2 patches at stride 16
    if size in ("small", "base"):  # the state dict torch.save would write, without the trip through bytes
        source = to_original_state_dict(model)
    else:
        source = tmp_path / "model.pth"
        save_original_format(model, source)
    loaded = load_pretrained(source, family=name, **FAST[family]).eval()
    assert loaded.checkpoint_report.new == () and loaded.input_frames == 32
    x = torch.randn(2, 32, 128)
    with torch.inference_mode():
        assert torch.equal(model(x), loaded(x))


@pytest.mark.parametrize("family", FAMILIES)
def test_fine_tuned_round_trip_at_stride_10(family, tmp_path):
    model = random_model(f"test_{family}", input_frames=48, fstride=10, tstride=10, num_classes=7, **FAST[family])
    buffer = io.BytesIO()
    save_original_format(model, buffer)
    buffer.seek(0)
    sd = torch.load(buffer, weights_only=True)
    assert "module.p_input_tdim" not in sd and sd["module.mlp_head.1.weight"].shape == (7, 32)
    torch.save(sd, tmp_path / "ft.pth")
    loaded = load_finetuned(tmp_path / "ft.pth", fstride=10, tstride=10, input_frames=48, **FAST[family]).eval()
    x = torch.randn(1, 48, 128)
    with torch.inference_mode():
        assert torch.equal(model(x), loaded(x))
    # A pretrained one is expected: the error says what the file is and what loads it.
    with pytest.raises(UserInputError, match=r"fine-tuned .*mlp_head of 7 classes.*load_finetuned"):
        load_pretrained(tmp_path / "ft.pth")


def test_authors_fine_tuned_layout_loads(tmp_path):
    sd = original_state_dict("ssast", "tiny", kind="finetuned", frames=1024, num_classes=50)  # 12 x 101 patches
    info = inspect_checkpoint(sd)
    assert (info.kind, info.num_classes, info.pos_embed_patches, info.ok) == ("finetuned", 50, 1212, True)
    assert "12 x 101 at stride 10" in info.summary()
    model = load_checkpoint(sd, fstride=10, tstride=10, input_frames=1024)
    assert model.n_tokens == 1212 and model.num_classes == 50
    assert torch.equal(model.head[1].weight, sd["module.mlp_head.1.weight"])
    assert torch.equal(model.pos_embed, sd["module.v.pos_embed"])
    with pytest.raises(UserInputError, match="fstride= and tstride="):
        load_checkpoint(sd)
    with pytest.raises(UserInputError, match="not a multiple"):
        load_finetuned(sd, fstride=16, tstride=16)


def test_half_precision_checkpoint_loads_into_fp32():
    sd = {k: (v.half() if v.is_floating_point() else v) for k, v in original_state_dict("ssast", "test",
                                                                                         input_tdim=64).items()}
    assert inspect_checkpoint(sd).dtype == "float16"
    model = load_pretrained(sd, num_classes=0)
    assert model.pos_embed.dtype == torch.float32
    assert torch.equal(model.blocks[1].mlp.fc2.weight, sd["module.v.blocks.1.mlp.fc2.weight"].float())


def test_a_new_head_replaces_the_checkpoint_head_and_says_so():
    model = random_model("test_ssast", input_frames=32, num_classes=5)
    loaded = load_pretrained(to_original_state_dict(model), num_classes=3)
    report = loaded.checkpoint_report
    assert report.new == ("head.0.weight", "head.0.bias", "head.1.weight", "head.1.bias")
    assert "module.mlp_head.1.weight" in report.dropped and "num_classes=3" in report.summary()
    assert torch.equal(loaded.head[0].weight, torch.ones(32))  # a fresh LayerNorm
    # A model loaded from a caller's state dict does not share its storage.
    assert loaded.pos_embed.data_ptr() != model.pos_embed.data_ptr()


# ---------------------------------------------------------------------------------------------- strictness


def _renamed(sd, old, new):
    return {(new if k == old else k): v for k, v in sd.items()}


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("change", ["renamed", "removed", "wrong_shape", "pretraining_head"])
def test_one_bad_key_fails_naming_it(family, change):
    sd = original_state_dict(family, "test", input_tdim=64)
    key = "module.v.blocks.1.norm1.bias" if family == "ssast" else "module.v.layers.3.mixer.dt_proj_b.bias"
    if change == "renamed":
        sd, pattern = _renamed(sd, key, key + "_x"), rf"missing {key}\b.*unexpected {key}_x"
    elif change == "removed":
        del sd[key]
        pattern = rf"missing {key}\b"
    elif change == "wrong_shape":
        sd[key] = sd[key][:-1]
        pattern = rf"wrong shape {key} \(checkpoint \({sd[key].shape[0]},\), model \({sd[key].shape[0] + 1},\)\)"
    else:
        key = "module.gpredlayer.2.weight"
        sd[key] = sd[key][:255]
        pattern = rf"wrong shape {key}"
    with pytest.raises(UserInputError, match=pattern):
        load_pretrained(sd)
    assert not inspect_checkpoint(sd).ok


def test_rmsnorm_checkpoint_is_named_as_such():
    sd = original_state_dict("ssamba", "test", input_tdim=64)
    sd = {k: v for k, v in sd.items() if not (k.endswith(".bias") and ("norm" in k))}
    with pytest.raises(UserInputError, match=r"missing module.v.layers.0.norm.bias.*RMSNorm"):
        load_pretrained(sd)


def test_p_input_inconsistent_with_pos_embed():
    sd = original_state_dict("ssast", "tiny", input_tdim=1024)
    sd["module.p_input_tdim"] = torch.tensor(998)  # 8 x 62 = 496 patches, pos_embed holds 512
    with pytest.raises(UserInputError, match=r"pos_embed has 514 positions.*128 x 998.*8 x 62 = 496"):
        load_pretrained(sd)


# ---------------------------------------------------------------------------------------------- positional embedding


def _linear_resize(x, size, dim):
    """1-D linear interpolation along `dim`, align_corners=False, written out (PyTorch's formula)."""
    n = x.shape[dim]
    out = []
    for i in range(size):
        src = max((i + 0.5) * n / size - 0.5, 0.0)
        i0 = min(int(math.floor(src)), n - 1)
        i1 = min(i0 + 1, n - 1)
        w = src - i0
        out.append(x.select(dim, i0) * (1 - w) + x.select(dim, i1) * w)
    return torch.stack(out, dim=dim)


def _direct(pe, prefix, src, dst):
    """The adaptation computed directly on a (f, t, D) grid: crop or interpolate time, then frequency."""
    (sf, st), (df, dt) = src, dst
    grid = pe[0, prefix:].reshape(sf, st, -1)
    grid = grid[:, st // 2 - dt // 2: st // 2 - dt // 2 + dt] if dt <= st else _linear_resize(grid, dt, 1)
    grid = grid[sf // 2 - df // 2: sf // 2 - df // 2 + df] if df <= sf else _linear_resize(grid, df, 0)
    return torch.cat((pe[0, :prefix], grid.reshape(df * dt, -1)))[None]


@pytest.mark.parametrize("frames,expect_grid", [(512, (12, 50)), (1024, (12, 101))])  # shorter, longer time axis
@pytest.mark.parametrize("family", FAMILIES)
def test_pos_embed_adaptation_stride_16_to_10(family, frames, expect_grid):
    sd = original_state_dict(family, "test", input_tdim=1024)  # 8 x 64 pretraining grid
    model = load_pretrained(sd, input_frames=frames, fstride=10, tstride=10)
    prefix = model.num_prefix_tokens
    assert (model.grid.f_dim, model.grid.t_dim(frames)) == expect_grid
    expected = _direct(sd["module.v.pos_embed"], prefix, (8, 64), expect_grid)
    torch.testing.assert_close(model.pos_embed, expected, atol=1e-6, rtol=0)
    assert torch.equal(model.pos_embed[:, :prefix], sd["module.v.pos_embed"][:, :prefix])  # cls (dist) kept
    assert torch.equal(model.patch_embed.proj.weight, sd["module.v.patch_embed.proj.weight"])
    assert model.patch_embed.proj.stride == (10, 10)


def test_pos_embed_frequency_crop_keeps_f_rows():
    # The original sliced rows [start : start + t_dim] here; 4 of 8 rows must be rows 2..5.
    pe = torch.randn(1, 2 + 8 * 6, 3)
    out = adapt_pos_embed(pe, 2, (8, 6), (4, 6))
    grid = pe[0, 2:].reshape(8, 6, 3)
    assert torch.equal(out[0, 2:].reshape(4, 6, 3), grid[2:6])
    torch.testing.assert_close(adapt_pos_embed(pe, 2, (8, 6), (4, 3)), _direct(pe, 2, (8, 6), (4, 3)))
    assert torch.equal(adapt_pos_embed(pe, 2, (8, 6), (8, 6)), pe)  # same grid: bit for bit


# ---------------------------------------------------------------------------------------------- bad input


def test_bad_files_give_one_clear_error(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not a checkpoint\n")
    with pytest.raises(UserInputError, match="is not a PyTorch checkpoint"):
        load_pretrained(text)
    with pytest.raises(UserInputError, match="no checkpoint file"):
        load_pretrained(tmp_path / "missing.pth")
    with pytest.raises(UserInputError, match="holds a list, not a state dict"):
        load_pretrained(_save([1, 2], tmp_path, "list.pth"))
    with pytest.raises(UserInputError, match=r"not tensors, e.g. 'epoch' \(int\)"):
        load_pretrained(_save({"epoch": 3, "w": torch.zeros(1)}, tmp_path, "mixed.pth"))
    with pytest.raises(UserInputError, match="weights_only=True"):
        load_pretrained(_save(nn.Linear(2, 2), tmp_path, "module.pth"))  # a pickled module, not a state dict


def test_other_architectures_are_named():
    resnet = {"conv1.weight": torch.zeros(64, 3, 7, 7), "fc.weight": torch.zeros(10, 512), "fc.bias": torch.zeros(10)}
    with pytest.raises(UserInputError, match=r"not an SSAST or SSAMBA checkpoint.*found conv1.weight"):
        load_pretrained(resnet)
    with pytest.raises(UserInputError, match="this suite's own model"):
        load_pretrained(create_model("test_ssast", input_frames=32).state_dict())
    aum_like = {k: v for k, v in original_state_dict("ssamba", "test", input_tdim=64).items() if "_b" not in k}
    with pytest.raises(UserInputError, match="no backward-direction weights"):
        load_pretrained(aum_like)
    frame_ssast = original_state_dict("ssast", "test", input_tdim=64)
    frame_ssast["module.v.patch_embed.proj.weight"] = torch.zeros(32, 1, 128, 2)
    with pytest.raises(UserInputError, match="128x2 patches"):
        load_pretrained(frame_ssast)
    with pytest.raises(UserInputError, match="SSAMBA-test checkpoint, not ssast"):
        load_pretrained(original_state_dict("ssamba", "test", input_tdim=64), family="ssast")
    with pytest.raises(UserInputError, match="holds ssast_tiny .* not ssast_small"):
        load_pretrained(original_state_dict("ssast", "tiny", input_tdim=64), family="ssast_small")


# ---------------------------------------------------------------------------------------------- the inspect verb


def test_inspect_verb(tmp_path, capsys):
    path = _save(original_state_dict("ssast", "tiny"), tmp_path, "SSAST-Tiny-Patch-400.pth")
    assert main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert "ssast tiny" in out and "5,487,168 backbone" in out and "128 x 1024" in out
    assert "unexpected keys   none" in out

    bad = original_state_dict("ssast", "test", input_tdim=64)
    bad["module.v.blocks.0.attn.qkv.bais"] = bad.pop("module.v.blocks.0.attn.qkv.bias")
    assert main(["inspect", str(_save(bad, tmp_path, "bad.pth"))]) == 1
    out = capsys.readouterr().out
    assert "unexpected keys   module.v.blocks.0.attn.qkv.bais" in out
    assert "missing keys      module.v.blocks.0.attn.qkv.bias" in out

    text = tmp_path / "x.pth"
    text.write_bytes(b"\x00garbage")
    assert main(["inspect", str(text)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1


def test_sweep_measures_a_checkpoint_named_in_the_config(tmp_path):
    """`checkpoints = { model = path }` in a sweep config: the file is checked before anything runs,
    then loaded strictly for every case of that model."""
    from bench.cli import main

    good = tmp_path / "test_ssamba.pth"
    torch.save(original_state_dict("ssamba", "test"), good)
    config = tmp_path / "sweep.toml"
    body = ('name = "ckpt"\nmodels = ["test_ssamba"]\ntokens = [64]\nprotocol = "paper"\nthreads = 1\n'
            'extra_metrics = []\n[paper]\nruns = 1\n')
    config.write_text(body + f'[checkpoints]\ntest_ssamba = "{good}"\n')
    assert main(["sweep", str(config), "--out", str(tmp_path / "run"), "--quiet", "--no-table"]) == 0
    rows = (tmp_path / "run" / "results.jsonl").read_text()
    assert '"status": "ok"' in rows
    wrong = tmp_path / "wrong.toml"
    wrong.write_text(body + f'[checkpoints]\ntest_ssast = "{good}"\n')
    assert main(["sweep", str(wrong), "--out", str(tmp_path / "run2")]) == 2
    other = tmp_path / "ssast.pth"
    torch.save(original_state_dict("ssast", "test"), other)
    mismatch = tmp_path / "mismatch.toml"
    mismatch.write_text(body + f'[checkpoints]\ntest_ssamba = "{other}"\n')
    assert main(["sweep", str(mismatch), "--out", str(tmp_path / "run3")]) == 2
