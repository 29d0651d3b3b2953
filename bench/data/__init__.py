"""Offline accuracy datasets built from Debian packages (docs/datasets.md).

Tasks: `kws` (35 synthetic keywords, split by speaker), `kws10` (its 10-word CI subset), `speakers`
(speaker ID on the real hedgewars voice packs, split by phrase), `events` (18 General-MIDI sound
classes rendered by fluidsynth), `digits-real` (asterisk's real recordings of 0-9, a test-only,
out-of-domain set labelled with the kws vocabulary). `build_task` writes one into the cache
(bench/data/cache.py); `load_task` reads it back, verified against its manifest.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch

from bench.data import cache as _cache
from models.errors import UserInputError


@dataclass(frozen=True)
class TaskInfo:
    name: str
    description: str
    splits: tuple[str, ...]
    needs: str  # the system packages, for `data list`


TASKS = {
    "kws": TaskInfo("kws", "35 Speech Commands words, espeak-ng + flite voices, split by speaker",
                    ("train", "val", "test"), "espeak-ng flite"),
    "kws10": TaskInfo("kws10", "10-word CI subset of kws (yes/no/up/down/left/right/on/off/stop/go), 2 takes",
                      ("train", "val", "test"), "espeak-ng flite"),
    "speakers": TaskInfo("speakers", "speaker ID, 15 real hedgewars voice packs, split by phrase",
                         ("train", "val", "test"), "hedgewars-data .deb"),
    "events": TaskInfo("events", "18 General-MIDI sound classes (fluidsynth + TimGM6mb), split by note",
                       ("train", "val", "test"), "fluidsynth timgm6mb-soundfont"),
    "digits-real": TaskInfo("digits-real", "real asterisk recordings of 0-9 (test only, kws labels)",
                            ("test",), "asterisk-core-sounds-en-wav .deb"),
}


def check_task(name: str) -> TaskInfo:
    if name not in TASKS:
        close = difflib.get_close_matches(name, TASKS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise UserInputError(f"unknown task {name!r}{hint} (tasks: {', '.join(TASKS)})")
    return TASKS[name]


def dataset_name(task: str, small: bool) -> str:
    return f"{task}-small" if small else task


def build_hint(task: str, small: bool, cache) -> str:
    opts = (" --small" if small else "") + (f" --cache {cache}" if cache else "")
    return f"ssamba-bench data build {task}{opts}"


def _builder(task: str, small: bool, root: Path, install: bool):
    import importlib

    module = importlib.import_module(f"bench.data.{ {'kws10': 'kws', 'digits-real': 'digits_real'}.get(task, task)}")
    if task == "kws":
        return partial(module.build, words=module.WORDS_35, takes=1, small=small, install=install)
    if task == "kws10":
        return partial(module.build, words=module.WORDS_10, takes=2, small=small, install=install)
    if task == "speakers":
        return partial(module.build, downloads=root / "debs", small=small, install=install)
    if task == "events":
        return partial(module.build, small=small, install=install)
    return partial(module.build, downloads=root / "debs", small=small, install=install)


def build_task(task: str, *, cache=None, small: bool = False, install: bool = False) -> dict:
    """Build `task` into the cache (atomically) and return its manifest."""
    check_task(task)
    root = _cache.cache_root(cache)
    return _cache.build_atomically(root, dataset_name(task, small), _builder(task, small, root, install), task, small)


def dataset_path(task: str, *, cache=None, small: bool = False) -> Path:
    check_task(task)
    return _cache.cache_root(cache) / dataset_name(task, small)


def read_manifest(task: str, *, cache=None, small: bool = False) -> dict:
    return _cache.read_manifest(dataset_path(task, cache=cache, small=small), build_hint(task, small, cache))


def load_task(name: str, split: str, *, cache=None, small: bool = False, features: bool = False,
              target_length: int | None = None, stats: tuple[float, float] | None = None, verify: bool = True):
    """(inputs, labels, metadata) of one split of a built task.

    inputs: waveforms (n, samples) float32 16 kHz, or with `features=True` normalised fbank features
    (n, target_length, 128) (default: the clip's 98 frames), normalised with `stats` (mean, std) or
    else the task's own training-split statistics from its manifest (evaluate a kws model on
    `digits-real` with the kws statistics); labels: (n,) int64; metadata: task, split, label_names,
    clips (per-clip dicts: id, speaker / phrase / note, augmentation), manifest, stats.
    """
    info = check_task(name)
    if split not in info.splits:
        raise UserInputError(f"task {name} has no split {split!r}; splits: {', '.join(info.splits)}")
    path = dataset_path(name, cache=cache, small=small)
    wav, clips, manifest = _cache.load_split(path, split, build_hint(name, small, cache), verify=verify)
    labels = torch.tensor([c["label"] for c in clips], dtype=torch.long)
    meta = {"task": name, "split": split, "label_names": manifest["label_names"], "clips": clips,
            "manifest": manifest, "sample_rate": manifest["sample_rate"]}
    inputs = torch.from_numpy(wav)
    if features:
        from models.tokenizer import compute_fbank, normalize, pad_or_crop

        frames = target_length or fbank_frames(wav.shape[1])
        with torch.no_grad():
            fb = torch.stack([pad_or_crop(compute_fbank(w), frames) for w in inputs])  # (n, frames, 128)
        meta["stats"] = tuple(stats or manifest["fbank_stats"])
        inputs = normalize(fb, *meta["stats"])
    return inputs, labels, meta


def fbank_frames(samples: int) -> int:
    """Frames of the kaldi fbank (25 ms window, 10 ms shift) of `samples` at 16 kHz: 1 s -> 98."""
    return 1 + (samples - 400) // 160
