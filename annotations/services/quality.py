"""Quality figures of a project: agreement between annotators, model quality against the verified labels, and
the distribution of the verified labels. Reads only; the dashboard and `manage.py project_report` show them.

Everything is over CANONICAL terms: annotations and predictions store the word that was chosen, and each word
is resolved through the project vocabulary here (a word the vocabulary does not know stays itself, normalised,
as ml.metrics.vocabulary_scores treats it), so "glad" and "happy" are one label once the vocabulary says so.

Agreement (`agreement_units`, `agreement`, `annotator_agreement`, `family_agreement`):
- units are clips with two or more SUBMITTED annotations (a draft, or an annotation a reviewer sent back, is
  not an answer; gold answers live in their own table and never come here); n is the number of units;
- alpha is Krippendorff's alpha with MASI distance over each coder's set of canonical terms
  (ml.metrics.krippendorff_alpha_masi); jaccard is the mean over units of the mean Jaccard of the unit's
  coder pairs (each clip weighs the same, however many people coded it);
- per annotator: over the units the annotator coded, jaccard is the mean over those units of the mean
  Jaccard of the annotator's set against each other coder's set; alpha is alpha (MASI) over those units with
  every coder's set (with two coders per clip, the usual overlap, that is the annotator against the others);
- per family: each coder's set becomes "uses the family" or "does not" (a term's family from the
  vocabulary; unknown words are "unassigned"); alpha is Krippendorff's alpha with nominal distance on that
  binary value over all units; jaccard is the mean pairwise Jaccard of the coders' sets restricted to the
  family's terms, over the units where at least one coder used the family (`used`). Only families used at
  least once are listed.
No data gives None figures with n = 0, never an error.

Model quality (`model_quality`): every (backend, model version) with predictions on the selected verified
clips (test split by default: annotated blind, never trained on), fused beside the backends, scored on
exactly those clips against the verified labels (selectors.verified_labels) as the training evaluation does
(services.evaluation: the vocabulary metric at term and family level, and the official emotion wheel at
level 1 where a wheel is given), each figure with n and a 95% bootstrap interval (clips resampled). The
headline precision/recall/f are the wheel's where a wheel is given (exactly ml.metrics.wheel_scores, the
figure `python -m ml.evaluate` prints), else the vocabulary's term level.

Cost: everything streams the project in keyset chunks of CHUNK clips (values_list, no model objects); only
per-clip floats and each agreement unit's sets are kept. The costly parts on a big project are the verdict
subqueries of verified_labels over the selected clips, the per-clip scoring (a Python call per clip, model
version and level), the 1,000-resample bootstrap (ml.scoring_bootstrap bounds its memory), and alpha's expected
disagreement, quadratic in the number of DISTINCT label sets (numpy above FAST_ALPHA_ABOVE of them). Measured
on 20,000 clips (40,000 submitted annotations, 3,311 distinct sets, 4 model versions): agreement 4 s, models
7 s (21 s with the wheel), labels 0.5 s. So the dashboard stores them from a beat job.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from itertools import combinations

from ml.metrics import jaccard, krippendorff_alpha_binary, krippendorff_alpha_masi
from ml.vocabulary import UNASSIGNED, Vocabulary, normalise

from .. import selectors
from ..models import Annotation, Clip, ModelVersion, Prediction, Project
from . import evaluation
from .vocabulary import project_vocabulary

CHUNK = 2000  # clips per query
SPLITS = ("test", "all")

# One unit of agreement: a clip's coders, annotator id -> their set of canonical terms.
Unit = dict[int, frozenset[str]]


# --- canonical terms -----------------------------------------------------------------------------------------
def _word(label) -> str:
    return (label.get("term") or "") if isinstance(label, dict) else str(label or "")


def canonical_terms(labels: Iterable, vocabulary: Vocabulary) -> frozenset[str]:
    """The set of canonical terms of stored labels ({"term": word} dicts or plain words)."""
    out = set()
    for label in labels or ():
        word = _word(label)
        term = vocabulary.canonical(word) or normalise(word)
        if term:
            out.add(term)
    return frozenset(out)


def _family(term: str, vocabulary: Vocabulary) -> str:
    return vocabulary.family(term) or UNASSIGNED


# --- agreement -----------------------------------------------------------------------------------------------
def agreement_units(project: Project, vocabulary: Vocabulary | None = None, *, chunk: int = CHUNK) -> list[Unit]:
    """The project's clips with two or more submitted annotations, in clip order, each as {annotator id:
    frozenset of canonical terms}. Streams the submitted annotations in clip order."""
    vocabulary = vocabulary or project_vocabulary(project)
    rows = (Annotation.objects.filter(clip__project=project, status=Annotation.Status.SUBMITTED)
            .order_by("clip_id", "annotator_id").values_list("clip_id", "annotator_id", "labels")
            .iterator(chunk_size=chunk))
    units: list[Unit] = []
    current, unit = None, {}
    for clip_id, annotator_id, labels in rows:
        if clip_id != current:
            if len(unit) >= 2:
                units.append(unit)
            current, unit = clip_id, {}
        unit[annotator_id] = canonical_terms(labels, vocabulary)
    if len(unit) >= 2:
        units.append(unit)
    return units


def _alpha(values: Sequence[Sequence[frozenset]]) -> float | None:
    """Krippendorff's alpha with MASI distance, or None where no unit has two codings."""
    if not any(len(unit) >= 2 for unit in values):
        return None
    if len({v for unit in values for v in unit}) <= FAST_ALPHA_ABOVE:
        return krippendorff_alpha_masi(values)
    from ml.agreement import masi_alpha_vectorised  # numpy: only where a project is big enough to need it

    return masi_alpha_vectorised(values)


