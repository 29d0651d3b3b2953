"""`kws` / `kws10`: Speech-Commands-like keyword spotting spoken by espeak-ng and flite voices.

The 35 words of Speech Commands v2 (Warden 2018), each spoken once (`kws`) or twice (`kws10`, the
10-word CI subset) by every synthetic speaker. A speaker is an espeak-ng English accent with a voice
variant, pitch and speed, or a flite voice with a pitch and duration setting; speakers are drawn from
the seed. Clips are 1 s at 16 kHz: silence-trimmed, peak-normalised, placed at a random offset, then
reverb / coloured noise / gain in numpy from a per-clip generator. The split is by speaker, within
each engine (70 / 15 / 15 %), so val and test voices are never heard in training.
"""

from __future__ import annotations

import subprocess

import numpy as np

from bench.data import audio
from bench.data.cache import BuiltDataset
from bench.data.system import package_versions, program_versions, require_packages

WORDS_35 = ["backward", "bed", "bird", "cat", "dog", "down", "eight", "five", "follow", "forward", "four", "go",
            "happy", "house", "learn", "left", "marvin", "nine", "no", "off", "on", "one", "right", "seven",
            "sheila", "six", "stop", "three", "tree", "two", "up", "visual", "wow", "yes", "zero"]
WORDS_10 = ["yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go"]
ACCENTS = ["en", "en-us", "en-gb-scotland", "en-gb-x-gbclan", "en-gb-x-rp", "en-gb-x-gbcwmd", "en-029", "en-us-nyc"]
# espeak-ng voice variants (file names under espeak-ng-data/voices/!v; an unknown name silently falls
# back to the default voice, so only names that exist in espeak-ng 1.51 are listed).
VARIANTS = ["m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "f1", "f2", "f3", "f4", "f5", "klatt", "klatt2",
            "klatt3", "klatt4", "Andy", "Annie", "Alex", "adam", "Gene", "Jacky", "Lee", "linda", "Michael",
            "paul", "quincy", "robert", "steph", "zac", "grandpa", "grandma", "croak", "norbert", "shelby",
            "travis", "victor", "benjamin", "david", "ed", "john", "max", "Mike", "rob", "edward", "iven",
            "anika", "aunty", "belinda", "boris", "caleb", "Denis", "Hugo", "Mario", "sandro", "pedro", "Storm"]
FLITE_VOICES = ["kal", "kal16", "awb", "rms", "slt"]
CLIP_SAMPLES = audio.SAMPLE_RATE  # 1 s
SEED = 7


def speakers(seed: int, small: bool) -> list[dict]:
    """The synthetic speakers with their split; the same seed gives the same speakers and split."""
    rng = np.random.default_rng(seed)
    n_espeak, flite_settings = (4, 1) if small else (56, 2)
    variants = rng.permutation(VARIANTS)[:n_espeak]
    espeak = [{"speaker": f"espeak-{ACCENTS[i % len(ACCENTS)]}+{v}", "engine": "espeak-ng",
               "voice": f"{ACCENTS[i % len(ACCENTS)]}+{v}", "pitch": int(rng.integers(25, 76)),
               "speed": int(rng.integers(130, 191))} for i, v in enumerate(variants)]
    flite_voices = FLITE_VOICES[:3] if small else FLITE_VOICES
    flite = [{"speaker": f"flite-{v}-{k}", "engine": "flite", "voice": v,
              "f0": int(rng.integers(90, 190)), "stretch": round(float(rng.uniform(0.85, 1.2)), 2)}
             for v in flite_voices for k in range(flite_settings)]
    for group in (espeak, flite):
        order = rng.permutation(len(group))
        n_test = max(1, round(0.15 * len(group)))
        n_val = max(1, round(0.15 * len(group)))
        for rank, idx in enumerate(order):
            group[idx]["split"] = "test" if rank < n_test else "val" if rank < n_test + n_val else "train"
    return espeak + flite


def speak(spk: dict, word: str, jitter: int, work) -> np.ndarray:
    """One word by one speaker, 16 kHz mono float32 (espeak-ng and flite are deterministic)."""
    if spk["engine"] == "espeak-ng":
        cmd = ["espeak-ng", "-v", spk["voice"], "-p", str(min(99, max(0, spk["pitch"] + jitter))),
               "-s", str(spk["speed"] + 3 * jitter), "--stdout", word]
        return audio.decode(subprocess.run(cmd, capture_output=True, check=True).stdout)
    out = work / "flite.wav"
    cmd = ["flite", "-voice", spk["voice"], "--setf", f"int_f0_target_mean={spk['f0'] + 2 * jitter}",
           "--setf", f"duration_stretch={spk['stretch']}", "-t", word, "-o", str(out)]
    subprocess.run(cmd, capture_output=True, check=True)
    return audio.decode(str(out))


def build(work, *, words: list[str], takes: int, small: bool, seed: int = SEED, install: bool = False) -> BuiltDataset:
    require_packages(["espeak-ng", "flite"], install=install)
    if small:
        words, takes = words[:4], 1
    spks = speakers(seed, small)
    waves = {s: [] for s in ("train", "val", "test")}
    labels = {s: [] for s in waves}
    clips = {s: [] for s in waves}
    for spk in spks:
        for label, word in enumerate(words):
            for take in range(takes):
                clip_id = f"{spk['speaker']}/{word}/{take}"
                rng = audio.clip_rng(seed, clip_id)
                jitter = int(rng.integers(-5, 6))
                x = audio.peak_normalise(audio.trim(speak(spk, word, jitter, work)))
                x = audio.place(x, CLIP_SAMPLES, rng)
                x, info = audio.augment(x, rng)
                split = spk["split"]
                waves[split].append(x)
                labels[split].append(label)
                clips[split].append({"id": clip_id, "speaker": spk["speaker"], "engine": spk["engine"],
                                     "word": word, "jitter": jitter, **info})
    return BuiltDataset(
        label_names=list(words),
        waveforms={s: np.stack(w) for s, w in waves.items()},
        labels={s: np.asarray(v, dtype=np.int64) for s, v in labels.items()},
        clips=clips, seed=seed,
        generators={**program_versions(["espeak-ng", "flite"]),
                    **package_versions(["espeak-ng", "espeak-ng-data", "flite", "libflite1"])},
        notes={"split": "by speaker within each engine, 70/15/15 %",
               "speakers": {s["speaker"]: s["split"] for s in spks},
               "augmentation": "numpy, per-clip seed: position, reverb p=0.3, coloured noise p=0.5 at 5-30 dB SNR, "
                               "gain -12..0 dB"},
    )
