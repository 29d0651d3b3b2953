"""The dataset cache: where built datasets live, how they are written atomically and verified.

Layout (one directory per built dataset, outside git)::

    <root>/                          $SSAMBA_BENCH_DATA, --cache, or ~/.cache/ssamba-bench/data
      debs/                          downloaded .deb files and their unpacked trees (sources)
      kws/  kws10/  speakers/  events/  digits-real/  (and <name>-small/ for the reduced builds)
        manifest.json                task, format, seed, generator and package versions, label names,
                                     split sizes, per-file sha256 and the total checksum
        clips.json                   per split, per clip: id, label, sha256 of its float32 samples, metadata
        <split>.npy                  (n_clips, samples) float32 waveforms, 16 kHz mono

A build writes into `<name>.tmp-<pid>/` and renames it into place only when complete, so an
interrupted build leaves nothing that `load_dataset` would trust (stale .tmp directories are removed
by the next build). The total checksum covers the label names and every clip's id, label and
samples; it excludes timings, so rebuilding with the same generators reproduces it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from models.errors import UserInputError

FORMAT_VERSION = 1
ENV_VAR = "SSAMBA_BENCH_DATA"
SAMPLE_RATE = 16000


def cache_root(cache: str | os.PathLike | None = None) -> Path:
    """--cache, else $SSAMBA_BENCH_DATA, else $XDG_CACHE_HOME (or ~/.cache)/ssamba-bench/data."""
    if cache:
        return Path(cache).expanduser()
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR]).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "ssamba-bench" / "data"


@dataclass
class BuiltDataset:
    """What a task builder returns: waveforms and labels per split, and the facts for the manifest."""

    label_names: list[str]
    waveforms: dict[str, np.ndarray]  # split -> (n, samples) float32
    labels: dict[str, np.ndarray]  # split -> (n,) int64
    clips: dict[str, list[dict]]  # split -> per-clip metadata (id, speaker/phrase/..., seed)
    seed: int
    generators: dict[str, str] = field(default_factory=dict)  # program / package -> version
    notes: dict = field(default_factory=dict)  # split rule, augmentation, sources


def clip_sha256(samples: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(samples, dtype="<f4").tobytes()).hexdigest()


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def total_checksum(label_names: list[str], clips: dict[str, list[dict]]) -> str:
    """sha256 over the label names and every clip's (split, id, label, sha256), in split order."""
    canon = {"labels": label_names,
             "clips": {s: [[c["id"], c["label"], c["sha256"]] for c in rows] for s, rows in sorted(clips.items())}}
    return hashlib.sha256(json.dumps(canon, sort_keys=True).encode()).hexdigest()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale(root: Path, name: str) -> None:
    """Delete `<name>.tmp-<pid>` / `<name>.old-<pid>` left by builds whose process is gone."""
    for path in root.glob(f"{name}.*-*"):
        kind, _, pid = path.name[len(name) + 1:].partition("-")
        if kind in ("tmp", "old") and pid.isdigit() and not _pid_alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)


