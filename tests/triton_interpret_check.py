"""Run the Triton selective scan through Triton's CPU interpreter and compare it with the reference.

Executed by tests/test_triton_scan.py in a subprocess, because TRITON_INTERPRET must be set before
the kernel module is imported (`triton.jit` picks the interpreter at decoration time). Prints one
line per case: `case <name> <relative max error>`; exits non-zero on any error.
"""

from __future__ import annotations

import os
import sys

os.environ["TRITON_INTERPRET"] = "1"

import torch  # noqa: E402
import triton.runtime.interpreter as interpreter  # noqa: E402

# Triton 3.6's interpreter turns scalar kernel arguments into 1-element arrays and calls int() on
# them for `range`, which NumPy >= 2.4 refuses; index through .item() instead (interpreter only).
_patch = interpreter._patch_lang_tensor


def _patch_lang_tensor(tensor, scope):
    _patch(tensor, scope)
    scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.reshape(-1)[0]))


interpreter._patch_lang_tensor = _patch_lang_tensor

from models.scan.reference import selective_scan_reference  # noqa: E402
from models.scan.triton_scan import TritonTiles, selective_scan_triton  # noqa: E402


def case(batch, dim, length, nstate, groups, full, seed, tiles=None):
    g = torch.Generator().manual_seed(seed)
    # u as a transposed view: the models pass strided tensors and the kernel must honour strides
    u = torch.randn(batch, length, dim, generator=g).transpose(1, 2)
    delta = torch.randn(batch, dim, length, generator=g) * 0.5
    if not full:
        delta = delta.abs()  # without softplus a negative delta would make the state grow
    A = -torch.rand(dim, nstate, generator=g) * 2
    shape = (batch, groups, nstate, length) if groups else (batch, nstate, length)
    B, C = torch.randn(*shape, generator=g), torch.randn(*shape, generator=g)
    extras = {}
    if full:
        extras = dict(D=torch.randn(dim, generator=g), z=torch.randn(batch, dim, length, generator=g),
                      delta_bias=torch.randn(dim, generator=g) * 0.1, delta_softplus=True)
    y = selective_scan_triton(u, delta, A, B, C, **extras, tiles=tiles)
    ref = selective_scan_reference(u, delta, A, B, C, **extras)
    assert y.shape == ref.shape and y.is_contiguous()
    return float((y - ref).abs().max() / ref.abs().max())


def gradients_case(seed, *, dim=8, length=21, nstate=4, groups=0, full=False, reverse=False, out_scale=1.0):
    """Gradients of every input through the custom op with impl="triton" (its Triton backward kernel)
    against autograd of the reference scan: relative max error over all inputs."""
    from models.scan.op import selective_scan_op

    g = torch.Generator().manual_seed(seed)
    shape = (1, groups, nstate, length) if groups else (1, nstate, length)
    # u as a transposed view: the backward writes du with u's strides
    leaves = [torch.randn(1, length, dim, generator=g).transpose(1, 2), torch.randn(1, dim, length, generator=g) * 0.5,
              -torch.rand(dim, nstate, generator=g), torch.randn(*shape, generator=g),
              torch.randn(*shape, generator=g), torch.randn(dim, generator=g),
              torch.randn(1, dim, length, generator=g) if full else None,
              torch.randn(dim, generator=g) * 0.1 if full else None]
    weights = torch.randn(1, dim, length, generator=g)  # a loss whose gradient differs per element
    grads = []
    for fn in ("triton", "reference"):
        xs = [None if x is None else x.detach().clone().requires_grad_() for x in leaves]
        if fn == "triton":
            y = selective_scan_op(*xs, True, "triton", reverse, None, out_scale)
        else:
            flip = (lambda t: None if t is None else t.flip(-1)) if reverse else (lambda t: t)
            u, delta, A, B, C, D, z, bias = xs
            y = flip(selective_scan_reference(flip(u), flip(delta), A, flip(B), flip(C), D, flip(z), bias,
                                              delta_softplus=True)) * out_scale
        (y * weights).sum().backward()
        grads.append([x.grad for x in xs if x is not None])
    worst = 0.0
    for a, b in zip(*grads):
        worst = max(worst, float((a - b).abs().max() / b.abs().max()))
    return worst


GRADIENT_CASES = {
    "gradients": dict(seed=5),
    # two full tiles and a ragged one: the adjoint carried across tiles, padding contributing nothing
    "gradients_full": dict(seed=6, dim=8, length=70, nstate=8, full=True),
    "gradients_grouped": dict(seed=7, dim=8, length=40, nstate=4, groups=2, full=True),
    "gradients_reverse": dict(seed=8, dim=4, length=37, nstate=4, full=True, reverse=True, out_scale=0.5),
    "gradients_one_step": dict(seed=9, dim=4, length=1, nstate=4, full=True),
}


CASES = {
    # length 70: two full tiles and a ragged one (padding must carry the state unchanged)
    "ragged_full": (2, 16, 70, 16, 0, True, 0),
    "ragged_bare": (2, 16, 70, 16, 0, False, 1),
    "small_state": (1, 8, 33, 4, 0, True, 2),
    "grouped": (2, 16, 40, 16, 2, True, 3),
    "one_step": (1, 8, 1, 16, 0, True, 4),
}

# The other launch configurations (triton_scan.py's layouts, triton_scan_chunks.py's chunks) on the
# ragged, grouped and one-step problems: chunk ends inside the sequence, a ragged last chunk, a
# problem shorter than one tile with several chunks asked for (one is used).
TILED = {
    "loop": TritonTiles(4, 16, 4, "loop", 1),
    "chunks3": TritonTiles(4, 8, 4, "vector", 3),
    "loop_chunks4": TritonTiles(4, 8, 4, "loop", 4),
}
for label, tiles in TILED.items():
    for name in ("ragged_full", "ragged_bare", "grouped", "one_step"):
        CASES[f"{label}_{name}"] = (*CASES[name], tiles)
# many chunks, batch 3, grouped B/C: 93 steps in tiles of 8 = 12 tiles, 7 asked -> 6 chunks of 16 steps
CASES["chunks7_batch3"] = (3, 8, 93, 8, 2, True, 12, TritonTiles(4, 8, 4, "vector", 7))
CASES["loop_chunks7_batch3"] = (3, 8, 93, 8, 2, True, 13, TritonTiles(4, 8, 4, "loop", 7))

if __name__ == "__main__":
    worst = 0.0
    for name, args in CASES.items():
        err = case(*args)
        worst = max(worst, err)
        print(f"case {name} {err:.3e}")
    for name, kwargs in GRADIENT_CASES.items():
        err = gradients_case(**kwargs)
        worst = max(worst, err)
        print(f"case {name} {err:.3e}")
    sys.exit(0 if worst < 1e-5 else 1)