# ml.metrics sums alpha's expected disagreement over every pair of DISTINCT label sets in Python: 17 s for
# 5,000 clips with 1,854 distinct sets. Above this many distinct sets ml.agreement takes the same sum in numpy.
FAST_ALPHA_ABOVE = 200


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _pairwise_jaccard(sets: Sequence[frozenset]) -> float:
    pairs = list(combinations(sets, 2))
    return sum(jaccard(a, b) for a, b in pairs) / len(pairs)


def agreement(units: Sequence[Unit]) -> dict:
    """{"alpha": MASI alpha, "jaccard": mean over units of the mean pairwise Jaccard, "n": units}."""
    values = [list(unit.values()) for unit in units]
    return {"alpha": _alpha(values), "jaccard": _mean([_pairwise_jaccard(v) for v in values]), "n": len(values)}


def annotator_agreement(units: Sequence[Unit], names: Mapping[int, str] | None = None) -> list[dict]:
    """Each annotator against the others, over the units they coded: [{"annotator_id", "annotator", "alpha",
    "jaccard", "n"}], sorted by name (see the module's definition)."""
    mine: dict[int, list[Unit]] = defaultdict(list)
    for unit in units:
        for annotator_id in unit:
            mine[annotator_id].append(unit)
    out = []
    for annotator_id, coded in mine.items():
        jaccards = [_mean([jaccard(unit[annotator_id], other) for who, other in unit.items() if who != annotator_id])
                    for unit in coded]
        out.append({"annotator_id": annotator_id, "annotator": (names or {}).get(annotator_id, str(annotator_id)),
                    "alpha": _alpha([list(unit.values()) for unit in coded]), "jaccard": _mean(jaccards),
                    "n": len(coded)})
    return sorted(out, key=lambda row: (row["annotator"], row["annotator_id"]))


def family_agreement(units: Sequence[Unit], vocabulary: Vocabulary) -> list[dict]:
    """Per emotion family used in at least one unit: [{"family", "alpha", "jaccard", "n", "used"}], sorted by
    family (see the module's definition)."""
    values = sum(len(unit) for unit in units)
    # family -> per unit where someone used it: each coder's terms of that family (empty where they did not)
    used: dict[str, list[list[frozenset[str]]]] = defaultdict(list)
    for unit in units:
        grouped: dict[str, list[set[str]]] = defaultdict(lambda: [set() for _ in unit])
        for i, terms in enumerate(unit.values()):
            for term in terms:
                grouped[_family(term, vocabulary)][i].add(term)
        for family, sets in grouped.items():
            used[family].append([frozenset(t) for t in sets])
    return [{"family": family,
             "alpha": krippendorff_alpha_binary(((len(sets), sum(1 for t in sets if t)) for sets in used[family]), values),
             "jaccard": _mean([_pairwise_jaccard(sets) for sets in used[family]]), "n": len(units),
             "used": len(used[family])}
            for family in sorted(used)]


