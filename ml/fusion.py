"""Co-judgment: fuse the label lists that several backends gave one clip into one list.

Labels are compared as canonical vocabulary terms, so "anxiety" and "anxious" agree; a word the
vocabulary does not know is compared as itself (normalised) and written back as its most common
surface form. Strategies, by name in ``STRATEGIES``:

- ``union``: every term any backend named. The seed paper's co-judgment: recall up, precision down.
- ``intersection``: the terms every backend named.
- ``vote``: the terms at least ``min_support`` backends named; ``min_support`` is fitted.
- ``reliability``: a vote per vocabulary family in which each backend's vote weighs as much as its
  labels have been right. Fitted, from the data given to ``fit`` only:

  1. reliabilities, measured with the scorer as the precision of a backend's labels on the clips
     where it used them, at three levels, each shrunk toward the one above (empirical-Bayes style:
     n clips of evidence against ``strength`` clips' worth of the prior):
     backend p_b → family w_bφ = (n·p_bφ + k_φ·p_b)/(n + k_φ) → term w_bt = (n·p_bt + k_t·w_bφ)/(n + k_t);
  2. per clip, a family's support s_φ = Σ_b max_{t∈φ named by b} w_bt / B (B = fitted backends), in
     [0, 1], and a term's support s_t = Σ_{b named t} w_bt / B;
  3. the threshold θ on s_φ and the share ρ: in each family with s_φ ≥ θ, every term with
     s_t ≥ ρ·max s_t is emitted. (θ, ρ) maximise the scorer's F on the fit data among the choices
     whose precision is not below that of the best single backend there.

  Voting by family lets "tense", "uneasy" and "anxious" from different backends add up, while the
  per-term weights keep a backend's habitually wrong word from counting like its good ones. The
  strengths (k_φ = 2, k_t = 3) were chosen by 5-fold cross-validation on the OV-MERD dev split.

The fitted strategies never return an empty list for a clip that some backend labelled: they fall
back to the best-supported family (or terms), since an empty set is a sure miss for every metric and
leaves the annotator nothing to correct. Stdlib only: the web process reads fitted fusions.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from ml.metrics import Scores, vocabulary_scores
from ml.vocabulary import Vocabulary, normalise

FORMAT = 1


class _Scored(Protocol):
    term: str
    score: float | None


LabelLike = str | tuple[str, float] | _Scored
"""A label word, optionally with the backend's confidence in it (a pair, or an ``ml.types.Label``)."""
Predictions = Mapping[str, Mapping[str, Sequence[LabelLike]]]
"""backend → clip → labels."""
Scorer = Callable[[Mapping[str, Sequence[str]], Mapping[str, Sequence[str]]], Scores]
"""(truth, prediction), clip → labels each, → dataset scores: the emotion-wheel or vocabulary metric."""


@dataclass(frozen=True)
class FusedLabel:
    term: str
    score: float
    """In [0, 1]: the strategy's support for the label."""
    support: int
    """How many backends named this term."""
    source: str = "fused"
    evidence: tuple[tuple[str, float | None], ...] = ()
    """(backend, its score for the label or None) for each backend that proposed it, by backend name: what
    a chip shows as "InternVL 0.82 · AffectGPT 0.64"."""


def _word_and_score(item: LabelLike) -> tuple[str, float | None]:
    """The word and the backend's own score for it (None when the backend gave none)."""
    if isinstance(item, str):
        return item, None
    if isinstance(item, tuple):
        return item[0], None if item[1] is None else float(item[1])
    return item.term, None if item.score is None else float(item.score)


@dataclass
class _Term:
    family: str
    known: bool
    surfaces: Counter[str] = field(default_factory=Counter)
    votes: dict[str, float] = field(default_factory=dict)  # backend -> confidence (1.0 when not given)
    scores: dict[str, float | None] = field(default_factory=dict)  # backend -> its own score, as given


