"""The reference selective scan against a direct per-step evaluation of the recurrence in docs/models.md."""

import math

import torch

from models.scan.reference import selective_scan_reference


def direct_scan(u, delta, A, B, C, D, z, delta_bias):
    """Scalar loops over batch, channel, time and state: the recurrence written out, nothing vectorised."""
    batch, dim, length = u.shape
    n_state = A.shape[1]
    y = torch.zeros(batch, dim, length, dtype=torch.float64)
    for b in range(batch):
        for e in range(dim):
            h = [0.0] * n_state
            for t in range(length):
                d = float(delta[b, e, t] + delta_bias[e])
                d = math.log1p(math.exp(d))  # softplus
                acc = 0.0
                for n in range(n_state):
                    h[n] = math.exp(d * float(A[e, n])) * h[n] + d * float(B[b, n, t]) * float(u[b, e, t])
                    acc += h[n] * float(C[b, n, t])
                acc += float(D[e]) * float(u[b, e, t])
                zz = float(z[b, e, t])
                y[b, e, t] = acc * zz / (1 + math.exp(-zz))  # * silu(z)
    return y


def test_reference_matches_direct_evaluation():
    g = torch.Generator().manual_seed(0)
    batch, dim, length, n_state = 2, 3, 7, 4
    u = torch.randn(batch, dim, length, generator=g, dtype=torch.float64)
    delta = torch.randn(batch, dim, length, generator=g, dtype=torch.float64)
    A = -torch.rand(dim, n_state, generator=g, dtype=torch.float64) * 2
    B = torch.randn(batch, n_state, length, generator=g, dtype=torch.float64)
    C = torch.randn(batch, n_state, length, generator=g, dtype=torch.float64)
    D = torch.randn(dim, generator=g, dtype=torch.float64)
    z = torch.randn(batch, dim, length, generator=g, dtype=torch.float64)
    bias = torch.randn(dim, generator=g, dtype=torch.float64)
    ref = selective_scan_reference(u, delta, A, B, C, D, z, delta_bias=bias, delta_softplus=True)
    assert torch.allclose(ref, direct_scan(u, delta, A, B, C, D, z, bias), atol=1e-10)
