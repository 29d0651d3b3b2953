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
from models.scan.triton_scan import selective_scan_triton  # noqa: E402


def case(batch, dim, length, nstate, groups, full, seed):
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
    y = selective_scan_triton(u, delta, A, B, C, **extras)
    ref = selective_scan_reference(u, delta, A, B, C, **extras)
    assert y.shape == ref.shape and y.is_contiguous()
    return float((y - ref).abs().max() / ref.abs().max())


def gradients_case(seed):
    """Gradients through the custom op with impl="triton" (the chunked twin differentiates it)."""
    from models.scan.op import selective_scan_op

    g = torch.Generator().manual_seed(seed)
    dim, length, nstate = 8, 21, 4
    leaves = [torch.randn(1, dim, length, generator=g), torch.randn(1, dim, length, generator=g) * 0.5,
              -torch.rand(dim, nstate, generator=g), torch.randn(1, nstate, length, generator=g),
              torch.randn(1, nstate, length, generator=g), torch.randn(dim, generator=g)]
    worst = 0.0
    grads = []
    for fn in ("triton", "reference"):
        xs = [x.clone().requires_grad_() for x in leaves]
        if fn == "triton":
            y = selective_scan_op(*xs, None, None, True, "triton")
        else:
            y = selective_scan_reference(*xs, delta_softplus=True)
        y.square().sum().backward()
        grads.append([x.grad for x in xs])
    for a, b in zip(*grads):
        worst = max(worst, float((a - b).abs().max() / b.abs().max()))
    return worst


CASES = {
    # length 70: two full tiles and a ragged one (padding must carry the state unchanged)
    "ragged_full": (2, 16, 70, 16, 0, True, 0),
    "ragged_bare": (2, 16, 70, 16, 0, False, 1),
    "small_state": (1, 8, 33, 4, 0, True, 2),
    "grouped": (2, 16, 40, 16, 2, True, 3),
    "one_step": (1, 8, 1, 16, 0, True, 4),
}

if __name__ == "__main__":
    worst = 0.0
    for name, args in CASES.items():
        err = case(*args)
        worst = max(worst, err)
        print(f"case {name} {err:.3e}")
    err = gradients_case(5)
    worst = max(worst, err)
    print(f"case gradients {err:.3e}")
    sys.exit(0 if worst < 1e-5 else 1)
