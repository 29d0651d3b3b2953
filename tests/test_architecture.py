"""The shape of the codebase, checked: layers point one way, no import cycles, cited paths exist,
the CLI's cheap verbs never import torch, and what older versions saved still loads.

Layers of bench/ (docs/architecture.md), lowest first: a module may import its own package and
any lower layer, never a higher one; models/ never imports bench/.
"""

from __future__ import annotations

import ast
import pickle
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
LAYERS = {  # package of bench/ -> rank
    "common": 0,
    "store": 1, "data": 1,
    "measure": 2,
    "harness": 3, "estimate": 3,
    "report": 4, "accuracy": 4,
    "cli": 5,
}
TOP_LEVEL = {"bench", "bench.__main__", "bench.legacy"}  # the package's own entry points


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every module an `import` / `from ... import` in the file names (module level and inside functions)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}  # `from bench.x import module`
    return found


def bench_graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in (REPO / "bench").rglob("*.py")}
    return {name: {m for m in imports_of(path) if m in modules and m != name} for name, path in modules.items()}


def layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and module not in TOP_LEVEL else None


def test_every_bench_package_has_a_layer():
    packages = {p.parent.name for p in (REPO / "bench").glob("*/__init__.py")}
    assert packages == set(LAYERS), "a new package of bench/ needs its place in LAYERS and docs/architecture.md"
    flat = sorted(p.name for p in (REPO / "bench").glob("*.py"))
    assert flat == ["__init__.py", "__main__.py", "legacy.py"], f"modules outside the layers: {flat}"


def test_dependencies_point_down_the_layers():
    wrong = []
    for module, targets in bench_graph().items():
        if layer(module) is None:
            continue
        for target in targets:
            t = layer(target)
            if t is not None and t != layer(module) and LAYERS[t] >= LAYERS[layer(module)]:
                wrong.append(f"{module} -> {target}")
    assert not wrong, "imports against the layers:\n" + "\n".join(sorted(wrong))


def test_no_import_cycle_inside_bench():
    graph = bench_graph()
    # a `from bench.x import y` edge to the package bench.x itself is an edge to its __init__
    state: dict[str, int] = {}
    cycle: list[str] = []

    def visit(node: str, stack: list[str]) -> bool:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycle.extend(stack[stack.index(nxt):] + [node, nxt] if nxt in stack else [node, nxt])
                return True
            if state.get(nxt) is None and visit(nxt, stack + [node]):
                return True
        state[node] = 2
        return False

    for start in sorted(graph):
        if state.get(start) is None and visit(start, []):
            break
    assert not cycle, "import cycle: " + " -> ".join(cycle)


def test_models_never_import_bench():
    offenders = [str(p.relative_to(REPO)) for p in (REPO / "models").rglob("*.py")
                 if any(m == "bench" or m.startswith("bench.") for m in imports_of(p))]
    assert not offenders


# --- cited paths ----------------------------------------------------------------------------------

CITED = re.compile(r"(?<![\w/.-])((?:bench|models|tests|scripts|docs)/[A-Za-z0-9_./*-]*[A-Za-z0-9_*/])")


def test_every_cited_path_exists():
    """Docstrings, comments and docs name files by path: each one must exist (globs must match)."""
    sources = [*REPO.glob("bench/**/*.py"), *REPO.glob("models/**/*.py"), *REPO.glob("tests/**/*.py"),
               *REPO.glob("scripts/*"), *REPO.glob("docs/*.md"), REPO / "README.md", REPO / "run_all.sh"]
    missing = []
    for source in sources:
        for match in CITED.finditer(source.read_text()):
            cited = match.group(1).rstrip(".")
            if "*" in cited:
                ok = any(REPO.glob(cited))
            else:
                ok = (REPO / cited).exists()
            if not ok:
                missing.append(f"{source.relative_to(REPO)}: {cited}")
    assert not missing, "paths cited but not in the repository:\n" + "\n".join(sorted(set(missing)))


