"""mamba-ssm's CUDA selective-scan kernel, built from its source distribution on the registry.

The authors ran mamba-ssm's fused scan; this suite's own kernels are stand-ins. mamba-ssm ships
prebuilt wheels only for some torch/CUDA pairs (none for torch 2.11), and the GPU machines this suite
is measured on have nvcc but no network. So the kernel is built in two steps, nothing of it vendored
in this repository:

  fetch   (any machine with PyPI)   download the pinned sdist from PyPI's simple index (PEP 691 JSON)
          and check its sha256; writes build/mamba-sdist/<file>.tar.gz
  build   (the GPU machine)         compile its csrc/selective_scan with torch.utils.cpp_extension for
          this card's architecture only, with the nvcc flags of mamba-ssm's setup.py; writes
          build/mamba-kernel/selective_scan_cuda*.so. Point SSAMBA_BENCH_MAMBA_KERNEL at that folder
          and `scan_impl="mamba_ssm"` runs it (models/scan/mamba.py).

Which kernels: `--kernels fwd-fp32` (default: the fp32 forward with real weights, all an inference
benchmark of SSAMBA calls), `fp32` (+ the fp32 real backward, for training), `all` (every file
setup.py compiles). Compiled for sm_90 on the 2-core CPU machine with PyPI's nvcc 13.0 wheels:
fwd-fp32 in ~35 s, fp32 in ~1 min 50 s (one nvcc job per file; more cores only run files side by
side). The C++ binding (selective_scan.cpp) dispatches to every dtype, so the
instantiations a build leaves out are generated as stubs that raise "not built" if ever called.
`build --dry-run --arch 9.0` prints the plan without a compiler (what the tests run).

Why 2.3.2.post1 and not 2.2.4 (the previous pin): 2.2.4's sdist has no csrc/ at all (its setup.py
downloads a prebuilt wheel or fails), so it cannot be built here or for torch 2.11 anywhere;
2.3.2.post1's sdist carries the kernel sources. The scan kernel is the one Vim's fork (and so SSAMBA)
uses: same `selective_scan_fn` signature and arithmetic.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
import tarfile
import urllib.request
from pathlib import Path

PACKAGE = "mamba-ssm"
VERSION = "2.3.2.post1"
SDIST = f"mamba_ssm-{VERSION}.tar.gz"
SDIST_SHA256 = "104cc47e9101e5401a675fa2b784f2952b9b037f3b1dd83b5ac544394e95d028"
INDEX_URL = "https://pypi.org/simple"
SDIST_DIR = Path("build/mamba-sdist")
KERNEL_DIR = Path("build/mamba-kernel")
CSRC = "csrc/selective_scan"

# The flags of mamba-ssm 2.3.2.post1's setup.py for CUDA (its -gencode list replaced by one architecture).
CXX_FLAGS = ["-O3", "-std=c++17"]
NVCC_FLAGS = [
    "-O3", "-std=c++17",
    "-U__CUDA_NO_HALF_OPERATORS__", "-U__CUDA_NO_HALF_CONVERSIONS__",
    "-U__CUDA_NO_BFLOAT16_OPERATORS__", "-U__CUDA_NO_BFLOAT16_CONVERSIONS__",
    "-U__CUDA_NO_BFLOAT162_OPERATORS__", "-U__CUDA_NO_BFLOAT162_CONVERSIONS__",
    "--expt-relaxed-constexpr", "--expt-extended-lambda", "--use_fast_math", "-lineinfo",
]
# mamba-ssm's selective_scan_fwd_fp32.cu instantiates real and complex weights; SSAMBA's are real, so the
# fp32 sets compile a generated file with the real instantiation alone (one nvcc job, half the kernels).
FWD_FP32_REAL = "ssamba_bench_fwd_fp32_real.cu"
KERNEL_SETS = {
    "fwd-fp32": [FWD_FP32_REAL],
    "fp32": [FWD_FP32_REAL, "selective_scan_bwd_fp32_real.cu"],
    "all": None,  # every selective_scan_*.cu in the sdist, as its setup.py compiles
}
# Every (direction, input type, weight type) the binding dispatches to (selective_scan.cpp).
INPUT_TYPES = ("float", "at::Half", "at::BFloat16")
WEIGHT_TYPES = ("float", "complex_t")
INSTANTIATION = re.compile(r"template\s+void\s+selective_scan_(fwd|bwd)_cuda<\s*([\w:]+)\s*,\s*(\w+)\s*>")


class KernelBuildError(Exception):
    """Something the user can fix (a missing file, a bad hash, no GPU): one line, exit status 2."""


# ---- fetch ----------------------------------------------------------------------------------------------

def sdist_url(index_url: str = INDEX_URL, package: str = PACKAGE, filename: str = SDIST) -> tuple[str, str]:
    """(download URL, sha256 the index states) of `filename` from a PEP 691 JSON simple index."""
    request = urllib.request.Request(f"{index_url.rstrip('/')}/{package}/",
                                     headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        listing = json.load(response)
    for entry in listing.get("files", []):
        if entry.get("filename") == filename:
            return entry["url"], entry.get("hashes", {}).get("sha256", "")
    raise KernelBuildError(f"{filename} is not listed at {index_url}/{package}/")


def fetch(dest_dir: Path = SDIST_DIR, index_url: str = INDEX_URL, expected_sha256: str = SDIST_SHA256,
          filename: str = SDIST) -> Path:
    """Download the pinned sdist into `dest_dir` (kept if already there with the right hash)."""
    dest = dest_dir / filename
    if dest.exists() and _sha256(dest) == expected_sha256:
        print(f"{dest}: already fetched, sha256 ok")
        return dest
    url, listed = sdist_url(index_url, filename=filename)
    if listed and listed != expected_sha256:
        raise KernelBuildError(f"the index lists sha256 {listed} for {filename}, this script pins "
                               f"{expected_sha256}: not downloading a different file under the same name")
    dest_dir.mkdir(parents=True, exist_ok=True)
    partial = dest.with_suffix(dest.suffix + ".part")
    with urllib.request.urlopen(url, timeout=120) as response, open(partial, "wb") as out:
        out.write(response.read())
    got = _sha256(partial)
    if got != expected_sha256:
        partial.unlink()
        raise KernelBuildError(f"downloaded {filename} has sha256 {got}, expected {expected_sha256}")
    partial.replace(dest)  # only a verified file ever carries the final name
    print(f"{dest}: {dest.stat().st_size} bytes, sha256 ok")
    return dest


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---- build ----------------------------------------------------------------------------------------------

def extract_csrc(sdist: Path, work_dir: Path) -> Path:
    """Unpack the sdist's csrc/selective_scan into work_dir; its path. Only regular files under csrc/."""
    if not sdist.is_file():
        raise KernelBuildError(f"{sdist} does not exist: run `python scripts/mamba_kernel.py fetch` on a "
                               f"machine with PyPI access first, and bring build/mamba-sdist along")
    with tarfile.open(sdist) as tar:
        members = [m for m in tar.getmembers()
                   if m.isfile() and f"/{CSRC}/" in f"/{m.name}" and ".." not in Path(m.name).parts]
        if not members:
            raise KernelBuildError(f"{sdist.name} has no {CSRC}/ (mamba-ssm 2.2.4's sdist is like that): "
                                   f"use {SDIST}")
        # the "data" filter (Python >= 3.10.12 / 3.11.4) on top of the member check above, where it exists
        safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        tar.extractall(work_dir, members=members, **safe)
    return next(p.parent for p in work_dir.rglob("selective_scan.cpp") if p.parent.name == "selective_scan")


