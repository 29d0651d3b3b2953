"""The offline datasets (bench/data): deterministic reduced builds, disjoint splits, the cache's errors."""

import shutil
from pathlib import Path

import pytest
import torch

from bench.cli import main
from bench.data import build_task, load_task, read_manifest, system
from bench.data import cache as data_cache
from models.errors import UserInputError

SPEECH = ["espeak-ng", "flite"]


def need(programs, soundfont=False):
    try:
        system.require_packages(programs, soundfont=soundfont)
    except UserInputError as err:
        pytest.skip(str(err))


def need_deb(package: str, cache: Path) -> None:
    """Reuse the user's downloaded (and unpacked) .debs, so the test never downloads 145 MB."""
    debs = data_cache.cache_root() / "debs"
    if not list(debs.glob(f"{package}_*.deb")):
        pytest.skip(f"{package}.deb not downloaded; fetch it with: mkdir -p {debs} && cd {debs} && "
                    f"apt-get download {package}")
    cache.mkdir(parents=True, exist_ok=True)
    (cache / "debs").symlink_to(debs, target_is_directory=True)


@pytest.fixture
def cache(tmp_path):
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def kws_cache(tmp_path_factory):
    """One reduced kws build shared by the tests that only read it."""
    need(SPEECH)
    root = tmp_path_factory.mktemp("kws")
    build_task("kws", cache=root, small=True)
    return root


def test_cache_root_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("SSAMBA_BENCH_DATA", str(tmp_path / "env"))
    assert data_cache.cache_root() == tmp_path / "env"
    assert data_cache.cache_root(tmp_path / "opt") == tmp_path / "opt"
    monkeypatch.delenv("SSAMBA_BENCH_DATA")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert data_cache.cache_root() == tmp_path / "xdg" / "ssamba-bench" / "data"


def test_unknown_task_and_split(cache):
    with pytest.raises(UserInputError, match="unknown task 'kws35'.*did you mean 'kws"):
        build_task("kws35", cache=cache)
    with pytest.raises(UserInputError, match="no split 'train'"):
        load_task("digits-real", "train", cache=cache)


def test_empty_cache_is_a_clear_error(cache):
    cache.mkdir()
    with pytest.raises(UserInputError, match="ssamba-bench data build kws --cache"):
        load_task("kws", "train", cache=cache)


