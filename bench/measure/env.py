"""The environment a run was measured in, recorded in env.json and (the key facts) in every row.

What is recorded (docs/results-schema.md): host, CPU model and thread count, GPU name, driver, CUDA,
torch/timm/torchaudio versions, TF32 flags, git sha and dirty flag. Collected once by the parent;
each measuring child adds what only it knows (its thread count, the flags it set).
"""

from __future__ import annotations

import os
import platform
import socket
import subprocess
import sys
from importlib import metadata
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]  # bench/measure/env.py -> the repository


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def git_info(root: Path = REPO_ROOT) -> dict:
    """Commit and dirty flag (tracked files only: new result files do not make a tree dirty)."""
    def git(*args):
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10)
    try:
        head = git("rev-parse", "HEAD")
        status = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return {"git_sha": None, "git_dirty": None}
    sha = head.stdout.strip() if head.returncode == 0 else None
    dirty = bool(status.stdout.strip()) if status.returncode == 0 else None
    return {"git_sha": sha, "git_dirty": dirty}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average_text() -> str:
    """The 1-minute load average as text ("n/a" where the OS has none): printed beside timings,
    since other processes on the machine share its cores."""
    try:
        return "%.1f" % os.getloadavg()[0]
    except (OSError, AttributeError):
        return "n/a"


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def nvidia_driver() -> str | None:
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            version = pynvml.nvmlSystemGetDriverVersion()
        finally:
            pynvml.nvmlShutdown()
        return version.decode() if isinstance(version, bytes) else version
    except Exception:  # no driver, no library, no GPU: all mean "none"
        return None


def nvml_gpu_names() -> list[str]:
    """GPU names from NVML: the parent must not create a CUDA context (it would hold ~0.5 GB of the
    device the children measure). Honours CUDA_VISIBLE_DEVICES given as indices."""
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            count = pynvml.nvmlDeviceGetCount()
            visible = os.environ.get("CUDA_VISIBLE_DEVICES")
            indices = [int(i) for i in visible.split(",") if i.strip().isdigit()] if visible else range(count)
            names = [pynvml.nvmlDeviceGetName(pynvml.nvmlDeviceGetHandleByIndex(i)) for i in indices if i < count]
        finally:
            pynvml.nvmlShutdown()
        return [n.decode() if isinstance(n, bytes) else n for n in names]
    except Exception:  # no NVML: the measuring children record the name from torch
        return []


def _mamba_kernel() -> str:
    from models.scan.mamba import mamba_scan_source

    return mamba_scan_source()


def collect_env(threads: int | None = None) -> dict:
    """Everything env.json records. `threads`: the intra-op thread count children will use."""
    import torch

    cuda = torch.cuda.is_available()
    gpus = nvml_gpu_names() if cuda else []
    device_names = {"cpu": cpu_model()}
    for i, name in enumerate(gpus):
        device_names[f"cuda:{i}"] = name
        if i == 0:
            device_names["cuda"] = name
    return {
        **git_info(),
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "python_version": platform.python_version(),
        "python_executable": sys.executable,
        "argv": sys.argv,
        "cpu_model": cpu_model(),
        "cpu_count_logical": os.cpu_count(),
        "cpu_usable_cores": usable_cores(),
        "threads": threads if threads else usable_cores(),
        "loadavg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "torch_version": torch.__version__,
        "timm_version": _version("timm"),
        "torchaudio_version": _version("torchaudio"),
        "numpy_version": _version("numpy"),
        "cuda_version": torch.version.cuda,
        "cudnn_version": torch.backends.cudnn.version() if cuda else None,
        "cuda_available": cuda,
        "gpus": gpus,
        "device_names": device_names,
        "driver_version": nvidia_driver() if cuda else None,
        "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
        "tf32_cudnn": torch.backends.cudnn.allow_tf32,
        "mkldnn_enabled": torch.backends.mkldnn.is_available(),
        "torch_parallel_info": torch.__config__.parallel_info(),
        # which of mamba-ssm's kernels scan_impl "mamba_ssm" runs (package or built extension), if any
        "mamba_ssm_kernel": _mamba_kernel() if cuda else "not looked up (no CUDA device)",
        "env_vars": {k: os.environ[k] for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "CUDA_VISIBLE_DEVICES",
                                                 "TIMM_FUSED_ATTN", "PYTORCH_CUDA_ALLOC_CONF",
                                                 "SSAMBA_BENCH_MAMBA_KERNEL", "SSAMBA_BENCH_TRITON_TILES")
                     if k in os.environ},
    }