def choose_sources(csrc: Path, kernels: str) -> list[Path]:
    """selective_scan.cpp plus the kernel files of the chosen set, as they are in the sdist."""
    available = sorted(p.name for p in csrc.glob("selective_scan_*.cu"))
    names = KERNEL_SETS[kernels] if KERNEL_SETS[kernels] is not None else available
    if FWD_FP32_REAL in names and "selective_scan_fwd_fp32.cu" in available:
        (csrc / FWD_FP32_REAL).write_text(
            "// Generated by ssamba-bench's scripts/mamba_kernel.py: selective_scan_fwd_fp32.cu, real weights only\n"
            '#include "selective_scan_fwd_kernel.cuh"\n'
            "template void selective_scan_fwd_cuda<float, float>(SSMParamsBase &params, cudaStream_t stream);\n")
        available.append(FWD_FP32_REAL)
    missing = [n for n in names if n not in available]
    if missing:
        raise KernelBuildError(f"the sdist lacks {', '.join(missing)} (has {', '.join(available)})")
    return [csrc / "selective_scan.cpp", *(csrc / n for n in names)]


def stub_source(built: list[Path]) -> str:
    """A .cu defining every kernel instantiation the binding refers to but `built` leaves out, each
    raising a clear error: the binding links, and asking for a kernel not built says so."""
    present = {m.groups() for path in built for m in INSTANTIATION.finditer(path.read_text())}
    lines = [
        "// Generated by ssamba-bench's scripts/mamba_kernel.py: the instantiations this build leaves out.",
        "#include <cstdint>",  # selective_scan.h uses uint64_t without including it
        "#include <c10/util/BFloat16.h>",
        "#include <c10/util/Exception.h>",
        "#include <c10/util/Half.h>",
        '#include "selective_scan.h"',
        '#include "selective_scan_common.h"',
        "template<typename input_t, typename weight_t>",
        "void selective_scan_fwd_cuda(SSMParamsBase &params, cudaStream_t stream) {",
        '    TORCH_CHECK(false, "this selective_scan_cuda build has no forward kernel for this dtype: '
        'rebuild with scripts/mamba_kernel.py build --kernels all");',
        "}",
        "template<typename input_t, typename weight_t>",
        "void selective_scan_bwd_cuda(SSMParamsBwd &params, cudaStream_t stream) {",
        '    TORCH_CHECK(false, "this selective_scan_cuda build has no backward kernel for this dtype: '
        'rebuild with scripts/mamba_kernel.py build --kernels fp32 (or all)");',
        "}",
    ]
    for direction, params in (("fwd", "SSMParamsBase"), ("bwd", "SSMParamsBwd")):
        for input_t in INPUT_TYPES:
            for weight_t in WEIGHT_TYPES:
                if (direction, input_t, weight_t) not in present:
                    lines.append(f"template void selective_scan_{direction}_cuda<{input_t}, {weight_t}>"
                                 f"({params} &params, cudaStream_t stream);")
    return "\n".join(lines) + "\n"


