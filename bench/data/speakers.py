"""`speakers`: speaker identification on the real voice packs of Debian's hedgewars-data.

15 voice packs (usr/share/games/hedgewars/Data/Sounds/voices/<pack>/<Phrase>.ogg), each speaking the
same game phrases, ~1.1 s, 44.1 kHz. The label is the pack; the split is by PHRASE (numbered takes
such as Jump1..Jump3 or Ow1..Ow4 form one phrase, so no take of a test phrase is trained on), so the
model must recognise a voice saying words it never heard from anyone. Clips are decoded to 16 kHz
mono, silence-trimmed, peak-normalised and placed (random offset from a per-clip seed) in 1.1 s; the
recordings themselves are not augmented.
"""

from __future__ import annotations

import re

import numpy as np

from bench.data import audio
from bench.data.cache import BuiltDataset
from bench.data.system import deb_sha256, deb_version, debian_package_files

PACKAGE = "hedgewars-data"
VOICES = "usr/share/games/hedgewars/Data/Sounds/voices"
CLIP_SAMPLES = int(1.1 * audio.SAMPLE_RATE)
SEED = 11


def phrase_of(stem: str) -> str:
    """The phrase a file speaks: 'Jump2' -> 'jump', 'Uh-oh' -> 'uh-oh'."""
    return re.sub(r"\d+$", "", stem).lower()


def phrase_splits(phrases: list[str], seed: int) -> dict[str, str]:
    order = np.random.default_rng(seed).permutation(sorted(phrases))
    n_test = max(1, round(0.15 * len(order)))
    n_val = max(1, round(0.15 * len(order)))
    return {str(p): "test" if i < n_test else "val" if i < n_test + n_val else "train" for i, p in enumerate(order)}


def build(work, *, downloads, small: bool, seed: int = SEED, install: bool = False) -> BuiltDataset:
    tree, deb = debian_package_files(PACKAGE, downloads, install=install)
    root = tree / VOICES
    packs = sorted(p.name for p in root.iterdir() if p.is_dir())
    if small:
        packs = packs[:4]
    files = {pack: sorted((root / pack).glob("*.ogg")) for pack in packs}
    phrases = sorted({phrase_of(f.stem) for fs in files.values() for f in fs})
    if small:
        phrases = phrases[:12]
    split_of = phrase_splits(phrases, seed)
    waves = {s: [] for s in ("train", "val", "test")}
    labels = {s: [] for s in waves}
    clips = {s: [] for s in waves}
    for label, pack in enumerate(packs):
        for f in files[pack]:
            phrase = phrase_of(f.stem)
            if phrase not in split_of:
                continue
            clip_id = f"{pack}/{f.stem}"
            x = audio.peak_normalise(audio.trim(audio.decode(str(f))))
            x = audio.place(x, CLIP_SAMPLES, audio.clip_rng(seed, clip_id))
            split = split_of[phrase]
            waves[split].append(x)
            labels[split].append(label)
            clips[split].append({"id": clip_id, "speaker": pack, "phrase": phrase})
    return BuiltDataset(
        label_names=packs,
        waveforms={s: np.stack(w) for s, w in waves.items()},
        labels={s: np.asarray(v, dtype=np.int64) for s, v in labels.items()},
        clips=clips, seed=seed,
        generators={f"deb:{PACKAGE}": deb_version(deb), f"{deb.name} sha256": deb_sha256(deb)},
        notes={"split": "by phrase (numbered takes grouped), 70/15/15 % of phrases",
               "phrases": split_of, "source": f"{PACKAGE} {VOICES}"},
    )