def project_agreement(project: Project, vocabulary: Vocabulary | None = None) -> dict:
    """The project's agreement: {"alpha", "jaccard", "n", "annotators": annotator_agreement(...), "families":
    family_agreement(...)}."""
    from django.contrib.auth import get_user_model

    vocabulary = vocabulary or project_vocabulary(project)
    units = agreement_units(project, vocabulary)
    ids = {annotator_id for unit in units for annotator_id in unit}
    names = dict(get_user_model().objects.filter(pk__in=ids).values_list("pk", "username"))
    return {**agreement(units), "annotators": annotator_agreement(units, names),
            "families": family_agreement(units, vocabulary)}


# --- the verified labels, in chunks --------------------------------------------------------------------------
def verified_chunks(project: Project, split: str = "test", *, chunk: int = CHUNK) -> Iterator[dict[int, list[str]]]:
    """The verified labels of the selected clips (split "test", or "all"), chunk by chunk in clip order: clip
    id -> label words (selectors.verified_labels: the one verified rule). Erased clips are gone with their
    rows; a clip whose latest review is a reject is not verified."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, not {split!r}")
    clips = project.clips.all() if split == "all" else project.clips.filter(split=split)
    ids = clips.order_by("pk").values_list("pk", flat=True)
    last = 0
    while True:
        batch = list(ids.filter(pk__gt=last)[:chunk])
        if not batch:
            return
        last = batch[-1]
        labels = selectors.verified_labels(project, Clip.objects.filter(pk__in=batch))
        if labels:
            yield dict(sorted(labels.items()))


def label_distribution(project: Project, split: str = "all", vocabulary: Vocabulary | None = None) -> dict:
    """Verified labels by canonical term and by family: {"clips": verified clips, "families": {family: n},
    "terms": {term: n}}, each sorted by count (then name). A term counts once per clip; a family's count is
    the sum of its terms' counts."""
    vocabulary = vocabulary or project_vocabulary(project)
    terms: Counter[str] = Counter()
    clips = 0
    for labels in verified_chunks(project, split):
        clips += len(labels)
        for words in labels.values():
            terms.update(canonical_terms(words, vocabulary))
    families: Counter[str] = Counter()
    for term, n in terms.items():
        families[_family(term, vocabulary)] += n

    def ordered(counts: Counter) -> dict[str, int]:
        return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))

    return {"clips": clips, "families": ordered(families), "terms": ordered(terms)}


# --- model quality -------------------------------------------------------------------------------------------
def _terms(labels) -> list[str]:
    return [word for word in map(_word, labels or ()) if word]


