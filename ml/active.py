"""Active learning: which clip a human should label next.

Every clip gets cheap signals from its pre-labels (backend → labels; a label is a word, a ``(word, score)``
pair or an ``ml.types.Label``), each in [0, 1], higher meaning "a human is more likely needed":

- ``disagreement``: 1 − mean pairwise Jaccard between the backends' sets of *basic emotions* (see ``BASIC``),
  over the backends that answered. ``family_disagreement`` and ``term_disagreement`` are the same measure
  over vocabulary families and canonical terms (an unknown word is its own term and family).
- ``spread``: how many basic emotions the backends' labels span together, 0 for one, 1 for all.
- ``weak_support``: 1 − the mean share of backends behind each basic emotion any of them named.
- Family signals, over the *emotion families* of the project vocabulary (every family but ``general``, which
  names no emotion, and ``unassigned``; a word the vocabulary does not know has no family here):
  - ``family_spread``: how many distinct families the union of the backends' labels spans, on the scale of
    ``spread``: 0 for one, 1 for as many families as there are basic emotions (7) or more.
  - ``family_weak_support``: 1 − the mean, over the families present, of the share of backends naming it.
  - ``family_min_support``: 1 − the share of backends behind the least supported family present.
  - ``family_top_support``: 1 − the share of backends behind the best supported family: no consensus.
  - ``family_lone``: the share of the families present that only one backend names.

  Each is 1 when no backend names a family (nothing to trust); shares count every backend asked, so a
  refusal weakens support.
- ``uncertainty``: mean of (1 − score) over the labels that carry a score; 0.5 (no information) when none
  does, 1 when no backend gave a label.
- ``novelty``: MASI distance from the basic emotions most backends agree on to the nearest label set in a
  pool of verified clips (1 with no pool). A clip's own verified labels are left out of its pool.
- ``empty``: the share of backends that gave no label (refusal, parse failure).
- ``random``: a uniform number from a hash of (seed, clip id): reproducible and independent of order.

A ``Strategy`` scores a clip as the weighted sum of its signals. ``STRATEGIES`` names the built-in weightings;
``fit_weights`` searches non-negative weights summing to 1 that best rank the clips a human had to fix
(AUROC) on the clips it is given — fit on a development set, report on another.

The novelty signal uses label sets rather than sentence embeddings: the offline MiniLM model needs
sentence-transformers and torch (the web process must not import torch), and it scores antonyms as similar
(cheerful/gloomy 0.64), which is exactly the distinction this signal is for.

Standard library only: the web process orders its annotation queue with this module.
"""

from __future__ import annotations

import hashlib
import itertools
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from ml.metrics import jaccard, masi_distance
from ml.vocabulary import FAMILIES, UNASSIGNED, Vocabulary, normalise

FORMAT = 1


class _Scored(Protocol):
    term: str
    score: float | None


LabelLike = str | tuple[str, float | None] | _Scored
ClipPredictions = Mapping[str, Sequence[LabelLike]]
"""backend → labels, for one clip."""

# Vocabulary families grouped into basic emotions. Families are finer than what pre-label errors are about:
# "calm" and "happy" from two backends agree that the person feels good, whereas "angry" against "afraid"
# means the emotion itself is in question. On OV-MERD dev this level separates the clips whose pre-label
# needed fixing better than families or terms do (AUROC of disagreement 0.77, vs 0.76 and 0.75).
# "general" (positive, negative, mixed) names no emotion.
BASIC: dict[str, str | None] = {
    "joy": "joy", "love": "joy", "trust": "joy", "calm": "joy", "confidence": "joy",
    "surprise": "surprise", "interest": "surprise", "confusion": "surprise",
    "thought": "neutral", "neutral": "neutral",
    "fear": "fear", "sadness": "sadness", "shame": "sadness", "anger": "anger", "disgust": "disgust",
    "general": None,
}
N_BASIC = len({b for b in BASIC.values() if b})
# Families that name an emotion (``general`` is valence only; ``unassigned`` is not placed yet).
EMOTION_FAMILIES = FAMILIES - {"general", UNASSIGNED}

SIGNALS = ("disagreement", "family_disagreement", "term_disagreement", "spread", "weak_support",
           "family_spread", "family_weak_support", "family_min_support", "family_top_support", "family_lone",
           "uncertainty", "novelty", "empty", "random")
