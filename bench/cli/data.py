"""Build and list the offline accuracy datasets (keyword spotting, speaker ID, sound events, real digits).

  ssamba-bench data build TASK [--cache DIR] [--small] [--install]
  ssamba-bench data list [--cache DIR]

Datasets are generated from Debian packages (espeak-ng, flite, fluidsynth + timgm6mb-soundfont, the
hedgewars-data and asterisk-core-sounds-en-wav .debs) into the cache ($SSAMBA_BENCH_DATA or
~/.cache/ssamba-bench/data), deterministically, with a manifest of generator versions, seeds and
checksums. --install installs missing system packages (root only) and downloads the .debs.
"""

from __future__ import annotations

import time

from bench.data import TASKS, build_task, check_task, dataset_path, read_manifest
from bench.data.cache import cache_root
from models.errors import UserInputError


def add_arguments(parser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    build = sub.add_parser("build", help="build one task (or 'all') into the cache")
    build.add_argument("task", help=f"one of {', '.join(TASKS)}, or 'all'")
    build.add_argument("--cache", default=None, help="cache directory (default $SSAMBA_BENCH_DATA or "
                                                     "~/.cache/ssamba-bench/data)")
    build.add_argument("--small", action="store_true", help="a reduced build (a few classes and speakers), for tests")
    build.add_argument("--install", action="store_true",
                       help="install missing system packages with apt-get (root only) and download the .debs")
    lst = sub.add_parser("list", help="list the tasks and what is built in the cache")
    lst.add_argument("--cache", default=None, help="cache directory")


def run(args) -> int:
    if args.action == "list":
        return _list(args.cache)
    tasks = list(TASKS) if args.task == "all" else [check_task(args.task).name]
    for task in tasks:
        start = time.perf_counter()
        manifest = build_task(task, cache=args.cache, small=args.small, install=args.install)
        sizes = ", ".join(f"{s} {v['clips']}" for s, v in manifest["splits"].items())
        print(f"{task}{' (small)' if args.small else ''}: {len(manifest['label_names'])} classes, {sizes} clips, "
              f"checksum {manifest['checksum'][:16]}, {time.perf_counter() - start:.1f} s -> "
              f"{dataset_path(task, cache=args.cache, small=args.small)}")
    return 0


def _list(cache) -> int:
    print(f"cache: {cache_root(cache)}")
    for name, info in TASKS.items():
        for small in (False, True):
            try:
                m = read_manifest(name, cache=cache, small=small)
                state = (f"built: {sum(v['clips'] for v in m['splits'].values())} clips, "
                         f"checksum {m['checksum'][:16]}")
            except UserInputError:
                if small:
                    continue
                state = "not built"
            label = name + ("-small" if small else "")
            print(f"  {label:<18} {state:<44} {info.description} [needs {info.needs}]")
    return 0
