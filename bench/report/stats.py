"""Small statistics the suite needs without SciPy: the two-sided Mann-Whitney U test.

Exact null distribution for small samples without ties (the usual case for a handful of timing
samples), the normal approximation with tie and continuity corrections otherwise.
"""

from __future__ import annotations

import math
from functools import lru_cache


def mann_whitney_u_pvalue(x: list[float], y: list[float]) -> float:
    """Two-sided p-value of H0: x and y come from the same distribution."""
    m, n = len(x), len(y)
    if m == 0 or n == 0:
        raise ValueError("both samples need at least one value")
    pooled = sorted((v, i) for i, v in enumerate([*x, *y]))
    ranks = [0.0] * (m + n)
    tie_term = 0.0
    i = 0
    while i < m + n:
        j = i
        while j + 1 < m + n and pooled[j + 1][0] == pooled[i][0]:
            j += 1
        for k in range(i, j + 1):
            ranks[pooled[k][1]] = (i + j) / 2 + 1
        t = j - i + 1
        tie_term += t ** 3 - t
        i = j + 1
    u = sum(ranks[:m]) - m * (m + 1) / 2
    u = min(u, m * n - u)
    if tie_term == 0 and m * n <= 2500:
        counts = _u_distribution(m, n)
        total = math.comb(m + n, m)
        return min(1.0, 2 * sum(counts[: int(math.floor(u)) + 1]) / total)
    mean = m * n / 2
    var = m * n / 12 * ((m + n + 1) - tie_term / ((m + n) * (m + n - 1)))
    if var <= 0:
        return 1.0
    z = (abs(u - mean) - 0.5) / math.sqrt(var)
    return min(1.0, math.erfc(max(z, 0.0) / math.sqrt(2)))


@lru_cache(maxsize=64)
def _u_distribution(m: int, n: int) -> tuple[int, ...]:
    """Number of rank arrangements giving each U value, U = 0 .. m*n (no ties)."""
    # f[j][u]: arrangements of i x's and j y's with statistic u, built up over i.
    prev = [[1] + [0] * (m * n) for _ in range(n + 1)]  # i = 0: U = 0
    for i in range(1, m + 1):
        cur = [[0] * (m * n + 1) for _ in range(n + 1)]
        for j in range(n + 1):
            for u in range(m * n + 1):
                # the largest value is an x (beats all j y's) or a y
                total = prev[j][u - j] if u - j >= 0 else 0
                if j > 0:
                    total += cur[j - 1][u]
                cur[j][u] = total
        prev = cur
    return tuple(prev[n])