FAMILY_SIGNALS = ("family_spread", "family_weak_support", "family_min_support", "family_top_support",
                  "family_lone")

# Equal weights: on OV-MERD dev with all 8 predictor files, 5-fold cross-validation
# (`bench/active_ovmerd.py --cv`) scored them above the weights fit_weights finds for the same signals
# (held-out AUROC 0.805 vs 0.795), and this set above the others tried then (the three basic-level signals
# 0.790; adding family disagreement, novelty and empty 0.797). It was the default until ``families``.
COMBINED_WEIGHTS = {"disagreement": 0.25, "term_disagreement": 0.25, "spread": 0.25, "weak_support": 0.25}

# The default since the family signals: the same cross-validation, run on all 8 files and on two backends
# (AffectGPT epoch 30 and the MER2024 baseline: a project has at most two model backends), chose this set
# with equal weights by the mean held-out AUROC of the two (0.778: 0.773 and 0.784), above ``combined``
# (0.767: 0.805 and 0.730) and eight other sets. It needs no basic-emotion grouping: only the families.
FAMILIES_WEIGHTS = {"family_spread": 0.5, "family_weak_support": 0.5}

STRATEGIES: dict[str, Mapping[str, float]] = {
    "random": {"random": 1.0},
    "family_disagreement": {"family_disagreement": 1.0},
    "disagreement": {"disagreement": 1.0},
    "uncertainty": {"uncertainty": 1.0},
    "novelty": {"novelty": 1.0},
    "combined": COMBINED_WEIGHTS,
    "families": FAMILIES_WEIGHTS,
}
"""Built-in weightings by name: ``Strategy.named(name)``."""
DEFAULT_STRATEGY = "families"
"""The strategy of a new project (``annotations.project_config.ActiveLearning.strategy``)."""


# --- per-clip signals ---------------------------------------------------------------------------

@dataclass(frozen=True)
class _Answer:
    """One backend's labels for a clip, at each level of comparison."""
    terms: frozenset[str]
    families: frozenset[str]
    basics: frozenset[str]
    emotion_families: frozenset[str]
    scores: tuple[float, ...]


def _word_and_score(item: LabelLike) -> tuple[str, float | None]:
    if isinstance(item, str):
        return item, None
    if isinstance(item, tuple):
        return item[0], item[1]
    return item.term, item.score


def _answer(labels: Iterable[LabelLike], vocabulary: Vocabulary) -> _Answer:
    terms: set[str] = set()
    families: set[str] = set()
    basics: set[str] = set()
    emotion_families: set[str] = set()
    scores: list[float] = []
    for item in labels:
        word, score = _word_and_score(item)
        if not (key := normalise(word)):
            continue
        entry = vocabulary.lookup(word)
        terms.add(entry.term if entry else key)
        families.add(entry.family if entry else f"word:{key}")
        if entry and (basic := BASIC.get(entry.family)):
            basics.add(basic)
        if entry and entry.family in EMOTION_FAMILIES:
            emotion_families.add(entry.family)
        if score is not None:
            scores.append(min(1.0, max(0.0, float(score))))
    return _Answer(frozenset(terms), frozenset(families), frozenset(basics), frozenset(emotion_families),
                   tuple(scores))


def _disagreement(sets: Sequence[frozenset[str]]) -> float:
    pairs = list(itertools.combinations(sets, 2))
    return sum(1.0 - jaccard(a, b) for a, b in pairs) / len(pairs) if pairs else 0.0


def _consensus(answers: Sequence[_Answer]) -> frozenset[str]:
    """The basic emotions at least half the answering backends named; else the most named ones."""
    votes = Counter(b for a in answers for b in a.basics)
    if not votes:
        return frozenset()
    kept = {b for b, n in votes.items() if 2 * n >= len(answers)}
    return frozenset(kept or {b for b, n in votes.items() if n == max(votes.values())})


class Pool:
    """The basic-emotion sets of verified clips, counted, so novelty costs O(distinct sets) per clip."""

    def __init__(self, verified: Mapping[str, Iterable[str]], vocabulary: Vocabulary | None = None) -> None:
        vocabulary = vocabulary or Vocabulary.default()
        basics = {clip: _answer(labels, vocabulary).basics for clip, labels in verified.items()}
        self.sets = {clip: s for clip, s in basics.items() if s}
        self.counts = Counter(self.sets.values())

    def novelty(self, clip: str, basics: frozenset[str]) -> float:
        own = self.sets.get(clip)  # a verified clip is not novel merely because its own labels are known
        others = [s for s, n in self.counts.items() if n - (s == own) > 0]
        if not others:
            return 1.0
        return min(masi_distance(basics, s) for s in others)