def build_atomically(root: Path, name: str, builder, task: str, small: bool) -> dict:
    """Run `builder(workdir) -> BuiltDataset` and publish `<root>/<name>/` only when complete."""
    root.mkdir(parents=True, exist_ok=True)
    remove_stale(root, name)
    tmp = root / f"{name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        start = time.perf_counter()
        work = tmp / "work"
        work.mkdir()
        built = builder(work)
        shutil.rmtree(work)
        manifest = _write(tmp, task, small, built)
        manifest["fbank_stats"] = fbank_stats(built)
        manifest["build_seconds"] = round(time.perf_counter() - start, 2)  # not part of the checksum
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True))
        final = root / name
        old = root / f"{name}.old-{os.getpid()}"
        if final.exists():
            final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old, ignore_errors=True)
        return manifest
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _write(out: Path, task: str, small: bool, built: BuiltDataset) -> dict:
    clips, files, splits = {}, {}, {}
    for split, wav in built.waveforms.items():
        wav = np.ascontiguousarray(wav, dtype=np.float32)
        labels = built.labels[split]
        if wav.ndim != 2 or len(wav) != len(labels) or len(wav) != len(built.clips[split]):
            raise RuntimeError(f"builder bug: split {split} has inconsistent sizes")
        if not np.isfinite(wav).all():
            raise RuntimeError(f"builder bug: split {split} has non-finite samples")
        np.save(out / f"{split}.npy", wav)
        files[f"{split}.npy"] = _file_sha256(out / f"{split}.npy")
        clips[split] = [{**meta, "label": int(lab), "sha256": clip_sha256(w)}
                        for meta, lab, w in zip(built.clips[split], labels, wav)]
        splits[split] = {"clips": len(wav), "samples": int(wav.shape[1]),
                         "per_label": np.bincount(labels, minlength=len(built.label_names)).tolist()}
    (out / "clips.json").write_text(json.dumps(clips, sort_keys=True))
    files["clips.json"] = _file_sha256(out / "clips.json")
    return {
        "task": task, "small": small, "format_version": FORMAT_VERSION, "sample_rate": SAMPLE_RATE,
        "seed": built.seed, "generators": built.generators, "notes": built.notes,
        "label_names": built.label_names, "splits": splits, "files": files,
        "checksum": total_checksum(built.label_names, clips),
    }


def fbank_stats(built: BuiltDataset) -> list[float]:
    """[mean, std] of the kaldi fbank over the training split (the only split of a test-only task):
    the dataset's own normalisation statistics, as the authors computed one pair per dataset."""
    import torch

    from models.tokenizer import compute_fbank

    split = "train" if "train" in built.waveforms else next(iter(built.waveforms))
    with torch.no_grad():
        fb = torch.cat([compute_fbank(torch.from_numpy(w)) for w in built.waveforms[split]])
    return [round(float(fb.mean()), 6), round(float(fb.std()), 6)]


def read_manifest(path: Path, build_hint: str) -> dict:
    """The manifest of a built dataset, or a clear error naming the command that builds it."""
    manifest_file = path / "manifest.json"
    if not manifest_file.is_file():
        raise UserInputError(f"no built dataset at {path} (missing or empty cache); build it with: {build_hint}")
    try:
        manifest = json.loads(manifest_file.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise UserInputError(f"corrupt dataset manifest {manifest_file} ({err}); rebuild with: {build_hint}") from None
    if not isinstance(manifest, dict) or manifest.get("format_version") != FORMAT_VERSION:
        raise UserInputError(f"dataset at {path} has an unknown format (expected version {FORMAT_VERSION}); "
                             f"rebuild with: {build_hint}")
    return manifest


def load_split(path: Path, split: str, build_hint: str, verify: bool = True) -> tuple[np.ndarray, list[dict], dict]:
    """(waveforms (n, samples) float32, per-clip metadata, manifest) of one split, checked against the manifest."""
    manifest = read_manifest(path, build_hint)
    if split not in manifest.get("splits", {}):
        raise UserInputError(f"dataset {manifest.get('task')} has no split {split!r}; "
                             f"splits: {', '.join(manifest.get('splits', {}))}")
    for name in (f"{split}.npy", "clips.json"):
        file = path / name
        expected = manifest["files"].get(name)
        if not file.is_file() or (verify and _file_sha256(file) != expected):
            raise UserInputError(f"corrupt dataset: {file} is missing or does not match its manifest checksum; "
                                 f"rebuild with: {build_hint}")
    try:
        wav = np.load(path / f"{split}.npy")
        clips = json.loads((path / "clips.json").read_text())[split]
    except (OSError, ValueError, KeyError) as err:
        raise UserInputError(f"corrupt dataset at {path} ({err}); rebuild with: {build_hint}") from None
    if wav.ndim != 2 or len(wav) != len(clips) or len(wav) != manifest["splits"][split]["clips"]:
        raise UserInputError(f"corrupt dataset at {path}: split {split} has inconsistent sizes; rebuild with: "
                             f"{build_hint}")
    return wav, clips, manifest
