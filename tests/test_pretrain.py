"""Masked spectrogram patch modelling (models/pretrain.py): masks, targets, the mask hook, the losses."""

import io

import pytest
import torch

from models.checkpoints import load_pretrained, load_pretraining_heads, save_original_format
from models.errors import UserInputError
from models.pretrain import MaskedPatchPretrainer, cluster_mask
from models.registry import create_model

FRAMES = 48  # 8 x 3 = 24 patch tokens at stride 16
MASK = 12


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: these tiny models are op-overhead bound, and on a shared 2-core machine
    two spinning OpenMP threads slow a 20-step run from seconds to a minute."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def pretrainer(name: str, seed: int = 0) -> MaskedPatchPretrainer:
    torch.manual_seed(seed)
    model = create_model(name, input_frames=FRAMES, num_classes=0)
    if hasattr(model, "set_scan_impl"):
        # The pure-PyTorch scan: at this tiny size it is ~3x faster per step than the C++ kernel's
        # call overhead on 2 cores, and pretraining does not depend on the scan backend.
        model.set_scan_impl("chunked")
    return MaskedPatchPretrainer(model, mask_patch=MASK)


def clips(n: int, seed: int) -> torch.Tensor:
    """A fixed 'template' spectrogram plus per-clip noise: a patch is predictable from its position."""
    template = torch.randn(FRAMES, 128, generator=torch.Generator().manual_seed(0))
    return template + 0.3 * torch.randn(n, FRAMES, 128, generator=torch.Generator().manual_seed(seed))


def test_cluster_mask_count_range_and_patch_zero():
    gen = torch.Generator().manual_seed(0)
    for _ in range(200):
        ids = cluster_mask(512, 64, 400, gen)
        assert ids.shape == (400,) and ids.dtype == torch.long
        assert len(set(ids.tolist())) == 400
        assert ids.min() > 0 and ids.max() < 512  # patch 0 is never masked
    small = cluster_mask(32, 4, 3, torch.Generator().manual_seed(1))
    assert small.shape == (3,)