def random_signal(clip: str, seed: int) -> float:
    digest = hashlib.blake2b(f"{seed}\0{clip}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2 ** 64


def family_signals(answers: Sequence[_Answer]) -> dict[str, float]:
    """The family signals of one clip from every asked backend's answer (empty answers included)."""
    support = Counter(f for a in answers for f in a.emotion_families)
    if not support:
        return dict.fromkeys(FAMILY_SIGNALS, 1.0)
    shares = [n / len(answers) for n in support.values()]
    return {
        "family_spread": min(1.0, (len(support) - 1) / (N_BASIC - 1)),
        "family_weak_support": 1.0 - sum(shares) / len(shares),
        "family_min_support": 1.0 - min(shares),
        "family_top_support": 1.0 - max(shares),
        "family_lone": sum(1 for n in support.values() if n == 1) / len(support),
    }


def clip_signals(clip: str, predictions: ClipPredictions, *, vocabulary: Vocabulary | None = None,
                 pool: Pool | None = None, seed: int = 0) -> dict[str, float]:
    vocabulary = vocabulary or Vocabulary.default()
    answers = [_answer(labels, vocabulary) for labels in predictions.values()]
    answered = [a for a in answers if a.terms]
    votes = Counter(b for a in answered for b in a.basics)
    scores = [s for a in answered for s in a.scores]
    return {
        "disagreement": _disagreement([a.basics for a in answered]),
        "family_disagreement": _disagreement([a.families for a in answered]),
        "term_disagreement": _disagreement([a.terms for a in answered]),
        "spread": max(0, len(votes) - 1) / (N_BASIC - 1),
        # No basic emotion named at all (only unknown or valence words) is as weak as support gets.
        "weak_support": 1.0 - sum(votes.values()) / (len(votes) * len(answers)) if votes else 1.0,
        **family_signals(answers),
        "uncertainty": (sum(1.0 - s for s in scores) / len(scores) if scores else 0.5) if answered else 1.0,
        "novelty": pool.novelty(clip, _consensus(answered)) if pool is not None else 1.0,
        "empty": 1.0 - len(answered) / len(answers) if answers else 1.0,
        "random": random_signal(clip, seed),
    }


# --- strategies ---------------------------------------------------------------------------------

@dataclass
class Strategy:
    """A weighted sum of signals; ``score`` → clip → priority (higher = annotate sooner)."""

    name: str
    weights: dict[str, float]
    seed: int = 0
    vocabulary: Vocabulary = field(default_factory=Vocabulary.default, repr=False, compare=False)

    def __post_init__(self) -> None:
        if unknown := set(self.weights) - set(SIGNALS):
            raise ValueError(f"unknown signals {sorted(unknown)}; known: {', '.join(SIGNALS)}")
        self.weights = {k: float(w) for k, w in self.weights.items()}

    @classmethod
    def named(cls, name: str, seed: int = 0, vocabulary: Vocabulary | None = None) -> Strategy:
        if name not in STRATEGIES:
            raise ValueError(f"unknown strategy {name!r}; known: {', '.join(STRATEGIES)}")
        return cls(name, dict(STRATEGIES[name]), seed, vocabulary or Vocabulary.default())

    def signals(self, clips: Mapping[str, ClipPredictions],
                verified: Mapping[str, Iterable[str]] | Pool | None = None) -> dict[str, dict[str, float]]:
        """clip → signal → value. ``verified``: clip → human labels, the pool novelty is measured against."""
        pool = verified if isinstance(verified, Pool) or verified is None else Pool(verified, self.vocabulary)
        return {clip: clip_signals(clip, preds, vocabulary=self.vocabulary, pool=pool, seed=self.seed)
                for clip, preds in clips.items()}

    def score(self, clips: Mapping[str, ClipPredictions],
              verified: Mapping[str, Iterable[str]] | Pool | None = None) -> dict[str, float]:
        return {clip: self.combine(s) for clip, s in self.signals(clips, verified).items()}

    def combine(self, signals: Mapping[str, float]) -> float:
        return round(sum(w * signals[k] for k, w in self.weights.items()), 9)

    def to_dict(self) -> dict[str, Any]:
        return {"strategy": self.name, "format": FORMAT, "weights": dict(self.weights), "seed": self.seed}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], vocabulary: Vocabulary | None = None) -> Strategy:
        if data.get("format") != FORMAT or not isinstance(data.get("weights"), Mapping):
            raise ValueError(f"not a stored strategy of format {FORMAT}: {str(dict(data))[:200]}")
        return cls(str(data["strategy"]), dict(data["weights"]), int(data.get("seed", 0)),
                   vocabulary or Vocabulary.default())


