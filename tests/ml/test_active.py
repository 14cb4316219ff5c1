"""Active-learning scores: AUROC, the signals on hand cases, strategies and storage, and the result on OV-MERD."""

import csv
import importlib.util
import json
import statistics
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from ml.active import (
    DEFAULT_STRATEGY,
    FAMILY_SIGNALS,
    SIGNALS,
    STRATEGIES,
    Pool,
    Strategy,
    auroc,
    clip_signals,
    fit_weights,
)
from ml.metrics import REFERENCE_DIR, load_ovmerd, sample_scores
from ml.types import Label
from tests.conftest import reference_path

ROOT = Path(__file__).resolve().parents[2]
# Chance, measured in the same run: the random strategy's test AUROC under this many seeds.
RANDOM_SEEDS = 100


# --- AUROC --------------------------------------------------------------------------------------

@pytest.mark.parametrize(("scores", "positives", "expected"), [
    ([0.1, 0.2, 0.8, 0.9], [False, False, True, True], 1.0),
    ([0.9, 0.8, 0.2, 0.1], [False, False, True, True], 0.0),
    ([0.5, 0.5, 0.5, 0.5], [False, True, False, True], 0.5),
    ([1.0, 1.0, 0.0], [True, False, False], 0.75),  # one win, one tie
    ([3, 1, 2, 2, 0], [True, False, True, False, False], 5.5 / 6),
])
def test_auroc_hand_cases(scores, positives, expected):
    assert auroc(scores, positives) == pytest.approx(expected)


def test_auroc_needs_both_classes():
    with pytest.raises(ValueError):
        auroc([0.1, 0.2], [True, True])


# --- signals ------------------------------------------------------------------------------------

def test_identical_backends_do_not_disagree():
    s = clip_signals("c", {"a": ["anxious", "sad"], "b": ["Anxiety", "sadness"]})
    assert (s["disagreement"], s["family_disagreement"], s["term_disagreement"]) == (0.0, 0.0, 0.0)
    assert s["weak_support"] == 0.0 and s["empty"] == 0.0


def test_disjoint_backends_disagree_fully():
    s = clip_signals("c", {"a": ["happy", "joyful"], "b": ["angry"], "c": ["terrified"]})
    assert (s["disagreement"], s["family_disagreement"], s["term_disagreement"]) == (1.0, 1.0, 1.0)
    assert s["spread"] > clip_signals("c", {"a": ["happy"], "b": ["angry"]})["spread"] > 0.0


def test_shades_of_one_basic_emotion_agree_at_the_basic_level_only():
    s = clip_signals("c", {"a": ["calm"], "b": ["happy"]})  # families calm and joy, both a good mood
    assert s["disagreement"] == 0.0 and s["family_disagreement"] == 1.0 and s["spread"] == 0.0


def test_uncertainty_rises_as_scores_fall_and_falls_back_without_scores():
    def uncertainty(score):
        return clip_signals("c", {"a": [Label("happy", score, "a")], "b": [("joyful", score)]})["uncertainty"]

    values = [uncertainty(score) for score in (1.0, 0.9, 0.6, 0.3, 0.0)]
    assert values == sorted(values) and values[0] == 0.0 and values[-1] == 1.0
    assert clip_signals("c", {"a": ["happy"], "b": [Label("sad", None, "b")]})["uncertainty"] == 0.5
    assert clip_signals("c", {"a": [], "b": []})["uncertainty"] == 1.0


def test_refusals_count_as_empty_and_leave_disagreement_to_the_others():
    s = clip_signals("c", {"a": ["happy"], "b": ["  "], "c": [], "d": ["joyful"]})
    assert s["empty"] == 0.5 and s["disagreement"] == 0.0
    assert clip_signals("c", {"a": [], "b": []})["weak_support"] == 1.0


def test_novelty_is_distance_to_the_nearest_verified_set_and_ignores_the_clip_itself():
    pool = Pool({"v1": ["happy", "excited"], "v2": ["angry"]})
    happy = {"a": ["joyful"], "b": ["cheerful", "excited"]}
    assert clip_signals("new", happy, pool=pool)["novelty"] == 0.0
    assert clip_signals("new", {"a": ["terrified"], "b": ["scared"]}, pool=pool)["novelty"] == 1.0
    assert clip_signals("v1", happy, pool=pool)["novelty"] > 0.0  # its own labels are not evidence
    assert clip_signals("new", happy)["novelty"] == 1.0  # nothing verified yet