class _Tally:
    """One clip's labels from every backend, grouped by canonical term (the term's key)."""

    def __init__(self, per_backend: Mapping[str, Iterable[LabelLike]], vocabulary: Vocabulary) -> None:
        self.backends = list(per_backend)
        self.terms: dict[str, _Term] = {}
        for backend, labels in per_backend.items():
            for item in labels:
                word, score = _word_and_score(item)
                if not normalise(word):
                    continue
                entry = vocabulary.lookup(word)
                key = entry.term if entry else normalise(word)
                family = entry.family if entry else f"word:{key}"
                term = self.terms.setdefault(key, _Term(family, known=entry is not None))
                term.surfaces[word.strip().lower()] += 1
                term.votes[backend] = max(1.0 if score is None else score, term.votes.get(backend, 0.0))
                if score is not None or backend not in term.scores:
                    known = term.scores.get(backend)
                    term.scores[backend] = score if known is None else max(known, score)
        self.order = {key: i for i, key in enumerate(self.terms)}  # first mention breaks ties
        self.words = {key: key if t.known else t.surfaces.most_common(1)[0][0]
                      for key, t in self.terms.items()}

    def families(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for key, term in self.terms.items():
            out.setdefault(term.family, []).append(key)
        return out


def _tallies(predictions: Predictions, clips: Iterable[str], vocabulary: Vocabulary) -> dict[str, _Tally]:
    return {clip: _Tally({b: p.get(clip, ()) for b, p in predictions.items()}, vocabulary) for clip in clips}


class Fusion:
    """A fusion strategy. Subclasses set ``name``; fitted ones override ``fit``, ``_params``, ``_load``."""

    name: ClassVar[str]

    def __init__(self, vocabulary: Vocabulary | None = None) -> None:
        self.vocabulary = vocabulary or Vocabulary.default()

    def fit(self, predictions: Predictions, truth: Mapping[str, Sequence[str]],
            scorer: Scorer | None = None) -> Fusion:
        """Learn from the clips of ``truth`` only; a clip a backend lacks counts as no labels. The
        default scorer is the vocabulary-family metric."""
        return self

    def fuse(self, per_backend_labels: Mapping[str, Iterable[LabelLike]]) -> list[FusedLabel]:
        return self._decide(_Tally(per_backend_labels, self.vocabulary))

    def fuse_many(self, predictions: Predictions, clips: Iterable[str]) -> dict[str, list[str]]:
        return {clip: [label.term for label in self._decide(tally)]
                for clip, tally in _tallies(predictions, clips, self.vocabulary).items()}

    def to_dict(self) -> dict[str, Any]:
        return {"strategy": self.name, "format": FORMAT, **self._params()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], vocabulary: Vocabulary | None = None) -> Fusion:
        if data.get("format") != FORMAT or data.get("strategy") not in STRATEGIES:
            raise ValueError(f"not a stored fusion of format {FORMAT}: {str(dict(data))[:200]}")
        fusion = STRATEGIES[data["strategy"]](vocabulary)
        fusion._load(data)
        return fusion

    def _decide(self, tally: _Tally) -> list[FusedLabel]:
        raise NotImplementedError

    def _params(self) -> dict[str, Any]:
        return {}

    def _load(self, data: Mapping[str, Any]) -> None:
        pass

    def _labels(self, tally: _Tally, scores: Mapping[str, float]) -> list[FusedLabel]:
        keys = sorted(scores, key=lambda k: (-scores[k], -len(tally.terms[k].votes), tally.order[k]))
        return [FusedLabel(tally.words[k], round(min(1.0, scores[k]), 6), len(tally.terms[k].votes),
                           evidence=tuple(sorted((b, None if s is None else round(s, 6))
                                                 for b, s in tally.terms[k].scores.items())))
                for k in keys]

    def _scorer(self, scorer: Scorer | None) -> Scorer:
        return scorer or (lambda gt, pred: vocabulary_scores(gt, pred, self.vocabulary, level="family"))


class Union(Fusion):
    name = "union"

    def _decide(self, tally: _Tally) -> list[FusedLabel]:
        n = len(tally.backends) or 1
        return self._labels(tally, {k: len(t.votes) / n for k, t in tally.terms.items()})


class Intersection(Fusion):
    name = "intersection"

    def _decide(self, tally: _Tally) -> list[FusedLabel]:
        n = len(tally.backends)
        return self._labels(tally, {k: 1.0 for k, t in tally.terms.items() if len(t.votes) == n})


# --- fitting ------------------------------------------------------------------------------------

def _select(choices: Iterable[tuple[Any, dict[str, list[str]]]], truth: Mapping[str, Sequence[str]],
            scorer: Scorer, floor: float) -> tuple[Any, Scores, bool]:
    """The choice of best F among those whose precision is ≥ ``floor`` (higher precision breaks ties;
    then the earliest), or of best F overall when none is; the flag says whether the floor was met."""
    scored = [(choice, scorer(truth, pred)) for choice, pred in choices]
    eligible = [cs for cs in scored if cs[1].precision >= floor] or scored
    choice, scores = max(eligible, key=lambda cs: (round(cs[1].f, 9), round(cs[1].precision, 9)))
    return choice, scores, scores.precision >= floor