def cuda_arch(requested: str | None) -> str:
    """The one architecture to compile for ("9.0"): --arch, else the visible GPU's capability."""
    if requested:
        if not re.fullmatch(r"\d+\.\d+a?", requested):
            raise KernelBuildError(f"--arch {requested!r}: write a compute capability such as 9.0 or 8.0")
        return requested
    import torch

    if not torch.cuda.is_available():
        raise KernelBuildError("no CUDA device here: build on the GPU machine, or pass --arch (with --dry-run)")
    major, minor = torch.cuda.get_device_capability()
    return f"{major}.{minor}"


def build(sdist: Path, out_dir: Path = KERNEL_DIR, kernels: str = "fwd-fp32", arch: str | None = None,
          dry_run: bool = False, jobs: int | None = None) -> Path:
    """Compile the chosen kernels into out_dir/selective_scan_cuda*.so (or, dry, print what would be)."""
    arch = cuda_arch(arch)
    out_dir.mkdir(parents=True, exist_ok=True)
    csrc = extract_csrc(sdist, out_dir / "src")
    sources = choose_sources(csrc, kernels)
    stub_text = stub_source(sources[1:])
    stubbed = stub_text.count("template void")
    if stubbed:  # a full build (`all`) needs none
        stub = out_dir / "src" / "ssamba_bench_stubs.cu"
        stub.write_text(stub_text)
        sources.append(stub)
    print(f"mamba-ssm {sdist.name}: kernels {kernels} for sm_{arch.replace('.', '')}; "
          f"{len(sources) - 1 - bool(stubbed)} kernel file(s), {stubbed} stubbed instantiation(s)")
    for path in sources:
        print(f"  source {path}")
    print(f"  nvcc {' '.join(NVCC_FLAGS)}")
    if dry_run:
        return out_dir
    os.environ["TORCH_CUDA_ARCH_LIST"] = arch
    os.environ.setdefault("MAX_JOBS", str(jobs or os.cpu_count() or 4))
    from torch.utils.cpp_extension import load

    module = load(name="selective_scan_cuda", sources=[str(p) for p in sources],
                  extra_cflags=CXX_FLAGS, extra_cuda_cflags=NVCC_FLAGS, extra_include_paths=[str(csrc)],
                  build_directory=str(out_dir), verbose=True)
    print(f"built {module.__file__}\nexport SSAMBA_BENCH_MAMBA_KERNEL={out_dir.resolve()}")
    return out_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    verbs = parser.add_subparsers(dest="verb", required=True)
    get = verbs.add_parser("fetch", help="download the pinned sdist from PyPI (needs network)")
    get.add_argument("--dest", type=Path, default=SDIST_DIR)
    get.add_argument("--index-url", default=INDEX_URL)
    make = verbs.add_parser("build", help="compile the kernel for this GPU (needs nvcc)")
    make.add_argument("--sdist", type=Path, default=SDIST_DIR / SDIST)
    make.add_argument("--out", type=Path, default=KERNEL_DIR)
    make.add_argument("--kernels", choices=sorted(KERNEL_SETS), default="fwd-fp32")
    make.add_argument("--arch", default=None, help="compute capability, e.g. 9.0 (default: the visible GPU's)")
    make.add_argument("--jobs", type=int, default=None, help="parallel compiles (MAX_JOBS; default: all cores)")
    make.add_argument("--dry-run", action="store_true", help="unpack, write the stubs, print the plan; compile nothing")
    args = parser.parse_args(argv)
    try:
        if args.verb == "fetch":
            fetch(args.dest, args.index_url)
        else:
            build(args.sdist, args.out, args.kernels, args.arch, args.dry_run, args.jobs)
    except KernelBuildError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