def test_family_signals_by_hand():
    # Three backends asked: joy from a and b, calm from a only, c refused.
    s = clip_signals("c", {"a": ["happy", "calm"], "b": ["joyful"], "c": []})
    assert s["family_spread"] == pytest.approx(1 / 6)  # two families, on spread's scale (7 basic emotions)
    assert s["family_weak_support"] == pytest.approx(1 - (2 / 3 + 1 / 3) / 2)
    assert s["family_min_support"] == pytest.approx(2 / 3)
    assert s["family_top_support"] == pytest.approx(1 / 3)
    assert s["family_lone"] == 0.5
    # The same words in other forms agree fully: fear and sadness, each from both backends.
    same = clip_signals("c", {"a": ["anxious", "sad"], "b": ["Anxiety", "sadness"]})
    assert same["family_spread"] == pytest.approx(1 / 6)
    assert [same[k] for k in FAMILY_SIGNALS[1:]] == [0.0, 0.0, 0.0, 0.0]


def test_valence_words_and_unknown_words_span_no_family():
    s = clip_signals("c", {"a": ["positive", "frobnicated"], "b": ["happy"]})  # only joy, from b alone
    assert [s[k] for k in FAMILY_SIGNALS] == [0.0, 0.5, 0.5, 0.5, 1.0]
    nothing = clip_signals("c", {"a": ["positive"], "b": []})
    assert [nothing[k] for k in FAMILY_SIGNALS] == [1.0] * 5  # no emotion named: nothing to trust


def test_family_spread_counts_families_and_saturates():
    words = ["happy", "calm", "angry", "afraid", "sad", "disgusted", "surprised", "curious"]  # 8 families
    spreads = [clip_signals("c", {"a": words[:n], "b": ["happy"]})["family_spread"] for n in range(1, 9)]
    assert spreads == pytest.approx([0, 1 / 6, 2 / 6, 3 / 6, 4 / 6, 5 / 6, 1, 1])


# --- strategies ---------------------------------------------------------------------------------

def test_random_is_reproducible_order_free_and_roughly_uniform():
    clips = {f"clip{i:05d}": {"a": ["happy"]} for i in range(4000)}
    first = Strategy.named("random", seed=7).score(clips)
    again = Strategy.named("random", seed=7).score(dict(reversed(list(clips.items()))))
    other = Strategy.named("random", seed=8).score(clips)
    assert first == again and first != other
    deciles = [0] * 10
    for value in first.values():
        deciles[int(value * 10)] += 1
    assert all(330 <= n <= 470 for n in deciles), deciles


def test_every_named_strategy_scores_and_round_trips_through_json():
    clips = {"x": {"a": ["happy"], "b": ["angry"]}, "y": {"a": ["sad"], "b": ["sad"]}}
    for name in STRATEGIES:
        strategy = Strategy.named(name, seed=3)
        stored = json.loads(json.dumps(strategy.to_dict()))
        back = Strategy.from_dict(stored)
        assert back == strategy and back.score(clips) == strategy.score(clips)
    combined = Strategy.named("combined").score(clips)
    assert combined["x"] > combined["y"]


def test_the_default_strategy_is_the_family_one_and_new_projects_use_it():
    from annotations.project_config import ActiveLearning

    assert DEFAULT_STRATEGY == "families" and ActiveLearning().strategy == DEFAULT_STRATEGY
    assert Strategy.named(DEFAULT_STRATEGY).weights == {"family_spread": 0.5, "family_weak_support": 0.5}
    scores = Strategy.named(DEFAULT_STRATEGY).score({"agree": {"a": ["happy"], "b": ["joyful"]},
                                                     "split": {"a": ["happy"], "b": ["angry"]}})
    assert scores == {"agree": 0.0, "split": pytest.approx((1 / 6 + 0.5) / 2)}


def test_bad_strategies_are_refused():
    with pytest.raises(ValueError):
        Strategy("x", {"telepathy": 1.0})
    with pytest.raises(ValueError):
        Strategy.named("nope")
    with pytest.raises(ValueError):
        Strategy.from_dict({"strategy": "combined", "format": 99, "weights": {}})


def test_fit_weights_finds_the_informative_signal():
    # Clips whose backends disagree are the ones that needed fixing; the scores say nothing.
    clips = {f"d{i}": {"a": ["happy"], "b": [("angry", 0.5)]} for i in range(5)}
    clips |= {f"a{i}": {"a": ["sad"], "b": [("sad", 0.5)]} for i in range(5)}
    needed = {c: c.startswith("d") for c in clips}
    strategy, value = fit_weights(clips, needed, signals=("uncertainty", "term_disagreement"))
    assert value == 1.0 and strategy.weights == {"term_disagreement": 1.0}
    assert set(strategy.weights) <= set(SIGNALS)


# --- OV-MERD ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ovmerd() -> SimpleNamespace:
    reference_path("ovmerd")
    wheel, gt, splits, backends = load_ovmerd(REFERENCE_DIR)
    clips = {name: {b: labels.get(name, []) for b, labels in backends.items()} for name in gt}
    bad = {}
    for name, truth in gt.items():
        union = sorted({label for labels in clips[name].values() for label in labels})
        if (pr := sample_scores(truth, union, wheel)) is not None:
            bad[name] = (2 * pr[0] * pr[1] / (pr[0] + pr[1]) if sum(pr) else 0.0) < 0.5
    dev = [c for c in gt if splits[c] == "dev"]
    test_split = [c for c in gt if splits[c] == "test"]
    return SimpleNamespace(clips=clips, bad=bad, pool=Pool({c: gt[c] for c in dev}), dev=dev,
                           test_split=test_split, test=[c for c in test_split if c in bad])


