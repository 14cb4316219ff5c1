"""Bootstrap intervals for the set-level scores of ml.metrics (pure numpy; no Django, no torch).

The scores of ml.metrics are not plain means: F is computed from the clip-averaged precision and recall
(and, for the emotion wheel, per wheel and then averaged over the wheels, each wheel skipping the clips its
clusters do not cover). So the bootstrap resamples *clips* with replacement and recomputes the whole
statistic on each resample; the interval is the percentile interval of those recomputed values.

Inputs are per-clip (precision, recall) arrays of shape (n,) or (n, groups), a group being one wheel;
NaN marks a clip a group skips. The vocabulary metric is one group.

`paired_bootstrap` scores two models on the *same* resampled clips, so the interval of the F gain reflects
only their difference on each clip, not how hard the clips happen to be.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np

RESAMPLES = 1000
SEED = 0
CONFIDENCE = 0.95


def resample_indices(n: int, *, resamples: int = RESAMPLES, seed: int = SEED) -> np.ndarray:
    """(resamples, n) clip indices drawn with replacement; the same (n, resamples, seed) gives the same draw."""
    if n <= 0:
        raise ValueError("nothing to resample: n must be positive")
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def _as_groups(values) -> np.ndarray:
    array = np.asarray(values, dtype=float)
    if array.ndim == 1:
        array = array[:, None]
    if array.ndim != 2:
        raise ValueError(f"expected per-clip values of shape (n,) or (n, groups), got {array.shape}")
    return array


def _f(p: np.ndarray, r: np.ndarray) -> np.ndarray:
    total = p + r
    return np.divide(2 * p * r, total, out=np.zeros_like(total), where=total > 0)


def _scores(precision: np.ndarray, recall: np.ndarray, idx: np.ndarray | None) -> tuple[np.ndarray, ...]:
    """(f, precision, recall) over the clips `idx` selects (rows: one per resample), as ml.metrics computes
    them: per group the mean over the clips it scores, F of those means, then the mean over groups that scored
    at least one clip."""
    if idx is None:
        idx = np.arange(precision.shape[0])[None, :]
    p, r = precision[idx], recall[idx]  # (B, n, groups)
    scored = ~np.isnan(p)
    count = scored.sum(axis=1)  # (B, groups)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_p = np.where(scored, p, 0.0).sum(axis=1) / count
        mean_r = np.where(scored, r, 0.0).sum(axis=1) / count
    has = count > 0
    f = np.where(has, _f(np.nan_to_num(mean_p), np.nan_to_num(mean_r)), 0.0)
    groups = np.maximum(has.sum(axis=1), 1)

    def over_groups(x):
        return np.where(has, np.nan_to_num(x), 0.0).sum(axis=1) / groups

    return over_groups(f), over_groups(mean_p), over_groups(mean_r)


def _interval(values: np.ndarray, confidence: float) -> list[float]:
    tail = (1 - confidence) / 2 * 100
    lo, hi = np.percentile(values, [tail, 100 - tail])
    return [float(lo), float(hi)]


def bootstrap_mean(values: Sequence[float], *, resamples: int = RESAMPLES, seed: int = SEED,
                   confidence: float = CONFIDENCE) -> dict:
    """{"mean", "n", "ci": [lo, hi]} of a plain per-clip mean."""
    array = np.asarray(values, dtype=float)
    idx = resample_indices(len(array), resamples=resamples, seed=seed)
    return {"mean": float(array.mean()), "n": len(array),
            "ci": _interval(array[idx].mean(axis=1), confidence)}


# Drawing every resample at once makes (resamples, clips, groups) arrays: 4 GB each at 100,000 test clips with the
# five wheels. Above this many cells the resamples are drawn and scored in batches.
BOOTSTRAP_CELLS = 5_000_000


def score_interval(precision, recall, *, resamples: int = RESAMPLES, seed: int = SEED,
                   confidence: float = CONFIDENCE, cells: int = BOOTSTRAP_CELLS) -> dict:
    """{"precision", "recall", "f", "n", "ci": {"precision": [lo, hi], "recall": [...], "f": [...]}} of one model
    from its per-clip precision and recall ((n,) or (n, groups), NaN: skipped by that group). Memory is bounded
    by `cells`: batches of resamples draw the very indices resample_indices draws (the generator's draws are
    sequential), so the figures do not depend on it."""
    p, r = _as_groups(precision), _as_groups(recall)
    if p.shape != r.shape:
        raise ValueError(f"precision {p.shape} and recall {r.shape} differ in shape")
    f, mp, mr = (float(x[0]) for x in _scores(p, r, None))
    n, groups = p.shape
    if n == 0:
        raise ValueError("nothing to resample: n must be positive")
    rng = np.random.default_rng(seed)
    batch = max(1, cells // (n * groups))
    drawn: list[list[np.ndarray]] = [[], [], []]
    for start in range(0, resamples, batch):
        idx = rng.integers(0, n, size=(min(batch, resamples - start), n))
        for column, values in zip(drawn, _scores(p, r, idx)):
            column.append(values)
    bf, bp, br = (np.concatenate(column) for column in drawn)
    return {"precision": mp, "recall": mr, "f": f, "n": int(p.shape[0]),
            "ci": {"precision": _interval(bp, confidence), "recall": _interval(br, confidence),
                   "f": _interval(bf, confidence)}}


def paired_bootstrap(a: tuple, b: tuple, *, resamples: int = RESAMPLES, seed: int = SEED,
                     confidence: float = CONFIDENCE) -> dict:
    """The F gain of model `a` over model `b`, each given as (per-clip precision, per-clip recall) on the same
    clips in the same order: {"mean": F(a) - F(b) on all clips, "ci": [lo, hi] of the gain over resamples
    that draw the same clips for both, "p_not_better": share of resamples where the gain is <= 0, "n"}."""
    pa, ra = (_as_groups(x) for x in a)
    pb, rb = (_as_groups(x) for x in b)
    if not (pa.shape == ra.shape == pb.shape == rb.shape):
        raise ValueError("both models must be scored on the same clips (and groups)")
    gain = float(_scores(pa, ra, None)[0][0] - _scores(pb, rb, None)[0][0])
    idx = resample_indices(pa.shape[0], resamples=resamples, seed=seed)
    gains = _scores(pa, ra, idx)[0] - _scores(pb, rb, idx)[0]
    return {"mean": gain, "ci": _interval(gains, confidence), "p_not_better": float((gains <= 0).mean()),
            "n": int(pa.shape[0])}


# --- per-clip (precision, recall) of the ml.metrics scores -------------------------------------------------

def vocabulary_pairs(gt: Mapping[str, Sequence[str]], pred: Mapping[str, Sequence[str]], vocabulary,
                     level: str = "term", names: Iterable[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per-clip (precision, recall) of `ml.metrics.vocabulary_scores`, in the order of `names` (default: gt's);
    NaN for a clip without ground truth (the metric skips it). Their means are vocabulary_scores' P and R."""
    from ml.metrics import vocabulary_scores

    p, r = [], []
    for name in (gt if names is None else names):
        labels = gt[name]
        one = vocabulary_scores({name: labels}, {name: pred.get(name, ())}, vocabulary, level=level)
        skipped = one.f == one.precision == one.recall == 0.0 and not _maps_to_anything(labels, vocabulary)
        p.append(np.nan if skipped else one.precision)
        r.append(np.nan if skipped else one.recall)
    return np.asarray(p, dtype=float), np.asarray(r, dtype=float)


def _maps_to_anything(labels: Sequence[str], vocabulary) -> bool:
    return any(vocabulary.lookup(label) or str(label).strip() for label in labels)


def wheel_pairs(gt: Mapping[str, Sequence[str]], pred: Mapping[str, Sequence[str]], wheel, level: int = 1,
                names: Iterable[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per-clip, per-wheel (precision, recall) of `ml.metrics.wheel_scores`, shape (n, wheels), NaN where a
    wheel skips the clip; `score_interval` of them reproduces wheel_scores' figures."""
    from ml.metrics import _per_wheel

    rows = [_per_wheel(gt[name], pred.get(name, ()), wheel, level) for name in (gt if names is None else names)]
    p = np.array([[np.nan if s is None else s[0] for s in row] for row in rows], dtype=float)
    r = np.array([[np.nan if s is None else s[1] for s in row] for row in rows], dtype=float)
    return p, r