def test_no_reference_to_documents_outside_the_repository():
    pattern = re.compile(r"\b(DESIGN|MODELS|DATA|STYLE)\.md\b|\.\./shared")
    sources = [*REPO.glob("bench/**/*.py"), *REPO.glob("models/**/*.py"), *REPO.glob("tests/**/*.py"),
               *REPO.glob("docs/*.md"), REPO / "README.md", REPO / "run_all.sh"]
    hits = [f"{p.relative_to(REPO)}:{n}" for p in sources for n, line in enumerate(p.read_text().splitlines(), 1)
            if pattern.search(line)]
    assert not hits, "cite docs/ instead:\n" + "\n".join(hits)


# --- the command line -----------------------------------------------------------------------------

def test_verb_table_help_is_each_modules_first_docstring_line():
    import importlib

    from bench.cli import VERBS

    for verb, (module_name_, summary) in VERBS.items():
        doc = importlib.import_module(module_name_).__doc__
        assert doc.strip().splitlines()[0] == summary, verb


def imported_modules(*argv: str) -> tuple[set[str], subprocess.CompletedProcess]:
    """Top-level packages a fresh interpreter imports running `ssamba-bench ARGV`, from -X importtime."""
    code = "import sys; from bench.cli import main; sys.exit(main(sys.argv[1:]))"
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", code, *argv], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    names = {line.rsplit("|", 1)[1].strip().split(".")[0] for line in proc.stderr.splitlines()
             if line.startswith("import time:") and "|" in line}
    return names, proc


@pytest.mark.parametrize("argv", [
    ["--help"],
    ["sweep", "--help"],
    ["table", "results/baseline/ci"],
    ["compare", "results/baseline/ci", "results/baseline/ci", "--policy", "ci"],
    ["collect", "{run}"],
    ["claims", "{run}", "--no-predictions", "--quiet"],
])
def test_cheap_verbs_do_not_import_torch(argv, tmp_path, ci_run_dir):
    """A run of this version (it has cases.json, so `collect` need not expand the config with the models)."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(ci_run_dir, run)
    argv = [a.format(run=run) for a in argv]
    names, proc = imported_modules(*argv)
    assert proc.returncode in (0, 1), proc.stderr[-2000:]  # collect: 1 = cases missing, still a clean answer
    assert "pandas" in names or argv[0] in ("--help", "sweep")  # the check sees real imports
    assert not names & {"torch", "timm", "torchaudio", "matplotlib"}, (argv, sorted(names & {"torch", "timm"}))


# --- what older versions saved --------------------------------------------------------------------

def test_a_cluster_job_pickled_before_the_redesign_still_loads():
    """submitit pickles a queued job by reference (bench.cluster.run_job, bench.sweep.Case, ...):
    a job submitted with --no-wait by the flat-layout version must start under this one."""
    from bench.harness.cases import Case
    from bench.harness.executors.submitit import run_job
    from bench.harness.settings import RunSettings

    job = pickle.loads((REPO / "tests/fixtures/job_pickled_before_redesign.pkl").read_bytes())
    assert job.function is run_job
    run_dir, cases, settings, budget_s = job.args
    assert all(isinstance(c, Case) for c in cases) and isinstance(settings, RunSettings)
    assert cases[0].case_id == Case(**cases[0].to_dict()).case_id  # ids unchanged by the move
    assert settings.extra_metrics == ("bench.estimate:case_metrics",)


def test_committed_runs_load_resume_and_compare(tmp_path, capsys):
    """The CI baseline and the CPU reference run, written before the redesign: loaded, resumed (nothing
    left to run) and compared (SAME with itself)."""
    import shutil

    from bench import cli
    from bench.report.compare import compare, load_policy, load_table
    from bench.store.run_store import load
    from bench.store.schema import validate

    for ref in ("results/baseline/ci", "results/reference/cpu-2core-amd-epyc"):
        assert validate(load(REPO / ref)) == [], ref
    run = tmp_path / "baseline"
    shutil.copytree(REPO / "results/baseline/ci", run)
    assert cli.main(["sweep", "ci", "--out", str(run), "--quiet", "--no-table"]) == 0
    assert "0 to run" in capsys.readouterr().err
    verdicts = compare(load_table(REPO / "results/baseline/ci"), load_table(run), load_policy("ci"))
    assert verdicts and not any(v.gated for v in verdicts)