def test_cluster_mask_is_clustered_and_reproducible():
    a = cluster_mask(512, 64, 100, torch.Generator().manual_seed(3))
    b = cluster_mask(512, 64, 100, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    # c x c blocks on the frequency-major grid: most masked patches have a masked neighbour one
    # frequency row below (index - t_dim); a random 100-of-512 mask would give about 20 %.
    masked = set(a.tolist())
    neighbours = sum((i - 64) in masked for i in masked)
    assert neighbours / len(masked) > 0.4


def test_mask_patch_out_of_range_is_a_clear_error():
    with pytest.raises(UserInputError, match="mask_patch"):
        MaskedPatchPretrainer(create_model("test_ssast", input_frames=FRAMES), mask_patch=24)


def test_gen_mask_shape():
    p = pretrainer("test_ssast")
    mask = p.gen_mask(5, torch.Generator().manual_seed(0))
    assert mask.shape == (5, MASK)
    assert (mask > 0).all() and (mask < p.v.n_tokens).all()


def test_targets_are_raw_patches_in_token_order():
    p = pretrainer("test_ssast")
    x = torch.randn(2, FRAMES, 128)
    targets = p.patch_targets(x)  # (B, N, 256)
    t_dim = p.t_dim
    assert targets.shape == (2, p.v.n_tokens, 256)
    for index in (0, 5, t_dim, 2 * t_dim + 3, p.v.n_tokens - 1):
        f, t = divmod(index, t_dim)  # frequency-major
        patch = x[1, t * 16:(t + 1) * 16, f * 16:(f + 1) * 16].T  # (freq, time), as the conv sees it
        assert torch.equal(targets[1, index], patch.reshape(-1))


def test_mask_embed_replaces_patch_embeddings_before_position():
    """SSAST by hand: patch_embed, masked rows := mask_embed, then prefix + pos_embed + blocks + norm."""
    p = pretrainer("test_ssast").eval()
    v = p.v
    x = torch.randn(2, FRAMES, 128)
    mask = p.gen_mask(2, torch.Generator().manual_seed(0))
    with torch.no_grad():
        tokens = v.patch_embed(x)
        for b in range(2):
            tokens[b, mask[b]] = p.mask_embed[0, 0]
        prefix = torch.cat((v.cls_token, v.dist_token), dim=1).expand(2, -1, -1)
        h = torch.cat((prefix, tokens), dim=1) + v.pos_embed
        for block in v.blocks:
            h = block(h)
        expected = v.norm(h)[:, 2:]
        got = p.encode_masked(x, mask)
        assert torch.allclose(got, expected, atol=1e-6)
        # the hook is gone afterwards: the plain model is untouched
        assert torch.equal(v.forward_features(x), v.forward_features(x))
        assert not torch.allclose(v.patch_tokens(v.forward_features(x)), got)


@pytest.mark.parametrize("name", ["test_ssamba", "test_ssast"])
def test_pretraining_reduces_losses_and_beats_chance(name):
    p = pretrainer(name)
    train, held_out = clips(3, seed=1), clips(4, seed=2)

    def evaluate():
        p.eval()
        with torch.no_grad():
            mask = p.gen_mask(4, torch.Generator().manual_seed(5))
            nce, acc = p.mpc(held_out, mask)
            mse = p.mpg(held_out, mask)
        p.train()
        return nce.item(), mse.item(), acc.item()

    nce0, mse0, _ = evaluate()
    opt = torch.optim.AdamW(p.parameters(), lr=2e-3, betas=(0.95, 0.999), weight_decay=5e-7)
    gen = torch.Generator().manual_seed(3)
    losses = []
    for _ in range(20):
        out = p(train, generator=gen)  # two passes, two masks
        assert torch.isfinite(out.loss) and torch.isfinite(out.nce) and torch.isfinite(out.mse)
        assert torch.allclose(out.loss, out.nce + 10 * out.mse)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(out.loss.item())
    nce1, mse1, acc1 = evaluate()
    assert sum(losses[-3:]) < sum(losses[:3])
    assert nce1 < nce0 and mse1 < mse0  # on held-out clips
    assert acc1 > 3 / MASK  # chance is 1 / mask_patch


@pytest.mark.parametrize("name", ["test_ssamba", "test_ssast"])
def test_checkpoint_round_trip_in_the_authors_format(name):
    """Written as the authors' pretrained checkpoint, read by the suite's loader, heads put back."""
    a = pretrainer(name, seed=0)
    buffer = io.BytesIO()
    save_original_format(a.v, buffer, a.pretraining_state())
    buffer.seek(0)
    model = load_pretrained(buffer)
    if hasattr(model, "set_scan_impl"):
        model.set_scan_impl("chunked")
    b = MaskedPatchPretrainer(model, mask_patch=MASK)
    load_pretraining_heads(b, model.checkpoint_report.pretraining_state)
    for key, value in a.pretraining_state().items():
        assert torch.equal(b.pretraining_state()[key], value)
    x = clips(1, seed=9)
    mask = a.gen_mask(1, torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(a.eval().encode_masked(x, mask), b.eval().encode_masked(x, mask), atol=1e-6)


def test_heads_of_another_model_size_are_a_clear_error():
    a = pretrainer("test_ssamba", seed=0)
    other = MaskedPatchPretrainer(create_model("ssast_tiny", input_frames=FRAMES), mask_patch=MASK)
    with pytest.raises(UserInputError):
        load_pretraining_heads(other, a.pretraining_state())  # another model size: clear error


@pytest.mark.parametrize("name", ["test_ssamba", "test_ssast", "test_aum"])
def test_joint_step_on_every_test_model(name):
    """Any registered model pretrains: AuM's cls token sits mid-sequence, patch_tokens finds the patches."""
    p = pretrainer(name)
    out = p(clips(2, seed=4), generator=torch.Generator().manual_seed(0))
    out.loss.backward()
    assert torch.isfinite(out.loss)
    assert p.mask_embed.grad is not None and p.mask_embed.grad.abs().sum() > 0
