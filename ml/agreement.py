"""Agreement figures for large projects, with numpy: the MASI alpha's expected disagreement over every pair of
distinct label sets as blockwise matrix products. A heavy module (numpy): the dashboard's beat task and
`manage.py project_report` reach it through annotations.services.quality, never the web side's ml.metrics."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from ml.metrics import masi_distance, observed_disagreement

_BLOCK_CELLS = 2_000_000  # cells of the pairwise matrix at a time (16 MB per float64 temporary)


def masi_alpha_vectorised(units: Sequence[Sequence[Iterable[str]]]) -> float:
    """ml.metrics.krippendorff_alpha_masi, the same figure (up to float summation order), with the expected
    disagreement summed blockwise in numpy: |x & y| of every pair of distinct sets by a matrix product, then
    MASI's 1 - J * M from the sizes (M = 0.67 when one contains the other, 0.33 when they overlap, else 0)."""
    counts, n, observed = observed_disagreement(units, masi_distance)
    if observed == 0:
        return 1.0
    sets = list(counts)
    terms = {t: i for i, t in enumerate(sorted({t for s in sets for t in s}))}
    member = np.zeros((len(sets), max(len(terms), 1)), dtype=np.float32)  # small counts: exact in float32
    for row, s in enumerate(sets):
        member[row, [terms[t] for t in s]] = 1.0
    size = member.sum(axis=1, dtype=np.float64)
    weight = np.array([counts[s] for s in sets], dtype=np.float64)
    expected = 0.0
    rows_per_block = max(1, _BLOCK_CELLS // len(sets))
    for start in range(0, len(sets), rows_per_block):
        block = slice(start, start + rows_per_block)
        inter = (member[block] @ member.T).astype(np.float64)  # (B, V): |x & y|
        sx, sy = size[block, None], size[None, :]
        union = sx + sy - inter
        jac = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
        mono = np.where((inter == sx) | (inter == sy), 0.67, np.where(inter > 0, 0.33, 0.0))
        distance = 1.0 - jac * mono
        rows = np.arange(distance.shape[0])
        distance[rows, start + rows] = 0.0  # a set with itself: not a pair of different values
        expected += float((weight[block, None] * weight[None, :] * distance).sum())
    expected /= n * (n - 1)
    return 1.0 - observed / expected
