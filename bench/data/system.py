"""System programs and Debian packages the dataset builders need: checks, versions, installation.

Every check raises a `UserInputError` naming the exact command that fixes it. `install=True` (the
`--install` flag) runs that command itself, only when running as root; the suite never installs
anything silently.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from models.errors import UserInputError

# program -> the Debian package that provides it
PROGRAMS = {"espeak-ng": "espeak-ng", "flite": "flite", "fluidsynth": "fluidsynth"}
SOUNDFONT_PACKAGE = "timgm6mb-soundfont"
SOUNDFONT = Path("/usr/share/sounds/sf2/TimGM6mb.sf2")
# The --no-install-recommends matters: timgm6mb-soundfont recommends a Qt synthesiser front end.
APT_INSTALL = "apt-get install -y --no-install-recommends"


def is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def install_command(packages: list[str]) -> str:
    return f"apt-get update && {APT_INSTALL} {' '.join(packages)}"


def _run_install(packages: list[str]) -> None:
    if not is_root():
        raise UserInputError(f"--install needs root; run as root: {install_command(packages)}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in (["apt-get", "update", "-qq"], APT_INSTALL.split() + packages):
        if subprocess.run(cmd, env=env).returncode != 0:
            raise UserInputError(f"`{' '.join(cmd)}` failed; run it by hand: {install_command(packages)}")


def require_packages(programs: list[str], soundfont: bool = False, install: bool = False) -> None:
    """Raise (or, with install=True as root, fix) when a needed program or the soundfont is missing."""
    missing = [PROGRAMS[p] for p in programs if shutil.which(p) is None]
    if soundfont and not SOUNDFONT.is_file():
        missing.append(SOUNDFONT_PACKAGE)
    if not missing:
        return
    if install:
        _run_install(missing)
        return require_packages(programs, soundfont, install=False)
    raise UserInputError(f"missing system package(s) {', '.join(missing)}; install them with: "
                         f"sudo {install_command(missing)} (or rerun with --install as root)")


def package_versions(packages: list[str]) -> dict[str, str]:
    """Installed Debian versions (`dpkg-query -W`) keyed `deb:<package>`, 'not installed' where absent."""
    versions = {}
    for pkg in packages:
        out = subprocess.run(["dpkg-query", "-W", "-f=${Version}", pkg], capture_output=True, text=True)
        versions[f"deb:{pkg}"] = out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else "not installed"
    return versions


def program_versions(programs: list[str]) -> dict[str, str]:
    """`<program> --version` -> its first meaningful line, for the manifest."""
    return {f"{p} --version": program_version(p) for p in programs}


def program_version(program: str) -> str:
    """First meaningful line of the program's version output (espeak-ng, flite and fluidsynth differ)."""
    args = {"espeak-ng": ["--version"], "flite": ["--version"], "fluidsynth": ["--version"]}[program]
    out = subprocess.run([program, *args], capture_output=True, text=True)
    lines = [ln.strip() for ln in (out.stdout + out.stderr).splitlines() if ln.strip()]
    versioned = [ln for ln in lines if "version" in ln.lower() or program in ln.lower()]
    return (versioned or lines or ["unknown"])[0]


def debian_package_files(package: str, downloads: Path, install: bool = False) -> tuple[Path, Path]:
    """The unpacked tree of a Debian package's .deb (downloaded into `downloads`), and the .deb.

    Looks for `downloads/<package>_*.deb` (and apt's own archive cache); with install=True runs
    `apt-get download` there (no root needed, only the network). Unpacks with `dpkg-deb -x` into
    `downloads/<package>/` once, atomically.
    """
    downloads.mkdir(parents=True, exist_ok=True)
    debs = sorted(downloads.glob(f"{package}_*.deb")) or sorted(Path("/var/cache/apt/archives").glob(f"{package}_*.deb"))
    if not debs:
        cmd = f"cd {downloads} && apt-get download {package}"
        if not install:
            raise UserInputError(f"the Debian package {package} is needed as a .deb; fetch it with: {cmd} "
                                 "(or rerun with --install)")
        if subprocess.run(["apt-get", "download", package], cwd=downloads).returncode != 0:
            raise UserInputError(f"`apt-get download {package}` failed; try: apt-get update && {cmd}")
        debs = sorted(downloads.glob(f"{package}_*.deb"))
    deb = debs[-1]
    tree = downloads / deb.stem
    if not tree.is_dir():
        tmp = downloads / f"{deb.stem}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        if subprocess.run(["dpkg-deb", "-x", str(deb), str(tmp)]).returncode != 0:
            shutil.rmtree(tmp, ignore_errors=True)
            raise UserInputError(f"`dpkg-deb -x {deb}` failed: the .deb is damaged; delete it and download again")
        tmp.rename(tree)
    return tree, deb


def deb_version(deb: Path) -> str:
    out = subprocess.run(["dpkg-deb", "-f", str(deb), "Version"], capture_output=True, text=True)
    return out.stdout.strip() or "unknown"


def deb_sha256(deb: Path) -> str:
    """sha256 of a downloaded .deb, remembered in `<deb>.sha256` (keyed on size and mtime) so that
    rebuilding does not rehash 145 MB every time."""
    import hashlib

    stat = deb.stat()
    key = f"{stat.st_size} {stat.st_mtime_ns}"
    sidecar = deb.with_name(deb.name + ".sha256")
    if sidecar.is_file():
        cached_key, _, digest = sidecar.read_text().strip().rpartition(" ")
        if cached_key == key:
            return digest
    h = hashlib.sha256()
    with open(deb, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    tmp = sidecar.with_name(f"{sidecar.name}.tmp-{os.getpid()}")
    tmp.write_text(f"{key} {h.hexdigest()}")
    tmp.rename(sidecar)
    return h.hexdigest()
