"""`digits-real`: asterisk's real recordings of the digits 0-9 (one speaker, 8 kHz), test only.

An out-of-domain test for a keyword model trained on the synthetic `kws` words: the labels are
indices into the kws vocabulary (`kws.WORDS_35`), so a kws model is scored on it unchanged. Report it
as its own rows, never averaged with the synthetic tasks (docs/datasets.md: synthetic-to-real transfer is
poor). Each recording appears once clean and centred, then in 9 augmented copies (position, reverb,
coloured noise, gain from per-clip seeds): 100 clips. Source: Debian's asterisk-core-sounds-en-wav
(`usr/share/asterisk/sounds/en_US_f_Allison/digits/<d>.wav`), resampled to 16 kHz and fitted to 1 s.
"""

from __future__ import annotations

import numpy as np

from bench.data import audio
from bench.data.cache import BuiltDataset
from bench.data.kws import WORDS_35
from bench.data.system import deb_sha256, deb_version, debian_package_files

PACKAGE = "asterisk-core-sounds-en-wav"
DIGITS_DIR = "usr/share/asterisk/sounds/en_US_f_Allison/digits"
DIGIT_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
AUGMENTED_COPIES = 9
SEED = 17


def build(work, *, downloads, small: bool, seed: int = SEED, install: bool = False) -> BuiltDataset:
    tree, deb = debian_package_files(PACKAGE, downloads, install=install)
    digits = range(4) if small else range(10)
    copies = 1 if small else AUGMENTED_COPIES
    waves, labels, clips = [], [], []
    for d in digits:
        clean = audio.peak_normalise(audio.trim(audio.decode(str(tree / DIGITS_DIR / f"{d}.wav"))))
        for copy in range(copies + 1):
            clip_id = f"allison/{d}/{copy}"
            info: dict = {}
            if copy == 0:
                x = audio.place(clean, audio.SAMPLE_RATE, None)
            else:
                rng = audio.clip_rng(seed, clip_id)
                x, info = audio.augment(audio.place(clean, audio.SAMPLE_RATE, rng), rng)
            waves.append(x)
            labels.append(WORDS_35.index(DIGIT_WORDS[d]))
            clips.append({"id": clip_id, "speaker": "en_US_f_Allison", "word": DIGIT_WORDS[d],
                          "augmented": copy > 0, **info})
    return BuiltDataset(
        label_names=list(WORDS_35), waveforms={"test": np.stack(waves)},
        labels={"test": np.asarray(labels, dtype=np.int64)}, clips={"test": clips}, seed=seed,
        generators={f"deb:{PACKAGE}": deb_version(deb), f"{deb.name} sha256": deb_sha256(deb)},
        notes={"split": "test only (out-of-domain real speech for kws models)", "source": f"{PACKAGE} {DIGITS_DIR}"},
    )