def test_missing_program_names_the_install_command(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(UserInputError, match="apt-get install -y --no-install-recommends espeak-ng flite"):
        system.require_packages(SPEECH)


def test_interrupted_build_leaves_nothing_trusted(cache):
    def crash(work):
        (work / "half.wav").write_bytes(b"RIFF")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        data_cache.build_atomically(cache, "kws", crash, "kws", False)
    assert list(cache.iterdir()) == []
    # a build killed outright leaves <name>.tmp-<pid>: never loaded, removed by the next build
    stale = cache / "kws.tmp-999999999"
    stale.mkdir()
    (stale / "manifest.json").write_text("{}")
    with pytest.raises(UserInputError, match="no built dataset"):
        load_task("kws", "train", cache=cache)
    data_cache.remove_stale(cache, "kws")
    assert not stale.exists()


def test_kws_small_rebuilds_identically_and_splits_by_speaker(kws_cache):
    cache = kws_cache
    first = read_manifest("kws", cache=cache, small=True)
    second = build_task("kws", cache=cache, small=True)  # replaces the first atomically
    assert first["checksum"] == second["checksum"]
    assert first["files"] == second["files"]
    assert set(first["generators"]) >= {"espeak-ng --version", "flite --version", "deb:espeak-ng"}
    speakers = {}
    for split in ("train", "val", "test"):
        wav, labels, meta = load_task("kws", split, cache=cache, small=True)
        assert wav.dtype == torch.float32 and wav.shape[1] == 16000 and len(wav) == len(labels) > 0
        assert wav.abs().max() <= 1.0 and torch.isfinite(wav).all()
        speakers[split] = {c["speaker"] for c in meta["clips"]}
        assert {c["engine"] for c in meta["clips"]} == {"espeak-ng", "flite"}  # both engines in every split
    assert not speakers["train"] & speakers["val"]
    assert not speakers["train"] & speakers["test"]
    assert not speakers["val"] & speakers["test"]


def test_features_are_normalised_fbank(kws_cache):
    cache = kws_cache
    x, labels, meta = load_task("kws", "train", cache=cache, small=True, features=True)
    assert x.shape == (len(labels), 98, 128)
    assert abs(x.mean().item()) < 0.05 and abs(x.std().item() - 0.5) < 0.05  # (x - mean) / (2 std)
    x128, _, _ = load_task("kws", "val", cache=cache, small=True, features=True, target_length=128)
    assert x128.shape[1:] == (128, 128)


def test_corrupt_cache_is_a_clear_error(kws_cache, cache):
    shutil.copytree(kws_cache, cache)
    path = cache / "kws-small"
    data = bytearray((path / "test.npy").read_bytes())
    data[-1] ^= 0xFF
    (path / "test.npy").write_bytes(bytes(data))
    with pytest.raises(UserInputError, match="corrupt dataset.*test.npy.*ssamba-bench data build kws --small"):
        load_task("kws", "test", cache=cache, small=True)
    (path / "manifest.json").write_text("{not json")
    with pytest.raises(UserInputError, match="corrupt dataset manifest"):
        load_task("kws", "train", cache=cache, small=True)


def test_events_small_rebuilds_identically_and_splits_by_note(cache):
    need(["fluidsynth"], soundfont=True)
    first = build_task("events", cache=cache, small=True)
    assert build_task("events", cache=cache, small=True)["checksum"] == first["checksum"]
    notes = {}
    for split in ("train", "val", "test"):
        wav, labels, meta = load_task("events", split, cache=cache, small=True)
        assert wav.shape[1] == 16000 and (wav.abs().amax(dim=1) > 0.01).all()  # every clip sounds
        notes[split] = {c["note"] for c in meta["clips"]}
        assert set(labels.tolist()) == set(range(len(meta["label_names"])))
    assert not notes["train"] & notes["test"] and not notes["train"] & notes["val"] and not notes["val"] & notes["test"]


def test_speakers_small_splits_by_phrase(cache):
    need_deb("hedgewars-data", cache)
    first = build_task("speakers", cache=cache, small=True)
    assert build_task("speakers", cache=cache, small=True)["checksum"] == first["checksum"]
    phrases = {}
    for split in ("train", "val", "test"):
        wav, labels, meta = load_task("speakers", split, cache=cache, small=True)
        assert wav.shape[1] == 17600  # 1.1 s
        phrases[split] = {c["phrase"] for c in meta["clips"]}
    assert not phrases["train"] & phrases["val"] and not phrases["train"] & phrases["test"]
    assert not phrases["val"] & phrases["test"]


def test_digits_real_uses_kws_labels(cache):
    need_deb("asterisk-core-sounds-en-wav", cache)
    build_task("digits-real", cache=cache, small=True)
    wav, labels, meta = load_task("digits-real", "test", cache=cache, small=True)
    names = [meta["label_names"][i] for i in labels.tolist()]
    assert set(names) == {"zero", "one", "two", "three"} and len(meta["label_names"]) == 35


def test_cli_build_and_list(cache, capsys):
    need(SPEECH)
    assert main(["data", "build", "kws10", "--small", "--cache", str(cache)]) == 0
    assert "kws10 (small): 4 classes" in capsys.readouterr().out
    assert main(["data", "list", "--cache", str(cache)]) == 0
    out = capsys.readouterr().out
    assert "kws10-small" in out and "kws " in out and "not built" in out
    assert main(["data", "build", "nope", "--cache", str(cache)]) == 2
    assert read_manifest("kws10", cache=cache, small=True)["task"] == "kws10"