def _singles(predictions: Predictions, truth: Mapping[str, Sequence[str]],
             scorer: Scorer) -> dict[str, Scores]:
    if not predictions or not truth:
        raise ValueError("nothing to fit on: no backend or no clip with truth")
    return {b: scorer(truth, {c: [_word_and_score(x)[0] for x in p.get(c, ())] for c in truth})
            for b, p in predictions.items()}


def _grid(values: Iterable[float], most: int) -> list[float]:
    ordered = sorted(values)
    if len(ordered) <= most:
        return ordered
    return [ordered[round(i * (len(ordered) - 1) / (most - 1))] for i in range(most)]


def _report(scores: Scores, singles: Mapping[str, Scores], floor_met: bool) -> dict[str, Any]:
    best = max(singles, key=lambda b: (singles[b].f, singles[b].precision))
    return {"f": round(scores.f, 6), "precision": round(scores.precision, 6),
            "recall": round(scores.recall, 6), "n": scores.n, "best_single": best,
            "best_single_f": round(singles[best].f, 6),
            "best_single_precision": round(singles[best].precision, 6), "precision_floor_met": floor_met}


def _floor(singles: Mapping[str, Scores]) -> float:
    """The precision of the best single backend (by F): fusion must not buy recall below it."""
    return max(singles.values(), key=lambda s: (s.f, s.precision)).precision


class Vote(Fusion):
    name = "vote"

    def __init__(self, vocabulary: Vocabulary | None = None, min_support: int = 1) -> None:
        super().__init__(vocabulary)
        self.min_support = min_support
        self.report: dict[str, Any] = {}

    def fit(self, predictions: Predictions, truth: Mapping[str, Sequence[str]],
            scorer: Scorer | None = None) -> Vote:
        scorer = self._scorer(scorer)
        singles = _singles(predictions, truth, scorer)
        tallies = _tallies(predictions, truth, self.vocabulary)

        def run(k: int) -> dict[str, list[str]]:
            self.min_support = k
            return {c: [label.term for label in self._decide(t)] for c, t in tallies.items()}

        k, scores, met = _select(((k, run(k)) for k in range(1, len(predictions) + 1)), truth, scorer,
                                 _floor(singles))
        self.min_support, self.report = k, _report(scores, singles, met)
        return self

    def _decide(self, tally: _Tally) -> list[FusedLabel]:
        n = len(tally.backends) or 1
        support = {k: len(t.votes) for k, t in tally.terms.items()}
        kept = {k for k, s in support.items() if s >= self.min_support}
        if not kept and support:
            kept = {k for k, s in support.items() if s == max(support.values())}
        return self._labels(tally, {k: support[k] / n for k in kept})

    def _params(self) -> dict[str, Any]:
        return {"min_support": self.min_support, "report": self.report}

    def _load(self, data: Mapping[str, Any]) -> None:
        self.min_support, self.report = int(data["min_support"]), dict(data.get("report", {}))


# family -> (its support, term key -> the term's support)
_Supports = dict[str, tuple[float, dict[str, float]]]