def model_quality(project: Project, *, split: str = "test", wheel=None, vocabulary: Vocabulary | None = None,
                  chunk: int = CHUNK) -> list[dict]:
    """One entry per (backend, model version) with predictions on the selected verified clips, sorted by time:
    {"backend", "model_version", "clips": n, "precision", "recall", "f", "ci": {"precision"|"recall"|"f":
    [lo, hi]}, "metric": "wheel" | "vocabulary", "vocabulary": {"term": figures, "family": figures},
    "wheel": figures (with a wheel only), "registered_at", "first_prediction_at", "at"}, a figures being
    {"precision", "recall", "f", "n", "ci"}. `at` is the ModelVersion's registration time where the
    predictions name their model, else the version's first prediction on these clips: the time axis."""
    import numpy as np

    from ml.scoring_bootstrap import score_interval, vocabulary_pairs, wheel_pairs

    vocabulary = vocabulary or project_vocabulary(project)
    # Per (backend, version): per-clip (precision, recall) arrays appended chunk by chunk, so that only floats
    # are kept, never the labels of every clip.
    pairs: dict[tuple[str, str], dict[str, list]] = defaultdict(lambda: defaultdict(list))
    first: dict[tuple[str, str], datetime] = {}
    models: dict[tuple[str, str], set[int]] = defaultdict(set)
    for gold in verified_chunks(project, split, chunk=chunk):
        predicted: dict[tuple[str, str], dict[str, list[str]]] = defaultdict(dict)
        rows = (Prediction.objects.filter(clip_id__in=list(gold))
                .values_list("clip_id", "backend", "model_version", "model_id", "labels", "created_at"))
        for clip_id, backend, version, model_id, labels, created_at in rows:
            key = (backend, version)
            predicted[key][str(clip_id)] = _terms(labels)
            if key not in first or created_at < first[key]:
                first[key] = created_at
            if model_id is not None:
                models[key].add(model_id)
        truth = {str(clip_id): words for clip_id, words in gold.items()}
        for key, labels in predicted.items():
            names = [name for name in truth if name in labels]  # clip order: the bootstrap's draw depends on it
            for level in evaluation.LEVELS:
                p, r = vocabulary_pairs(truth, labels, vocabulary, level=level, names=names)
                pairs[key][level].append((p, r))
            if wheel is not None:
                pairs[key]["wheel"].append(wheel_pairs(truth, labels, wheel, evaluation.WHEEL_LEVEL, names=names))
    registered = dict(ModelVersion.objects.filter(pk__in={pk for ids in models.values() for pk in ids})
                      .values_list("pk", "created_at"))
    out = []
    for key, scored in pairs.items():
        def interval(name):
            p = np.concatenate([chunk_p for chunk_p, _ in scored[name]])
            r = np.concatenate([chunk_r for _, chunk_r in scored[name]])
            return score_interval(p, r, resamples=evaluation.RESAMPLES, seed=evaluation.SEED,
                                  confidence=evaluation.CONFIDENCE)

        vocabulary_figures = {level: interval(level) for level in evaluation.LEVELS}
        wheel_figures = interval("wheel") if wheel is not None else None
        headline = wheel_figures or vocabulary_figures[evaluation.PRIMARY_LEVEL]
        times = [registered[pk] for pk in models.get(key, ()) if pk in registered]
        entry = {"backend": key[0], "model_version": key[1], "clips": headline["n"],
                 "precision": headline["precision"], "recall": headline["recall"], "f": headline["f"],
                 "ci": headline["ci"], "metric": "wheel" if wheel is not None else "vocabulary",
                 "vocabulary": vocabulary_figures, **({"wheel": wheel_figures} if wheel is not None else {}),
                 "registered_at": min(times) if times else None, "first_prediction_at": first[key]}
        entry["at"] = entry["registered_at"] or entry["first_prediction_at"]
        out.append(entry)
    return sorted(out, key=lambda e: (e["at"], e["backend"], e["model_version"]))


# --- everything, for the report and the dashboard ------------------------------------------------------------
def _jsonable(value):
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def project_report(project: Project, *, split: str = "test", wheel=None) -> dict:
    """Every figure above as one JSON-ready object (times as ISO strings): {"project", "split",
    "vocabulary_version", "metric", "models": model_quality(...), "agreement": project_agreement(...),
    "labels": {family: n}, "terms": {term: n}, "verified_clips": n}. `split` selects the clips the models are
    scored on; agreement and the label distribution are over the whole project."""
    vocabulary = project_vocabulary(project)
    distribution = label_distribution(project, "all", vocabulary)
    return _jsonable({
        "project": project.slug, "split": split, "vocabulary_version": project.vocabulary_version,
        "metric": (f"emotion wheel, level {evaluation.WHEEL_LEVEL}, mean over wheels" if wheel is not None
                   else f"project vocabulary, {evaluation.PRIMARY_LEVEL} level"),
        "models": model_quality(project, split=split, wheel=wheel, vocabulary=vocabulary),
        "agreement": project_agreement(project, vocabulary),
        "labels": distribution["families"], "terms": distribution["terms"],
        "verified_clips": distribution["clips"],
    })
