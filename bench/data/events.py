"""`events`: 18-class sound-event classification rendered by fluidsynth from General-MIDI programs.

Ten instrument families (piano, chromatic percussion, organ, guitar, bass, strings, brass, reed, pipe,
synth lead; any of the family's 8 programs) and GM's eight sound effects (guitar fret noise, breath,
seashore, bird tweet, telephone ring, helicopter, applause, gunshot), with the TimGM6mb soundfont.
Every clip is one note of a random program of its class, velocity and duration; fluidsynth renders
a whole class in one call (one note per 2.5 s slot, all-sound-off before the next) with its own
reverb and chorus off and float output, which is deterministic; the 1 s slices are then augmented in
numpy (position, reverb, coloured noise, gain) from per-clip seeds. The split is by NOTE: train,
val and test draw their MIDI notes from disjoint pitch classes-of-7, so test pitches are never
trained on.
"""

from __future__ import annotations

import struct
import subprocess

import numpy as np

from bench.data import audio
from bench.data.cache import BuiltDataset
from bench.data.system import SOUNDFONT, package_versions, program_versions, require_packages

FAMILIES = {"piano": 0, "chromatic_percussion": 8, "organ": 16, "guitar": 24, "bass": 32, "strings": 40,
            "brass": 56, "reed": 64, "pipe": 72, "synth_lead": 80}
EFFECTS = {"guitar_fret_noise": 120, "breath_noise": 121, "seashore": 122, "bird_tweet": 123,
           "telephone_ring": 124, "helicopter": 125, "applause": 126, "gunshot": 127}
CLASSES = list(FAMILIES) + list(EFFECTS)
SPLIT_SIZES = {"train": 28, "val": 6, "test": 6}  # per class; --small: 3 / 1 / 1
NOTE_RANGE = range(36, 85)
SPLIT_OF_NOTE = {3: "test", 5: "val"}  # note % 7 -> split; every other residue is train
SLOT_S = 2.5
TICKS_PER_S = 960  # division 480 at the default 120 bpm
SEED = 13


def _varlen(n: int) -> bytes:
    out = [n & 0x7F]
    n >>= 7
    while n:
        out.append(0x80 | (n & 0x7F))
        n >>= 7
    return bytes(reversed(out))


def midi_file(program_notes: list[tuple[int, int, int, float, float]]) -> bytes:
    """A format-0 SMF: per slot (program, note, velocity, onset s, duration s) on channel 0."""
    events = []  # (tick, order, bytes)
    for slot, (program, note, velocity, onset, duration) in enumerate(program_notes):
        t0 = slot * SLOT_S
        events.append((round(t0 * TICKS_PER_S), 0, bytes([0xC0, program])))
        events.append((round((t0 + onset) * TICKS_PER_S), 1, bytes([0x90, note, velocity])))
        events.append((round((t0 + onset + duration) * TICKS_PER_S), 2, bytes([0x80, note, 0])))
        events.append((round((t0 + 1.2) * TICKS_PER_S), 3, bytes([0xB0, 120, 0])))  # all sound off
    events.sort()
    track, last = b"", 0
    for tick, _, data in events:
        track += _varlen(tick - last) + data
        last = tick
    track += _varlen(round(SLOT_S * TICKS_PER_S)) + b"\xff\x2f\x00"
    return b"MThd" + struct.pack(">IHHH", 6, 0, 1, 480) + b"MTrk" + struct.pack(">I", len(track)) + track


def render(notes, work, name: str) -> np.ndarray:
    mid, wav = work / f"{name}.mid", work / f"{name}.wav"
    mid.write_bytes(midi_file(notes))
    cmd = ["fluidsynth", "-ni", "-q", "-R", "0", "-C", "0", "-g", "1.0", "-r", str(audio.SAMPLE_RATE),
           "-O", "float", "-T", "wav", "-F", str(wav), str(SOUNDFONT), str(mid)]
    subprocess.run(cmd, capture_output=True, check=True)
    return audio.decode(str(wav))


def build(work, *, small: bool, seed: int = SEED, install: bool = False) -> BuiltDataset:
    require_packages(["fluidsynth"], soundfont=True, install=install)
    sizes = {"train": 3, "val": 1, "test": 1} if small else SPLIT_SIZES
    classes = CLASSES[:2] + CLASSES[-2:] if small else CLASSES
    notes_of = {s: [n for n in NOTE_RANGE if SPLIT_OF_NOTE.get(n % 7, "train") == s] for s in sizes}
    waves = {s: [] for s in sizes}
    labels = {s: [] for s in sizes}
    clips = {s: [] for s in sizes}
    for label, cls in enumerate(classes):
        rng = np.random.default_rng([seed, label])
        plan = []
        for split, n in sizes.items():
            for k in range(n):
                program = FAMILIES[cls] + int(rng.integers(8)) if cls in FAMILIES else EFFECTS[cls]
                note = int(rng.choice(notes_of[split]))
                plan.append((split, f"{cls}/{split}/{k}", (program, note, int(rng.integers(60, 128)),
                                                          round(float(rng.uniform(0.0, 0.1)), 3),
                                                          round(float(rng.uniform(0.3, 0.9)), 3))))
        rendered = render([p[2] for p in plan], work, cls)
        slot = int(SLOT_S * audio.SAMPLE_RATE)
        for i, (split, clip_id, (program, note, velocity, onset, duration)) in enumerate(plan):
            x = rendered[i * slot: i * slot + audio.SAMPLE_RATE]
            x = np.pad(x, (0, audio.SAMPLE_RATE - len(x)))
            crng = audio.clip_rng(seed, clip_id)
            x = audio.place(audio.peak_normalise(audio.trim(x, threshold_db=-50)), audio.SAMPLE_RATE, crng)
            x, info = audio.augment(x, crng)
            waves[split].append(x)
            labels[split].append(label)
            clips[split].append({"id": clip_id, "program": program, "note": note, "velocity": velocity,
                                 "duration": duration, **info})
    return BuiltDataset(
        label_names=classes,
        waveforms={s: np.stack(w) for s, w in waves.items()},
        labels={s: np.asarray(v, dtype=np.int64) for s, v in labels.items()},
        clips=clips, seed=seed,
        generators={**program_versions(["fluidsynth"]),
                    **package_versions(["fluidsynth", "libfluidsynth3", "timgm6mb-soundfont"])},
        notes={"split": "by MIDI note: note % 7 == 3 test, == 5 val, else train",
               "render": "fluidsynth -R 0 -C 0 -g 1.0 -r 16000 -O float, TimGM6mb.sf2",
               "augmentation": "numpy, per-clip seed: position, reverb p=0.3, coloured noise p=0.5 at 5-30 dB SNR, "
                               "gain -12..0 dB"},
    )
