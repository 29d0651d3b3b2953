"""mamba-ssm's kernel from its sdist: the fetch (against a local index), the build plan and its stubs
(dry run, no compiler), and the call into the bare extension (a stand-in module doing the reference's
arithmetic), so everything but the CUDA compile and launch is checked on CPU."""

from __future__ import annotations

import functools
import hashlib
import http.server
import importlib.util
import io
import json
import sys
import tarfile
import threading
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from models.scan import mamba
from models.scan.mamba_extension import SelectiveScanExtension, extension_scan_fn
from models.scan.reference import selective_scan_reference

ROOT = Path(__file__).resolve().parents[1]


def load_script():
    spec = importlib.util.spec_from_file_location("mamba_kernel_script", ROOT / "scripts" / "mamba_kernel.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


mk = load_script()


def make_sdist(path: Path, files: dict[str, str]) -> bytes:
    with tarfile.open(path, "w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path.read_bytes()


def kernel_file(*pairs: tuple[str, str, str]) -> str:
    return "\n".join(f"template void selective_scan_{d}_cuda<{i}, {w}>(SSMParams &params, cudaStream_t stream);"
                     for d, i, w in pairs)


FAKE_CSRC = {
    "selective_scan.cpp": "// binding",
    "selective_scan_fwd_fp32.cu": kernel_file(("fwd", "float", "float"), ("fwd", "float", "complex_t")),
    "selective_scan_fwd_fp16.cu": kernel_file(("fwd", "at::Half", "float"), ("fwd", "at::Half", "complex_t")),
    "selective_scan_fwd_bf16.cu": kernel_file(("fwd", "at::BFloat16", "float"), ("fwd", "at::BFloat16", "complex_t")),
    **{f"selective_scan_bwd_{t}_{k}.cu": kernel_file(("bwd", it, "float" if k == "real" else "complex_t"))
       for t, it in (("fp32", "float"), ("fp16", "at::Half"), ("bf16", "at::BFloat16")) for k in ("real", "complex")},
}


@pytest.fixture
def sdist(tmp_path):
    path = tmp_path / "mamba_ssm-9.9.tar.gz"
    files = {f"mamba_ssm-9.9/csrc/selective_scan/{n}": t for n, t in FAKE_CSRC.items()}
    make_sdist(path, {**files, "mamba_ssm-9.9/setup.py": "", "mamba_ssm-9.9/../escape.cu": "x"})
    return path


# ---- build plan -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("kernels, built, stubbed", [("fwd-fp32", 1, 11), ("fp32", 2, 10), ("all", 9, 0)])
def test_build_dry_run(sdist, tmp_path, capsys, kernels, built, stubbed):
    out = tmp_path / "kernel"
    mk.build(sdist, out, kernels, arch="9.0", dry_run=True)
    text = capsys.readouterr().out
    assert f"kernels {kernels} for sm_90; {built} kernel file(s), {stubbed} stubbed instantiation(s)" in text
    assert text.count("  source ") == 1 + built + bool(stubbed)  # the binding, the kernels, the stubs if any
    stub = out / "src" / "ssamba_bench_stubs.cu"
    assert stub.exists() == bool(stubbed)
    real_fwd = out / "src" / "mamba_ssm-9.9" / "csrc" / "selective_scan" / mk.FWD_FP32_REAL
    assert real_fwd.exists() == (kernels != "all")  # the fp32 sets compile the real-weight forward alone
    if kernels != "all":
        assert mk.INSTANTIATION.findall(real_fwd.read_text()) == [("fwd", "float", "float")]
    if kernels == "fwd-fp32":
        lines = stub.read_text()
        assert "selective_scan_fwd_cuda<float, float>" not in lines  # built, so not stubbed
        assert "selective_scan_fwd_cuda<float, complex_t>" in lines  # SSAMBA's weights are real
        assert "selective_scan_fwd_cuda<at::Half, float>" in lines and "selective_scan_bwd_cuda<float, float>" in lines
        assert "#include <cstdint>" in lines.split('#include "selective_scan.h"')[0]  # the header needs it first
    assert not (tmp_path / "escape.cu").exists() and not (out / "escape.cu").exists()  # only csrc/ is unpacked
    assert list(out.glob("*.so")) == []  # a dry run compiles nothing


def test_build_refuses_what_it_cannot_build(tmp_path, capsys):
    no_csrc = tmp_path / "mamba_ssm-2.2.4.tar.gz"  # as 2.2.4's sdist: Python only
    make_sdist(no_csrc, {"mamba_ssm-2.2.4/setup.py": "", "mamba_ssm-2.2.4/mamba_ssm/__init__.py": ""})
    cases = [
        (["build", "--sdist", str(no_csrc), "--arch", "9.0", "--dry-run"], "has no csrc/selective_scan/"),
        (["build", "--sdist", str(tmp_path / "absent.tar.gz"), "--arch", "9.0", "--dry-run"], "does not exist: run"),
        (["build", "--sdist", str(no_csrc), "--arch", "sm90", "--dry-run"], "write a compute capability"),
    ]
    if not torch.cuda.is_available():
        cases.append((["build", "--sdist", str(no_csrc), "--out", str(tmp_path / "k")], "no CUDA device here"))
    for argv, message in cases:
        assert mk.main(argv) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1 and "Traceback" not in err, err


# ---- fetch ----------------------------------------------------------------------------------------------

@pytest.fixture
def index(tmp_path):
    """A PEP 691 JSON simple index over HTTP (127.0.0.1), serving one sdist: (url, folder, sha256, filename)."""
    root = tmp_path / "index"
    (root / "simple" / "mamba-ssm").mkdir(parents=True)
    (root / "files").mkdir()
    filename = "mamba_ssm-9.9.tar.gz"
    sha = hashlib.sha256(make_sdist(root / "files" / filename, {"mamba_ssm-9.9/setup.py": ""})).hexdigest()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    url = f"http://127.0.0.1:{server.server_address[1]}"
    listing = {"files": [{"filename": filename, "url": f"{url}/files/{filename}", "hashes": {"sha256": sha}}]}
    (root / "simple" / "mamba-ssm" / "index.html").write_text(json.dumps(listing))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"{url}/simple", root, sha, filename
    server.shutdown()


def test_fetch_checks_the_hash(index, tmp_path, capsys):
    url, root, sha, filename = index
    dest = tmp_path / "sdist"
    got = mk.fetch(dest, url, expected_sha256=sha, filename=filename)
    assert got == dest / filename and got.read_bytes() == (root / "files" / filename).read_bytes()
    assert mk.fetch(dest, url, expected_sha256=sha, filename=filename) == got
    assert "already fetched" in capsys.readouterr().out
    with pytest.raises(mk.KernelBuildError, match="index lists sha256"):  # a pin the index contradicts
        mk.fetch(tmp_path / "other", url, expected_sha256="0" * 64, filename=filename)
    with pytest.raises(mk.KernelBuildError, match="is not listed"):
        mk.fetch(tmp_path / "other", url, expected_sha256=sha, filename="mamba_ssm-0.1.tar.gz")
    # the index states no hash and the file is not the pinned one: nothing is left under either name
    listing = json.loads((root / "simple" / "mamba-ssm" / "index.html").read_text())
    listing["files"][0]["hashes"] = {}
    (root / "simple" / "mamba-ssm" / "index.html").write_text(json.dumps(listing))
    with pytest.raises(mk.KernelBuildError, match="downloaded .* has sha256"):
        mk.fetch(tmp_path / "other", url, expected_sha256="1" * 64, filename=filename)
    assert list((tmp_path / "other").iterdir()) == []


# ---- the extension's calling convention -----------------------------------------------------------------

class FakeExtension:
    """`selective_scan_cuda`'s fwd/bwd contract with the reference's arithmetic; checks what it is given."""

    __file__ = "fake"

    @staticmethod
    def _check(*tensors):
        for t in tensors:
            assert t is None or t.stride(-1) == 1, "mamba-ssm's kernel needs unit stride along L"

    @staticmethod
    def fwd(u, delta, A, B, C, D, z, delta_bias, softplus):
        FakeExtension._check(u, delta, B, C, z)
        assert B.dim() == 4 and C.dim() == 4, "the kernel takes B and C with a group axis"
        out = selective_scan_reference(u, delta, A, B, C, D, None, delta_bias, softplus)
        x = torch.zeros(1)  # the kernel's saved chunk states; the backward receives it back
        return (out, x) if z is None else (out, x, out * F.silu(z))

    @staticmethod
    def bwd(u, delta, A, B, C, D, z, delta_bias, dout, x, out, dz, softplus, recompute):
        FakeExtension._check(u, delta, B, C, z, dout)
        assert dz is None and recompute is False and (out is None) == (z is None)
        inputs = (u, delta, A, B, C, D, z, delta_bias)
        leaves = [t if t is None else t.detach().clone().requires_grad_() for t in inputs]
        with torch.enable_grad():  # a backward runs with grad mode off
            y = selective_scan_reference(*leaves[:7], leaves[7], softplus)
            grads = torch.autograd.grad(y, [t for t in leaves if t is not None], dout)
        it = iter(grads)
        g = [None if t is None else next(it) for t in leaves]
        du, ddelta, dA, dB, dC, dD, dz_, dbias = g
        dD = torch.zeros_like(A[:, 0]) if dD is None else dD
        dbias = torch.zeros_like(A[:, 0]) if dbias is None else dbias
        return (du, ddelta, dA, dB, dC, dD, dbias) + ((dz_,) if z is not None else ())


def scan_args(full: bool, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    batch, dim, nstate, length = 2, 6, 4, 13
    x_dbl = torch.randn(batch, length, 2 * nstate, generator=g)
    args = dict(u=torch.randn(batch, length, dim, generator=g).transpose(1, 2),
                delta=torch.rand(batch, dim, length, generator=g), A=-torch.rand(dim, nstate, generator=g),
                B=x_dbl[..., :nstate].transpose(1, 2), C=x_dbl[..., nstate:].transpose(1, 2))
    if full:
        args.update(D=torch.randn(dim, generator=g), z=torch.randn(batch, length, dim, generator=g).transpose(1, 2),
                    delta_bias=torch.randn(dim, generator=g) * 0.1)
    return args


@pytest.mark.parametrize("full", [True, False])
def test_extension_call_matches_reference(full):
    args = scan_args(full)
    leaves = {k: v.detach().clone().requires_grad_() for k, v in args.items()}
    y = extension_scan_fn(FakeExtension)(**leaves, delta_softplus=True)
    ref_leaves = {k: v.detach().clone().requires_grad_() for k, v in args.items()}
    ref = selective_scan_reference(**ref_leaves, delta_softplus=True)
    torch.testing.assert_close(y, ref)
    weights = torch.randn(ref.shape, generator=torch.Generator().manual_seed(1))
    (y * weights).sum().backward()
    (ref * weights).sum().backward()
    for name in args:
        assert leaves[name].grad.shape == args[name].shape, name  # dB, dC back to (B, N, L)
        torch.testing.assert_close(leaves[name].grad, ref_leaves[name].grad, msg=name)
    assert SelectiveScanExtension.apply  # the Function the fn wraps


def test_lookup_order_and_source(tmp_path, monkeypatch):
    folder = tmp_path / "kernel"
    folder.mkdir()
    (folder / "selective_scan_cuda.py").write_text(  # a loadable stand-in for the compiled module
        "from tests.test_mamba_kernel import FakeExtension\nfwd, bwd = FakeExtension.fwd, FakeExtension.bwd\n")
    monkeypatch.syspath_prepend(str(ROOT))
    monkeypatch.setitem(sys.modules, "mamba_ssm", None)  # the package is not importable here
    monkeypatch.setattr(mamba, "_fn", mamba._MISSING)
    monkeypatch.delenv(mamba.ENV_VAR, raising=False)
    assert mamba.mamba_scan_fn() is None
    assert mamba.mamba_scan_source().startswith("unavailable (mamba_ssm package:")
    assert f"{mamba.ENV_VAR} not set" in mamba.mamba_scan_source()

    monkeypatch.setattr(mamba, "_fn", mamba._MISSING)
    monkeypatch.setenv(mamba.ENV_VAR, str(folder))
    monkeypatch.delitem(sys.modules, "selective_scan_cuda", raising=False)
    try:
        fn = mamba.mamba_scan_fn()
        assert mamba.mamba_scan_source().startswith("selective_scan_cuda extension (")
        args = scan_args(True, seed=3)
        torch.testing.assert_close(mamba.selective_scan_mamba(**args, delta_softplus=True),
                                   selective_scan_reference(**args, delta_softplus=True))
        assert fn is mamba.mamba_scan_fn()  # looked up once
    finally:
        sys.modules.pop("selective_scan_cuda", None)

    monkeypatch.setattr(mamba, "_fn", mamba._MISSING)
    monkeypatch.setenv(mamba.ENV_VAR, str(tmp_path / "empty"))
    assert mamba.mamba_scan_fn() is None
    assert "FileNotFoundError: no selective_scan_cuda module in" in mamba.mamba_scan_source()