def auroc_on_test(ref: SimpleNamespace, strategy: Strategy) -> float:
    scores = strategy.score({c: ref.clips[c] for c in ref.test}, ref.pool)
    return auroc([scores[c] for c in ref.test], [ref.bad[c] for c in ref.test])


@pytest.fixture(scope="module")
def chance(ovmerd) -> list[float]:
    return [auroc_on_test(ovmerd, Strategy.named("random", seed=seed)) for seed in range(RANDOM_SEEDS)]


def test_random_baseline_is_chance(chance):
    assert abs(statistics.fmean(chance) - 0.5) < 0.03


def test_disagreement_beats_every_random_ordering_on_test(ovmerd, chance):
    assert auroc_on_test(ovmerd, Strategy.named("family_disagreement")) > max(chance)


def test_combined_strategy_finds_bad_prelabels_on_test(ovmerd, chance):
    combined = auroc_on_test(ovmerd, Strategy.named("combined"))
    baseline = auroc_on_test(ovmerd, Strategy.named("family_disagreement"))
    assert combined > max(chance) + 0.05, (combined, max(chance))
    assert combined > baseline + 0.05, (combined, baseline)


def test_default_strategy_beats_every_random_ordering_on_test(ovmerd, chance):
    assert auroc_on_test(ovmerd, Strategy.named(DEFAULT_STRATEGY)) > max(chance)


def test_weights_fitted_on_dev_beat_the_baseline_on_test(ovmerd):
    ref = ovmerd
    needed = {c: ref.bad[c] for c in ref.dev if c in ref.bad}
    fitted, _ = fit_weights({c: ref.clips[c] for c in ref.dev}, needed, verified=ref.pool)
    baseline = auroc_on_test(ref, Strategy.named("family_disagreement"))
    assert auroc_on_test(ref, fitted) > baseline + 0.03


def test_bench_writes_one_score_file_per_strategy(ovmerd, tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "active_ovmerd.py"), "--out", str(tmp_path),
                          "--reference", str(REFERENCE_DIR)], check=False, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "combined" in out.stdout and f"{DEFAULT_STRATEGY} - combined on test" in out.stdout
    assert "2: affectgpt+mer2024" in out.stdout and "95% CI" in out.stdout
    for name in [*STRATEGIES, "default"]:
        with open(tmp_path / f"{name}.csv", newline="") as handle:
            rows = list(csv.DictReader(handle))
        assert [row["name"] for row in rows] == ovmerd.test_split
        assert all(float(row["score"]) >= 0 for row in rows)
    assert (tmp_path / "default.csv").read_text() == (tmp_path / f"{DEFAULT_STRATEGY}.csv").read_text()


def test_bench_skips_with_a_reason_without_the_reference_data(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "active_ovmerd.py"), "--out", str(tmp_path / "o"),
                          "--reference", str(tmp_path)], check=False, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "skipped: reference data not found" in out.stderr
    assert not (tmp_path / "o").exists()


def _bench():
    if (module := sys.modules.get("bench_active_ovmerd")) is None:
        spec = importlib.util.spec_from_file_location("bench_active_ovmerd", ROOT / "bench" / "active_ovmerd.py")
        module = sys.modules[spec.name] = importlib.util.module_from_spec(spec)  # dataclasses look it up
        spec.loader.exec_module(module)
    return module


def test_bootstrap_intervals_bracket_the_estimate_and_pair_the_resamples():
    bench = _bench()
    positives = [i % 3 == 0 for i in range(60)]
    scores = [0.3 * (i % 3 == 0) + (i % 7) / 10 for i in range(60)]  # overlapping classes
    value = auroc(scores, positives)
    (lo, hi), (lo2, hi2), diff = bench.bootstrap(positives, scores, scores, n=300)
    assert lo <= value <= hi < 1.0 and (lo, hi) == (lo2, hi2) and diff == (0.0, 0.0)


def test_cross_validation_of_the_default_signals_runs_on_dev_only(ovmerd):
    bench = _bench()
    wheel, gt, splits, backends = load_ovmerd(REFERENCE_DIR)
    setting = bench.make_setting("two", {b: backends[b] for b in bench.SUBSET}, gt, splits, wheel)
    assert set(setting.dev) <= {c for c in gt if splits[c] == "dev"} and not set(setting.dev) & set(setting.test)
    equal, fitted = bench.cross_validate(setting, gt, tuple(Strategy.named(DEFAULT_STRATEGY).weights))
    assert 0.6 < equal <= 1 and 0.6 < fitted <= 1