# --- evaluation and fitting ---------------------------------------------------------------------

def auroc(scores: Sequence[float], positives: Sequence[bool]) -> float:
    """P(a positive outranks a negative), ties counting half: Mann-Whitney U over average ranks."""
    if len(scores) != len(positives):
        raise ValueError("one label per score is needed")
    n_pos = sum(map(bool, positives))
    n_neg = len(scores) - n_pos
    if not n_pos or not n_neg:
        raise ValueError("AUROC needs at least one positive and one negative")
    order = sorted(range(len(scores)), key=scores.__getitem__)
    rank_sum, i = 0.0, 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and scores[order[j + 1]] == scores[order[i]]:
            j += 1
        average_rank = (i + j) / 2 + 1
        rank_sum += average_rank * sum(1 for k in order[i:j + 1] if positives[k])
        i = j + 1
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def _simplex(k: int, steps: int) -> Iterator[tuple[int, ...]]:
    """Every k-tuple of non-negative integers summing to ``steps``."""
    if k == 1:
        yield (steps,)
        return
    for first in range(steps, -1, -1):
        for rest in _simplex(k - 1, steps - first):
            yield (first, *rest)


# The combined strategy's signals plus uncertainty, which OV-MERD cannot judge (its labels carry no scores,
# so the signal is constant there and gets no weight) but a project whose backends score labels can.
DEFAULT_FIT_SIGNALS = ("disagreement", "term_disagreement", "spread", "weak_support", "uncertainty")


def fit_weights(clips: Mapping[str, ClipPredictions], needed_fix: Mapping[str, bool], *,
                verified: Mapping[str, Iterable[str]] | Pool | None = None,
                signals: Sequence[str] = DEFAULT_FIT_SIGNALS, steps: int = 10, name: str = "fitted",
                vocabulary: Vocabulary | None = None,
                values: Mapping[str, Mapping[str, float]] | None = None) -> tuple[Strategy, float]:
    """The weights on a grid of step 1/``steps`` over the simplex that maximise the AUROC of the score for
    ``needed_fix`` (clip → whether its pre-label needed a human) on the clips in it; and that AUROC.

    ``values`` (clip → signal → value, as ``Strategy.signals`` gives) saves computing the signals again when
    they are at hand, e.g. over the folds of a cross-validation. Signals constant over these clips cannot
    rank them and get no weight. Ties prefer the weights spread
    over more signals (a flatter mix is the safer bet off the fit data), then more weight on earlier signals.
    """
    probe = Strategy(name, {}, vocabulary=vocabulary or Vocabulary.default())
    fit_clips = [c for c in clips if c in needed_fix]
    if values is None:
        values = probe.signals({c: clips[c] for c in fit_clips}, verified)
    labels = [bool(needed_fix[c]) for c in fit_clips]
    usable = [s for s in signals if len({values[c][s] for c in fit_clips}) > 1]
    if not usable:
        raise ValueError("no signal varies over the clips given")
    columns = [[values[c][s] for c in fit_clips] for s in usable]
    best: tuple[float, int, tuple[int, ...]] | None = None
    for grid in _simplex(len(usable), steps):
        scores = [sum(g * col[i] for g, col in zip(grid, columns) if g) for i in range(len(fit_clips))]
        key = (round(auroc(scores, labels), 9), sum(1 for g in grid if g), grid)
        if best is None or key[:2] > best[:2]:
            best = key
    assert best is not None
    weights = {s: g / steps for s, g in zip(usable, best[2]) if g}
    return Strategy(name, weights, vocabulary=probe.vocabulary), best[0]
