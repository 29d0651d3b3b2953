"""The CPU allocator's settings in a measuring child: glibc's defaults, its steady state, or a heap that is kept.

PyTorch's CPU tensors come from glibc's malloc. With its defaults a block above the (dynamic, at most
32 MiB) mmap threshold is mapped fresh for every allocation and unmapped when freed, so every call that
makes one pays a page fault per 4 KiB page, and how many blocks fall above the threshold depends on what
the process freed before: the same forward at 22,016 tokens takes ~7.0 s in a fresh child and ~4.9 s
with the heap kept (docs/protocols.md, "CPU: the allocator is part of the measurement"). A sweep's `cpu_allocator`
chooses, and every row records which applied:

  glibc   leave malloc as it is (the default; what the committed CPU reference results were measured with)
  pinned  glibc's own steady state from the start: mmap threshold fixed at 32 MiB (where the dynamic one
          stops rising) and trim threshold at 64 MiB. A block up to 32 MiB comes from the heap in a fresh
          child as in a warm one, a larger block is mapped and faulted in on every call in both: the
          measurement no longer depends on what the child ran before.
  retain  mallopt(M_MMAP_MAX, 0) and mallopt(M_TRIM_THRESHOLD, INT_MAX): every block comes from the heap
          and freed memory stays mapped, so warm calls reuse pages already faulted in (as a GPU's caching
          allocator does); malloc_trim between cases is skipped for the same reason. The heap can grow:
          PyTorch asks for 64-byte-aligned blocks, and a freed block not next to the heap's top is too
          small for the same request plus its alignment slack, so it is not reused.

mallopt changes a process for good, so a process that applied one mode refuses the other.
"""

from __future__ import annotations

import ctypes

from models.errors import UserInputError

CPU_ALLOCATORS = ("glibc", "pinned", "retain")
# glibc's malloc.h: parameter numbers of mallopt
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_MMAP_MAX = -4
MMAP_THRESHOLD_MAX = 32 * 2**20  # glibc's DEFAULT_MMAP_THRESHOLD_MAX on 64-bit: where its dynamic threshold stops
NEVER_TRIM = 2**31 - 1  # mallopt takes a C int: the largest stands for "never hand the heap back"
SETTINGS = {  # mode -> the mallopt calls that make it
    "glibc": (),
    "pinned": ((M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX), (M_TRIM_THRESHOLD, 2 * MMAP_THRESHOLD_MAX)),
    "retain": ((M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, NEVER_TRIM)),
}

_applied: str | None = None


def _libc():
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (musl, macOS): nothing to set
        return None
    return libc if hasattr(libc, "mallopt") else None


def apply_cpu_allocator(mode: str) -> None:
    """Put this process's malloc in `mode` (idempotent; the other mode afterwards is an error)."""
    global _applied
    if mode not in CPU_ALLOCATORS:
        raise UserInputError(f"cpu_allocator must be one of {', '.join(CPU_ALLOCATORS)}, got {mode!r}")
    if _applied is not None and _applied != mode:
        raise UserInputError(f"cpu_allocator {mode!r} asked of a process that already applied {_applied!r}: "
                             "mallopt cannot be undone; run the two settings as separate sweeps")
    if SETTINGS[mode] and _applied is None:
        libc = _libc()
        if libc is None:
            raise UserInputError(f"cpu_allocator {mode!r} needs glibc's mallopt, which this system lacks; "
                                 "use 'glibc' (the platform's allocator as it is)")
        for param, value in SETTINGS[mode]:
            if libc.mallopt(param, value) != 1:
                raise RuntimeError(f"glibc refused mallopt({param}, {value})")
    _applied = mode


def applied_cpu_allocator() -> str | None:
    """The mode this process applied (None: none yet, i.e. glibc's defaults)."""
    return _applied


def trims_between_cases() -> bool:
    """Whether release_memory may hand the heap back to the OS (not with a retained heap)."""
    return _applied != "retain"
