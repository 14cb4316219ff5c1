"""ml.scoring_bootstrap: bootstrap intervals of the set-level scores, and the paired bootstrap of an F gain."""

import numpy as np
import pytest

from ml.metrics import vocabulary_scores, wheel_scores
from ml.scoring_bootstrap import (
    bootstrap_mean,
    paired_bootstrap,
    resample_indices,
    score_interval,
    vocabulary_pairs,
    wheel_pairs,
)
from ml.vocabulary import Vocabulary


def _coin(n, share, seed):
    return (np.random.default_rng(seed).random(n) < share).astype(float)


def test_the_interval_contains_the_mean_and_narrows_with_n():
    widths = []
    for n in (20, 200, 2000):
        values = _coin(n, 0.6, seed=n)
        out = bootstrap_mean(values)
        lo, hi = out["ci"]
        assert out["n"] == n and lo <= out["mean"] <= hi and lo < hi
        widths.append(hi - lo)
    assert widths[0] > widths[1] > widths[2]
    # ~ 2 * 1.96 * sqrt(p (1 - p) / n) at n = 2000
    assert widths[2] == pytest.approx(2 * 1.96 * np.sqrt(0.24 / 2000), rel=0.2)


def test_the_same_seed_gives_the_same_interval_and_another_seed_another():
    values = np.random.default_rng(3).random(50)  # continuous: two draws rarely share a percentile
    assert bootstrap_mean(values, seed=7) == bootstrap_mean(values, seed=7)
    assert bootstrap_mean(values, seed=7)["ci"] != bootstrap_mean(values, seed=8)["ci"]
    assert (resample_indices(10, resamples=5, seed=1) == resample_indices(10, resamples=5, seed=1)).all()


def test_score_interval_reproduces_the_point_scores_and_brackets_them():
    p, r = _coin(60, 0.7, seed=1), _coin(60, 0.5, seed=2)
    out = score_interval(p, r, resamples=500)
    assert out["precision"] == pytest.approx(p.mean()) and out["recall"] == pytest.approx(r.mean())
    assert out["f"] == pytest.approx(2 * p.mean() * r.mean() / (p.mean() + r.mean()))
    for key in ("precision", "recall", "f"):
        lo, hi = out["ci"][key]
        assert lo <= out[key] <= hi
    perfect = score_interval(np.ones(10), np.ones(10))
    assert perfect["f"] == 1.0 and perfect["ci"]["f"] == [1.0, 1.0]


def test_the_paired_gain_is_above_zero_when_one_model_is_clearly_better():
    good = (_coin(40, 0.9, seed=1), _coin(40, 0.9, seed=2))
    poor = (_coin(40, 0.2, seed=3), _coin(40, 0.2, seed=4))
    out = paired_bootstrap(good, poor)
    assert out["n"] == 40 and out["mean"] > 0.5
    assert 0 < out["ci"][0] <= out["mean"] <= out["ci"][1] and out["p_not_better"] == 0.0
    worse = paired_bootstrap(poor, good)
    assert worse["ci"][1] < 0 and worse["p_not_better"] == 1.0


def test_the_paired_gain_straddles_zero_when_the_models_are_equal():
    same = (_coin(40, 0.6, seed=1), _coin(40, 0.6, seed=2))
    identical = paired_bootstrap(same, same)
    assert identical["mean"] == 0.0 and identical["ci"] == [0.0, 0.0] and identical["p_not_better"] == 1.0
    # Two models as good as each other that err on different clips.
    other = (_coin(40, 0.6, seed=5), _coin(40, 0.6, seed=6))
    out = paired_bootstrap(same, other)
    assert out["ci"][0] < 0 < out["ci"][1]


def test_per_clip_pairs_reproduce_the_metrics_of_ml_metrics():
    vocab = Vocabulary.default()
    gt = {"a": ["happy"], "b": ["sad", "angry"], "c": ["calm"], "d": ["happy", "surprised"]}
    pred = {"a": ["happy"], "b": ["sad"], "c": ["angry", "calm"]}  # d: nothing predicted
    for level in ("term", "family"):
        p, r = vocabulary_pairs(gt, pred, vocab, level=level)
        expected = vocabulary_scores(gt, pred, vocab, level=level)
        out = score_interval(p, r, resamples=50)
        assert (out["f"], out["precision"], out["recall"]) == pytest.approx(
            (expected.f, expected.precision, expected.recall))


def test_per_wheel_pairs_reproduce_the_wheel_metric():
    from ml.metrics import WheelDataError, load_wheel

    try:
        wheel = load_wheel()
    except WheelDataError as exc:
        pytest.skip(f"emotion-wheel data not here: {exc}")
    gt = {"a": ["happy"], "b": ["sad", "angry"], "c": ["calm"], "d": ["happy", "surprised"]}
    pred = {"a": ["joyful"], "b": ["sad"], "c": ["angry", "calm"]}
    p, r = wheel_pairs(gt, pred, wheel)
    assert p.shape == (4, 5)
    expected = wheel_scores(gt, pred, wheel)
    out = score_interval(p, r, resamples=50)
    assert (out["f"], out["precision"], out["recall"]) == pytest.approx(
        (expected.f, expected.precision, expected.recall))


def test_a_bounded_bootstrap_gives_the_same_figures():
    import numpy as np

    from ml.scoring_bootstrap import score_interval

    rng = np.random.default_rng(5)
    p, r = rng.random((300, 5)), rng.random((300, 5))
    p[rng.random((300, 5)) < 0.1] = np.nan  # clips a wheel skips
    r[np.isnan(p)] = np.nan
    # 300 clips x 5 wheels x 1000 resamples in batches of 13 resamples: the same draws, the same figures.
    assert score_interval(p, r, cells=300 * 5 * 13) == score_interval(p, r)
    assert score_interval(p[:, 0], r[:, 0], cells=1) == score_interval(p[:, 0], r[:, 0])