class Reliability(Fusion):
    name = "reliability"
    TERM_SHARES = (0.0, 0.5, 1.0)
    MAX_THRESHOLDS = 120  # per share: evenly spaced quantiles of the supports seen, to keep fitting ~seconds

    def __init__(self, vocabulary: Vocabulary | None = None, family_strength: float = 2.0,
                 term_strength: float = 3.0) -> None:
        super().__init__(vocabulary)
        self.family_strength, self.term_strength = family_strength, term_strength
        self.precision: dict[str, float] = {}  # backend -> p_b
        self.families: dict[str, dict[str, float]] = {}  # backend -> family -> w_bφ
        self.terms: dict[str, dict[str, float]] = {}  # backend -> term key -> w_bt
        self.threshold, self.term_share = 0.0, 0.5
        self.report: dict[str, Any] = {}

    def fit(self, predictions: Predictions, truth: Mapping[str, Sequence[str]],
            scorer: Scorer | None = None) -> Reliability:
        scorer = self._scorer(scorer)
        singles = _singles(predictions, truth, scorer)
        self.precision = {b: s.precision for b, s in singles.items()}
        self.families, self.terms = {}, {}
        for backend, labels in predictions.items():
            self.families[backend], self.terms[backend] = self._reliabilities(backend, labels, truth, scorer)
        tallies = list(_tallies(predictions, truth, self.vocabulary).items())
        supports = [self._supports(t) for _, t in tallies]
        thresholds = _grid({s for clip in supports for s, _ in clip.values()}, self.MAX_THRESHOLDS) or [0.0]

        def run(threshold: float, share: float) -> dict[str, list[str]]:
            self.threshold, self.term_share = threshold, share
            return {c: [label.term for label in self._decide(t, s)] for (c, t), s in zip(tallies, supports)}

        choices = (((th, sh), run(th, sh)) for sh in self.TERM_SHARES for th in thresholds)
        (self.threshold, self.term_share), scores, met = _select(choices, truth, scorer, _floor(singles))
        self.report = _report(scores, singles, met)
        return self

    def _reliabilities(self, backend: str, labels: Mapping[str, Sequence[LabelLike]],
                       truth: Mapping[str, Sequence[str]], scorer: Scorer
                       ) -> tuple[dict[str, float], dict[str, float]]:
        """(family -> w_bφ, term key -> w_bt) for one backend, from the clips where it used them."""
        by_family: dict[str, dict[str, list[str]]] = {}
        by_term: dict[str, dict[str, list[str]]] = {}
        family_of: dict[str, str] = {}
        for clip in truth:
            tally = _Tally({backend: labels.get(clip, ())}, self.vocabulary)
            for key, term in tally.terms.items():
                family_of[key] = term.family
                by_term.setdefault(key, {})[clip] = list(term.surfaces)
                by_family.setdefault(term.family, {}).setdefault(clip, []).extend(term.surfaces)

        def shrunk(pred: dict[str, list[str]], prior: float, strength: float) -> float:
            n = len(pred)
            return round((n * scorer({c: truth[c] for c in pred}, pred).precision + strength * prior)
                         / (n + strength), 6)

        families = {f: shrunk(pred, self.precision[backend], self.family_strength)
                    for f, pred in sorted(by_family.items())}
        terms = {k: shrunk(pred, families[family_of[k]], self.term_strength)
                 for k, pred in sorted(by_term.items())}
        return families, terms

    def _weight(self, backend: str, key: str, family: str) -> float:
        if backend not in self.precision:  # a backend added after fitting: trusted like the average one
            return sum(self.precision.values()) / len(self.precision) if self.precision else 1.0
        return self.terms[backend].get(key, self.families[backend].get(family, self.precision[backend]))

    def _supports(self, tally: _Tally) -> _Supports:
        n = len(self.precision) or len(tally.backends) or 1
        out: _Supports = {}
        for family, keys in tally.families().items():
            voters: dict[str, float] = {}  # a backend votes once per family, with its best term there
            terms: dict[str, float] = {}
            for key in keys:
                for backend, confidence in tally.terms[key].votes.items():
                    weight = self._weight(backend, key, family) * confidence
                    voters[backend] = max(weight, voters.get(backend, 0.0))
                    terms[key] = terms.get(key, 0.0) + weight / n
            out[family] = (round(sum(voters.values()) / n, 9), terms)
        return out

    def _decide(self, tally: _Tally, supports: _Supports | None = None) -> list[FusedLabel]:
        supports = self._supports(tally) if supports is None else supports
        kept = [f for f, (s, _) in supports.items() if s >= self.threshold]
        if not kept and supports:
            kept = [max(supports, key=lambda f: supports[f][0])]
        scores: dict[str, float] = {}
        for family in kept:
            support, terms = supports[family]
            top = max(terms.values())
            scores.update({k: support * v / top if top else 0.0 for k, v in terms.items()
                           if v >= self.term_share * top})
        return self._labels(tally, scores)

    def _params(self) -> dict[str, Any]:
        return {"family_strength": self.family_strength, "term_strength": self.term_strength,
                "threshold": self.threshold, "term_share": self.term_share, "precision": self.precision,
                "families": self.families, "terms": self.terms, "report": self.report}

    def _load(self, data: Mapping[str, Any]) -> None:
        self.family_strength = float(data["family_strength"])
        self.term_strength = float(data["term_strength"])
        self.threshold, self.term_share = float(data["threshold"]), float(data["term_share"])
        self.precision = {b: float(p) for b, p in data["precision"].items()}
        self.families = {b: {f: float(w) for f, w in ws.items()} for b, ws in data["families"].items()}
        self.terms = {b: {k: float(w) for k, w in ws.items()} for b, ws in data["terms"].items()}
        self.report = dict(data.get("report", {}))


STRATEGIES: dict[str, type[Fusion]] = {s.name: s for s in (Union, Intersection, Vote, Reliability)}
