"""Vocabulary governance for managers: merge, rename, approve or refuse proposed terms, split, near-duplicate
suggestions, and the vocabulary as CSV.

Human labels are never rewritten (services.vocabulary): annotations, reviews and predictions keep the word that
was chosen and resolve its canonical term and family when read. So every edit here changes EmotionTerm rows
only, inside one transaction that also records an audit event and bumps `Project.vocabulary_version`
(vocabulary._bump, which queues the clip index rebuild once committed).

Every edit has a preview: the vocabulary after the edit is built in memory (an `ml.vocabulary.Vocabulary`),
the surface forms whose resolution (canonical term, family) differs are collected, and the stored labels
that use one of them are counted, per source: submitted annotation labels, verified labels, and prediction
labels of every backend. The database narrows the rows with a substring test before Python checks each
label exactly, so a preview reads only the rows that mention one of the changed words.

A split cannot relabel old annotations: "anxious" written before the split may have meant either new term.
It adds the new terms (optionally moving some of the old term's variants to them) and records, in its audit
event, the words that resolved to the old term; `split_review` lists the clips whose human labels use one of
those words, for people to reassign (or to send to review with services.queue.send_to_review).

Suggestions are for a human to confirm, never applied: shared stem or a small edit distance, annotators of the
same clip using one term where the other used another, and the official emotion wheels where a wheel folder is
configured. A pair of opposite valence (positive and negative) is never suggested, and never merged.
"""

from __future__ import annotations

import csv
import io
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from django.db import transaction
from django.db.models import Count, Q, TextField
from django.db.models.functions import Cast
from rapidfuzz.distance import Levenshtein

from ml.vocabulary import FAMILIES, UNASSIGNED, VALENCES, Vocabulary, VocabularyError, normalise

from ..models import (
    Annotation,
    AuditEvent,
    Clip,
    DismissedSuggestion,
    EmotionTerm,
    Prediction,
    Project,
    Review,
)
from . import audit
from .vocabulary import VocabularyChangeError, _bump, approve_term, project_vocabulary

MAX_TERM = 64  # EmotionTerm.term's max_length
OPPOSITE = {frozenset({"positive", "negative"})}
SOURCES = ("annotations", "verified", "predictions")
CSV_COLUMNS = ["term", "kind", "canonical", "family", "valence", "source", "flagged"]
CSV_MAX_BYTES = 5_000_000
CSV_MAX_ERRORS = 50
REVIEW_LIST_LIMIT = 1000
COOCCURRENCE_CLIPS = 20_000  # the most recent clips with two or more submissions that suggestions read


class GovernanceError(VocabularyChangeError):
    """A vocabulary edit that cannot be made as asked; the message is safe to show and names the fix."""


class ImportErrors(GovernanceError):
    """A CSV that does not validate: `errors` lists every problem found, each with its line number."""

    def __init__(self, errors: list[str]):
        self.errors = errors
        super().__init__(f"{len(errors)} problem{'' if len(errors) == 1 else 's'} in the file; nothing was "
                         f"imported: " + "; ".join(errors[:5]) + (" …" if len(errors) > 5 else ""))


# --- impact --------------------------------------------------------------------------------------------------
@dataclass
class Impact:
    """What an edit changes: stored labels whose resolved canonical term or family differs, per source."""

    words: list[str]  # normalised surface forms whose resolution changes
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SOURCES, 0))

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def summary(self) -> dict:
        return {f"{source}_changed": n for source, n in self.counts.items()}

    def describe(self) -> str:
        c = self.counts
        return (f"{c['annotations']} annotation label{_s(c['annotations'])}, {c['verified']} verified "
                f"label{_s(c['verified'])} and {c['predictions']} prediction label{_s(c['predictions'])} "
                f"resolve differently")


def _s(n: int) -> str:
    return "" if n == 1 else "s"


def _resolution(vocab: Vocabulary, word: str) -> tuple:
    term = vocab.lookup(word)
    return (term.term, term.family) if term else (None, None)


def changed_words(old: Vocabulary, new: Vocabulary) -> set[str]:
    """The normalised surface forms that resolve to another canonical term or family in `new`."""
    forms = {normalise(f) for f, _ in old.surface_forms()} | {normalise(f) for f, _ in new.surface_forms()}
    return {w for w in forms if _resolution(old, w) != _resolution(new, w)}


def _mentioning(queryset, column: str, words: Iterable[str]):
    """Rows whose JSON `column` may hold one of the words: every spelling that normalises to a word contains
    its first token (normalise only lowercases and folds separators), so a case-insensitive substring test on
    the JSON text is a safe narrowing; Python checks each label exactly afterwards. Not for non-ASCII words
    (SQLite stores JSON with \\u escapes) nor for quotes and backslashes (escaped in JSON text)."""
    tokens = {w.split(" ")[0] for w in words}
    if not tokens or any(not t.isascii() or '"' in t or "\\" in t for t in tokens):
        return queryset
    text = f"{column}_text"
    query = Q()
    for token in sorted(tokens):
        query |= Q(**{f"{text}__icontains": token})
    return queryset.annotate(**{text: Cast(column, TextField())}).filter(query)


def _words_of(labels) -> Iterator[str]:
    for lab in labels or []:
        word = lab.get("term") if isinstance(lab, dict) else lab
        if isinstance(word, str) and word.strip():
            yield normalise(word)


def labels_using(project: Project, words: set[str], sources: Iterable[str] = SOURCES
                 ) -> Iterator[tuple[str, int, str]]:
    """(source, clip id, word) for every stored label whose normalised word is one of `words`, from `sources`:
    submitted annotations, verified labels (the accepted annotation's or the reviewer's fix), predictions
    (every backend)."""
    from .. import selectors

    if not words:
        return
    annotations = _mentioning(Annotation.objects.filter(clip__project=project, status=Annotation.Status.SUBMITTED),
                              "labels", words)
    verified_clips = set()
    for clip_id, labels in annotations.values_list("clip_id", "labels").iterator(chunk_size=2000):
        hits = [w for w in _words_of(labels) if w in words]
        if "annotations" in sources:
            for word in hits:
                yield "annotations", clip_id, word
        if hits:
            verified_clips.add(clip_id)
    if "verified" not in sources:
        verified_clips = set()
    else:
        fixes = _mentioning(Review.objects.filter(annotation__clip__project=project, decision=Review.Decision.FIX),
                            "fixed_labels", words)
        verified_clips.update(fixes.values_list("annotation__clip_id", flat=True))
    ids = sorted(verified_clips)
    for start in range(0, len(ids), 2000):
        chunk = Clip.objects.filter(project=project, pk__in=ids[start:start + 2000])
        for clip_id, labels in selectors.verified_labels(project, chunk).items():
            for word in _words_of(labels):
                if word in words:
                    yield "verified", clip_id, word
    if "predictions" not in sources:
        return
    predictions = _mentioning(Prediction.objects.filter(clip__project=project), "labels", words)
    for clip_id, labels in predictions.values_list("clip_id", "labels").iterator(chunk_size=2000):
        for word in _words_of(labels):
            if word in words:
                yield "predictions", clip_id, word


def impact(project: Project, new: Vocabulary, old: Vocabulary | None = None) -> Impact:
    """How many stored labels resolve differently under `new` than under the project's vocabulary now."""
    words = changed_words(old or project_vocabulary(project), new)
    result = Impact(words=sorted(words))
    for source, _, _ in labels_using(project, words):
        result.counts[source] += 1
    return result


# --- the edits, each as a change of records (for the preview) and of rows (to apply) -----------------------------
def _records(project: Project) -> dict[str, dict]:
    return {r["term"]: r for r in project_vocabulary(project).to_records()}


def _vocab(records: dict[str, dict]) -> Vocabulary:
    try:
        return Vocabulary.from_records(records.values())
    except VocabularyError as exc:
        raise GovernanceError(f"the vocabulary would not be consistent: {exc}") from None


def _term_row(project: Project, word: str, what: str = "term") -> EmotionTerm:
    word = normalise(word or "")
    if not word:
        raise GovernanceError(f"name the {what}")
    row = EmotionTerm.objects.filter(project=project, term=word).select_related("canonical").first()
    if row is None:
        # Stored terms keep their hyphens ("light-hearted"): find a row through the vocabulary's lookup.
        known = project_vocabulary(project).lookup(word)
        if known is not None and normalise(known.term) == word:
            row = EmotionTerm.objects.filter(project=project, term=known.term).first()
    if row is None:
        raise GovernanceError(f"{word!r} is not in this project's vocabulary")
    if row.kind != EmotionTerm.Kind.TERM:
        raise GovernanceError(f"{row.term!r} is a {row.get_kind_display().lower()} of {row.canonical.term!r}, "
                              f"not a canonical term: choose {row.canonical.term!r}")
    return row


def _lock(project: Project) -> None:
    """One vocabulary edit at a time per project, checked against the vocabulary as it is now: the row lock
    waits for an edit in flight, and the version read under it keys project_vocabulary's cache."""
    locked = Project.objects.select_for_update().only("vocabulary_version").get(pk=project.pk)
    project.vocabulary_version = locked.vocabulary_version


def _check_valences(a: str, b: str, source: str, target: str) -> None:
    if frozenset({a, b}) in OPPOSITE:
        raise GovernanceError(f"{source!r} is {a} and {target!r} is {b}: terms of opposite valence are never "
                              f"merged (if one valence is wrong, correct it first through the CSV import)")


@dataclass
class Plan:
    """An edit checked and previewed, ready to apply."""

    action: str
    description: str
    impact: Impact
    params: dict


def plan_merge(project: Project, source: str, target: str) -> Plan:
    """Merge `source` into `target`: the source and its variants become variants of the target."""
    src, tgt = _term_row(project, source, "term to merge"), _term_row(project, target, "term to merge into")
    if src.pk == tgt.pk:
        raise GovernanceError("a term cannot be merged into itself")
    if tgt.flagged:
        raise GovernanceError(f"{tgt.term!r} is a proposed term: approve it first, or merge it into another")
    _check_valences(src.valence, tgt.valence, src.term, tgt.term)
    records = _records(project)
    moved = records.pop(src.term)
    target_record = records[tgt.term]
    target_record["synonyms"] = [*target_record["synonyms"], src.term, *moved["synonyms"]]
    target_record["word_forms"] = [*target_record["word_forms"], *moved["word_forms"]]
    return Plan("merge", f"Merge {src.term!r} into {tgt.term!r}", impact(project, _vocab(records)),
                {"source": src.term, "target": tgt.term})


def plan_rename(project: Project, term: str, new_name: str) -> Plan:
    """Rename a canonical term. The old name stays as a synonym, so the words stored with it still resolve."""
    row = _term_row(project, term)
    new = " ".join((new_name or "").strip().lower().split())
    if not new:
        raise GovernanceError("give the new name")
    if len(new) > MAX_TERM:
        raise GovernanceError(f"a term has at most {MAX_TERM} characters")
    if new == row.term:
        raise GovernanceError(f"{row.term!r} already has that name")
    known = project_vocabulary(project).lookup(new)
    if known is not None and known.term != row.term:
        raise GovernanceError(f"{new!r} already resolves to {known.term!r}: merge the two terms instead")
    records = _records(project)
    record = records.pop(row.term)
    kind = "synonyms"
    if known is not None:  # the new name is one of the term's own variants: the two swap places
        kind = "word_forms" if new in record["word_forms"] else "synonyms"
        record[kind] = [w for w in record[kind] if normalise(w) != normalise(new)]
    record[kind] = [*record[kind], row.term]
    records[new] = {**record, "term": new}
    return Plan("rename", f"Rename {row.term!r} to {new!r}", impact(project, _vocab(records)),
                {"term": row.term, "new_name": new})


def _proposed(project: Project, term: str) -> EmotionTerm:
    row = _term_row(project, term, "proposed term")
    if not row.flagged:
        raise GovernanceError(f"{row.term!r} is not a proposed term waiting for a decision")
    return row


def plan_approve(project: Project, term: str, family: str, valence: str) -> Plan:
    row = _proposed(project, term)
    if family not in FAMILIES or family == UNASSIGNED:
        raise GovernanceError(f"choose a family for {row.term!r}")
    if valence not in VALENCES:
        raise GovernanceError(f"choose a valence for {row.term!r}")
    records = _records(project)
    records[row.term] = {**records[row.term], "family": family, "valence": valence}
    return Plan("approve", f"Approve {row.term!r} in the family {family} ({valence})",
                impact(project, _vocab(records)), {"term": row.term, "family": family, "valence": valence})


def plan_refuse(project: Project, term: str) -> Plan:
    """Refuse a proposed term: its row goes; the labels that used the word keep it, now unknown. (Merging it
    into an existing term is the other way to settle a proposal.)"""
    row = _proposed(project, term)
    records = _records(project)
    records.pop(row.term)
    return Plan("refuse", f"Refuse the proposed term {row.term!r}", impact(project, _vocab(records)),
                {"term": row.term})


def _new_term(name: str, family: str, valence: str) -> tuple[str, str, str]:
    name = " ".join((name or "").strip().lower().split())
    if not name:
        raise GovernanceError("each new term needs a name")
    if len(name) > MAX_TERM:
        raise GovernanceError(f"{name[:20]!r}…: a term has at most {MAX_TERM} characters")
    if family not in FAMILIES or family == UNASSIGNED:
        raise GovernanceError(f"choose a family for {name!r}")
    if valence not in VALENCES:
        raise GovernanceError(f"choose a valence for {name!r}")
    return name, family, valence


def plan_split(project: Project, term: str, new_terms: list[dict], moves: dict[str, str] | None = None) -> Plan:
    """Split `term`: add `new_terms` ([{"term", "family", "valence"}]) beside it and move the variants named in
    `moves` ({variant: new term}) to them. Old labels are not relabelled: the split's review list names them."""
    row = _term_row(project, term)
    if not new_terms:
        raise GovernanceError("name at least one new term to split off")
    vocab = project_vocabulary(project)
    records = _records(project)
    record = records[row.term]
    own = {normalise(w) for w in (*record["word_forms"], *record["synonyms"])}
    moves = {normalise(k): " ".join(v.strip().lower().split()) for k, v in (moves or {}).items()}
    created = []
    for spec in new_terms:
        name, family, valence = _new_term(spec.get("term", ""), spec.get("family", ""), spec.get("valence", ""))
        known = vocab.lookup(name)
        if name in created:
            raise GovernanceError(f"{name!r} is named twice")
        if known is not None:
            if known.term != row.term or normalise(name) not in own:
                raise GovernanceError(f"{name!r} is already in the vocabulary (it resolves to {known.term!r})")
            moves[normalise(name)] = name  # one of the term's own variants becomes a term of its own
        records[name] = {"term": name, "family": family, "valence": valence, "synonyms": [], "word_forms": []}
        created.append(name)
    for variant, destination in moves.items():
        if destination not in created:
            raise GovernanceError(f"{destination!r} is not one of the new terms")
        for kind in ("word_forms", "synonyms"):
            kept = [w for w in record[kind] if normalise(w) != variant]
            if len(kept) != len(record[kind]):
                record[kind] = kept
                if variant != destination:
                    records[destination][kind] = [*records[destination][kind], variant]
                break
        else:
            raise GovernanceError(f"{variant!r} is not a word form or synonym of {row.term!r}")
    words = sorted(normalise(f) for f in vocab.lookup(row.term).surface_forms)
    return Plan("split", f"Split {', '.join(created)} off {row.term!r}", impact(project, _vocab(records)),
                {"term": row.term, "new_terms": [{"term": n, "family": records[n]["family"],
                                                  "valence": records[n]["valence"]} for n in created],
                 "moves": moves,
                 "words": words})


PLANNERS = {"merge": plan_merge, "rename": plan_rename, "approve": plan_approve, "refuse": plan_refuse,
            "split": plan_split}


def apply(project: Project, plan: Plan, *, actor=None) -> AuditEvent:
    """Make a planned edit: rows only, one audit event (with the preview's counts), the version bumped.
    The plan is made again under the project's lock, so a change made since the preview is seen."""
    with transaction.atomic():
        _lock(project)
        plan = _replan(project, plan)
        return _APPLY[plan.action](project, plan, actor)


def _replan(project: Project, plan: Plan) -> Plan:
    params = dict(plan.params)
    params.pop("words", None)
    return PLANNERS[plan.action](project, **params)


def _changes(plan: Plan, **extra) -> dict:
    return {**extra, **plan.impact.summary()}


def _apply_merge(project, plan, actor) -> AuditEvent:
    src = EmotionTerm.objects.get(project=project, term=plan.params["source"])
    tgt = EmotionTerm.objects.get(project=project, term=plan.params["target"])
    moved = EmotionTerm.objects.filter(canonical=src).update(canonical=tgt)
    EmotionTerm.objects.filter(pk=src.pk).update(kind=EmotionTerm.Kind.SYNONYM, canonical=tgt, family="",
                                                 valence="", flagged=False)
    event = audit.record("vocabulary.merged", src, actor=actor, project=project,
                         changes=_changes(plan, term=src.term, into=tgt.term, variants_moved=moved))
    _bump(project, terms=[src.term])
    return event


def _apply_rename(project, plan, actor) -> AuditEvent:
    old, new = plan.params["term"], plan.params["new_name"]
    row = EmotionTerm.objects.get(project=project, term=old)
    own = EmotionTerm.objects.filter(canonical=row).filter(term=new).first()
    if own is None:  # "light-hearted" for "light hearted": the stored spelling differs
        own = next((v for v in EmotionTerm.objects.filter(canonical=row) if normalise(v.term) == normalise(new)),
                   None)
    kind = own.kind if own is not None else EmotionTerm.Kind.SYNONYM
    if own is not None:
        own.delete()
    EmotionTerm.objects.filter(pk=row.pk).update(term=new)
    EmotionTerm.objects.create(project=project, term=old, kind=kind, canonical_id=row.pk, source=row.source)
    event = audit.record("vocabulary.renamed", row, actor=actor, project=project,
                         changes=_changes(plan, term=old, to=new))
    _bump(project, terms=[old, new])
    return event


def _apply_approve(project, plan, actor) -> AuditEvent:
    row = EmotionTerm.objects.get(project=project, term=plan.params["term"])
    row.project = project  # so the caller's project sees the bumped version
    approve_term(row, family=plan.params["family"], valence=plan.params["valence"], actor=actor)
    return AuditEvent.objects.filter(project=project, action="vocabulary.approved",
                                     object_id=str(row.pk)).order_by("-pk").first()


def _apply_refuse(project, plan, actor) -> AuditEvent:
    row = EmotionTerm.objects.get(project=project, term=plan.params["term"])
    variants = list(EmotionTerm.objects.filter(canonical=row).values_list("term", flat=True))
    event = audit.record("vocabulary.refused", row, actor=actor, project=project,
                         changes=_changes(plan, term=row.term, variants_removed=len(variants)))
    row.delete()  # its variants (if a manager gave it any) go with it
    _bump(project, terms=[row.term, *variants])
    return event


def _apply_split(project, plan, actor) -> AuditEvent:
    row = EmotionTerm.objects.get(project=project, term=plan.params["term"])
    variants = {normalise(v.term): v for v in EmotionTerm.objects.filter(canonical=row)}
    created = {}
    for spec in plan.params["new_terms"]:
        promoted = variants.pop(normalise(spec["term"]), None) if plan.params["moves"].get(
            normalise(spec["term"])) == spec["term"] else None
        if promoted is not None:  # the variant's row becomes the new term (same spelling, same row)
            EmotionTerm.objects.filter(pk=promoted.pk).update(kind="term", canonical=None, family=spec["family"],
                                                              valence=spec["valence"], flagged=False)
            created[spec["term"]] = promoted
        else:
            created[spec["term"]] = EmotionTerm.objects.create(project=project, term=spec["term"], kind="term",
                                                               family=spec["family"], valence=spec["valence"],
                                                               source="human")
    for variant, destination in plan.params["moves"].items():
        if variant in variants:
            EmotionTerm.objects.filter(pk=variants[variant].pk).update(canonical=created[destination])
    event = audit.record("vocabulary.split", row, actor=actor, project=project,
                         changes=_changes(plan, term=row.term, into=sorted(created), moves=plan.params["moves"],
                                          words=plan.params["words"]))
    _bump(project, terms=[row.term])
    return event


_APPLY = {"merge": _apply_merge, "rename": _apply_rename, "approve": _apply_approve, "refuse": _apply_refuse,
          "split": _apply_split}


# --- the split's review list ------------------------------------------------------------------------------------
@dataclass
class ReviewEntry:
    clip_id: int
    clip_name: str
    words: list[str]
    annotations: int  # submitted annotations on the clip that use one of the words
    verified: bool  # the clip's verified labels use one of the words
    label_state: str


def split_event(project: Project, event_id: int) -> AuditEvent:
    event = AuditEvent.objects.filter(project=project, action="vocabulary.split", pk=event_id).first()
    if event is None or not isinstance(event.changes.get("words"), list):
        raise GovernanceError("no such split in this project")
    return event


def splits(project: Project, limit: int = 20) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(project=project, action="vocabulary.split").order_by("-pk")[:limit])


def split_review(project: Project, event: AuditEvent, limit: int = REVIEW_LIST_LIMIT) -> tuple[list[ReviewEntry], int]:
    """The clips whose human labels (submitted annotations or verified labels) use a word that resolved to the
    split term, with those words: (the first `limit` entries by clip id, how many clips in all)."""
    words = {normalise(w) for w in event.changes.get("words", [])}
    found: dict[int, dict] = defaultdict(lambda: {"words": set(), "annotations": 0, "verified": False})
    for source, clip_id, word in labels_using(project, words, ("annotations", "verified")):
        entry = found[clip_id]
        entry["words"].add(word)
        if source == "annotations":
            entry["annotations"] += 1
        else:
            entry["verified"] = True
    ids = sorted(found)[:limit]
    clips = {c.pk: c for c in Clip.objects.filter(project=project, pk__in=ids).only("pk", "name", "label_state")}
    entries = [ReviewEntry(clip_id=i, clip_name=clips[i].name, words=sorted(found[i]["words"]),
                           annotations=found[i]["annotations"], verified=found[i]["verified"],
                           label_state=clips[i].label_state) for i in ids if i in clips]
    return entries, len(found)


def split_review_clips(project: Project, event: AuditEvent):
    """Every clip of the split's review list, as a queryset (for services.queue.send_to_review)."""
    words = {normalise(w) for w in event.changes.get("words", [])}
    ids = {clip_id for _, clip_id, _ in labels_using(project, words, ("annotations", "verified"))}
    return Clip.objects.filter(project=project, pk__in=ids)


# --- suggestions --------------------------------------------------------------------------------------------------
@dataclass
class Suggestion:
    source: str  # the term to merge…
    target: str  # …into this one
    reasons: list[str]
    score: float


_SUFFIXES = sorted(["iousness", "ousness", "fulness", "lessness", "ness", "ities", "ity", "iety", "ety", "ious",
                    "ous", "ment", "ments", "ful", "fully", "ly", "ily", "ed", "ied", "ing", "ies", "es", "s",
                    "ive", "ion", "ions", "tion", "al", "ic", "y", "e"], key=len, reverse=True)


def stem(word: str) -> str:
    """A crude stem for matching word forms: "anxious", "anxiety" and "anxiousness" all give "anxi"."""
    word = normalise(word)
    while True:
        suffix = next((x for x in _SUFFIXES if word.endswith(x) and len(word) - len(x) >= 4), None)
        if suffix is None:
            return word
        word = word[: -len(suffix)]


def _typo(a: str, b: str) -> bool:
    shortest = min(len(a), len(b))
    # Levenshtein with a cutoff: anything over 2 edits is never a typo, so rapidfuzz may stop there.
    return shortest >= 5 and Levenshtein.distance(a, b, score_cutoff=2) <= (1 if shortest < 8 else 2)


def suggestions(project: Project, *, wheel=None, limit: int = 100, min_clips: int = 2) -> list[Suggestion]:
    """Near-duplicate canonical terms for a manager to confirm, strongest evidence first. `wheel` is an
    ml.metrics.EmotionWheel (the views load it from the configured folder) or None."""
    vocab = project_vocabulary(project)
    terms = {t.term: t for t in vocab.terms()}
    rows = dict(EmotionTerm.objects.filter(project=project, kind="term").values_list("term", "source"))
    reasons: dict[frozenset, list[str]] = defaultdict(list)
    scores: Counter = Counter()

    # Spelling and morphology: a term that is not from the seed vocabulary (proposed, imported, renamed) against
    # every surface form of the others. Seed terms against each other were settled when the seed was written.
    forms = [(normalise(f), t.term) for f, t in vocab.surface_forms()]
    by_stem: dict[str, set[str]] = defaultdict(set)
    for form, term in forms:
        by_stem[stem(form)].add(term)
    fresh = {t for t in terms if rows.get(t, "seed") != "seed"}
    by_initial: dict[str, list[tuple[str, str]]] = defaultdict(list)  # a typo rarely changes the first letter
    for form, term in forms:
        by_initial[form[:1]].append((form, term))
    for term in sorted(fresh):
        own = {normalise(f) for f in terms[term].surface_forms}
        for form in own:
            for other in by_stem.get(stem(form), ()):
                if other != term:
                    reasons[frozenset({term, other})].append(f"same stem as {form!r}")
                    scores[frozenset({term, other})] += 3
            for other_form, other in by_initial[form[:1]]:
                if other != term and _typo(form, other_form):
                    reasons[frozenset({term, other})].append(f"{form!r} is spelled like {other_form!r}")
                    scores[frozenset({term, other})] += 3

    # Co-occurrence across annotators: on clips with two or more submissions, one annotator used X where
    # another used Y (and neither used both), more often than chance would have it.
    for pair, (together, apart) in _cooccurrence(project, vocab).items():
        if together >= min_clips:
            a, b = sorted(pair)
            reasons[pair].append(f"annotators of the same clip chose {a!r} or {b!r} on {together} clip"
                                 f"{_s(together)} (both together on {apart})")
            scores[pair] += together / (1 + apart)

    # The emotion wheels: a term added after the seed is, by the wheels' word forms and synonyms, one of another
    # term's words ("abashed" reaches the wheel word "embarrassed"). Seed terms against each other are left out:
    # the seed keeps graded neighbours (angry, furious) apart on purpose, and the wheels would join hundreds.
    if wheel is not None:
        owner = dict(forms)
        for term in sorted(fresh):
            for form in sorted({normalise(f) for f in terms[term].surface_forms}):
                for word in wheel.candidates(form):
                    other = owner.get(normalise(word))
                    if other is not None and other != term:
                        reasons[frozenset({term, other})].append(f"the emotion wheels read {form!r} as {word!r}")
                        scores[frozenset({term, other})] += 2

    gone = {frozenset(pair) for pair in DismissedSuggestion.objects.filter(project=project)
            .values_list("term_a", "term_b")}
    out = []
    for pair, why in reasons.items():
        a, b = sorted(pair)
        if pair in gone:
            continue  # a manager said these are not the same
        if a not in terms or b not in terms or frozenset({terms[a].valence, terms[b].valence}) in OPPOSITE:
            continue  # never suggest joining opposite valences (antonyms share stems and clips: hope/hopeless)
        source, target = _direction(terms[a], terms[b], rows)
        out.append(Suggestion(source=source, target=target, reasons=sorted(set(why)), score=round(scores[pair], 3)))
    out.sort(key=lambda s: (-s.score, s.source, s.target))
    return out[:limit]


def dismiss(project: Project, first: str, second: str, *, actor=None) -> DismissedSuggestion:
    """A manager judged two suggested terms distinct: the pair is not suggested again (until `restore`).
    Both must be canonical terms of the project. Audited once; dismissing again returns the same row."""
    vocab = project_vocabulary(project)
    names = []
    for word in (first, second):
        term = vocab.lookup(word or "")
        if term is None or normalise(term.term) != normalise(word):
            raise GovernanceError(f"{word!r} is not a term of this project's vocabulary.")
        names.append(term.term)
    a, b = sorted(names)
    if a == b:
        raise GovernanceError("A term cannot be dismissed against itself.")
    with transaction.atomic():
        by = actor if getattr(actor, "pk", None) else None
        row, created = DismissedSuggestion.objects.get_or_create(project=project, term_a=a, term_b=b,
                                                                 defaults={"dismissed_by": by})
        if created:
            audit.record("vocabulary.suggestion_dismissed", row, actor=actor, project=project,
                         changes={"terms": [a, b]})
    return row


def restore(project: Project, dismissal_id: int, *, actor=None) -> bool:
    """Suggest a dismissed pair again (when its evidence has it). False when there is no such dismissal."""
    with transaction.atomic():
        row = DismissedSuggestion.objects.select_for_update().filter(project=project, pk=dismissal_id).first()
        if row is None:
            return False
        audit.record("vocabulary.suggestion_restored", row, actor=actor, project=project,
                     changes={"terms": [row.term_a, row.term_b]})
        row.delete()
    return True


def dismissed(project: Project):
    return DismissedSuggestion.objects.filter(project=project).select_related("dismissed_by")


def _direction(a, b, rows) -> tuple[str, str]:
    """Merge the proposed (unassigned) or non-seed term into the other; else the longer name into the shorter."""
    def rank(t):
        return (t.family == UNASSIGNED, rows.get(t.term, "seed") != "seed", len(t.term), t.term)
    first, second = sorted((a, b), key=rank)
    return second.term, first.term


def _cooccurrence(project: Project, vocab: Vocabulary) -> dict[frozenset, tuple[int, int]]:
    """{pair of canonical terms: (clips where two annotators split between them, clips where one annotator
    used both)} over the most recent COOCCURRENCE_CLIPS clips with two or more submissions."""
    clip_ids = list(Annotation.objects.filter(clip__project=project, status=Annotation.Status.SUBMITTED)
                    .values("clip_id").annotate(n=Count("id")).filter(n__gte=2)
                    .order_by("-clip_id").values_list("clip_id", flat=True)[:COOCCURRENCE_CLIPS])
    by_clip: dict[int, list[set[str]]] = defaultdict(list)
    for start in range(0, len(clip_ids), 2000):
        for clip_id, labels in (Annotation.objects.filter(clip_id__in=clip_ids[start:start + 2000],
                                                          status=Annotation.Status.SUBMITTED)
                                .values_list("clip_id", "labels")):
            by_clip[clip_id].append({vocab.canonical(w) or w for w in _words_of(labels)})
    split, both = Counter(), Counter()
    for sets in by_clip.values():
        seen_split, seen_both = set(), set()
        for i, first in enumerate(sets):
            for x in first:
                for y in first:
                    if x < y:
                        seen_both.add(frozenset({x, y}))
            for second in sets[i + 1:]:
                for x in first - second:
                    for y in second - first:
                        if x != y:
                            seen_split.add(frozenset({x, y}))
        split.update(seen_split)
        both.update(seen_both)
    return {pair: (n, both[pair]) for pair, n in split.items()}


# --- CSV -----------------------------------------------------------------------------------------------------------
def export_csv(project: Project) -> str:
    """The vocabulary as CSV: every canonical term, then its variants, alphabetically."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    rows = list(EmotionTerm.objects.filter(project=project).select_related("canonical")
                .order_by("term"))
    terms = [r for r in rows if r.kind == EmotionTerm.Kind.TERM]
    variants = defaultdict(list)
    for r in rows:
        if r.kind != EmotionTerm.Kind.TERM:
            variants[r.canonical_id].append(r)
    for t in terms:
        writer.writerow([_cell(t.term), t.kind, "", t.family, t.valence, _cell(t.source),
                         "true" if t.flagged else "false"])
        for v in variants[t.pk]:
            writer.writerow([_cell(v.term), v.kind, _cell(t.term), "", "", _cell(v.source), "false"])
    return out.getvalue()


_FORMULA = ("=", "+", "@", "-", "\t", "\r")


def _cell(text: str) -> str:
    """A proposed term is annotators' text: a leading ' keeps a spreadsheet from running it as a formula.
    The import takes the ' off again."""
    return f"'{text}" if text.startswith(_FORMULA) else text


def _uncell(text: str) -> str:
    return text[1:] if text.startswith("'") and text[1:].startswith(_FORMULA) else text


@dataclass
class ParsedImport:
    rows: dict[str, dict]  # term -> {kind, canonical, family, valence, source, flagged, line}
    vocabulary: Vocabulary
    digest: str


_BOOL = {"": False, "false": False, "0": False, "no": False, "true": True, "1": True, "yes": True}


def parse_csv(data: bytes | str) -> ParsedImport:
    """Read and validate a vocabulary CSV. Every problem is collected with its line number and raised together
    as ImportErrors; nothing is written here."""
    if isinstance(data, bytes):
        if len(data) > CSV_MAX_BYTES:
            raise ImportErrors([f"the file is larger than {CSV_MAX_BYTES // 1_000_000} MB"])
        try:
            data = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise ImportErrors([f"the file is not UTF-8 text (byte {exc.start})"]) from None
    errors: list[str] = []
    reader = csv.DictReader(io.StringIO(data))
    header = [h.strip().lower() for h in (reader.fieldnames or [])]
    missing = [c for c in ("term", "kind", "canonical", "family", "valence") if c not in header]
    if missing:
        raise ImportErrors([f"line 1: the header lacks {', '.join(missing)} (expected {','.join(CSV_COLUMNS)})"])
    reader.fieldnames = header
    rows: dict[str, dict] = {}
    keys: dict[str, int] = {}
    try:
        for record in reader:
            line = reader.line_num
            if None in record:
                errors.append(f"line {line}: more fields than the header has")
                continue
            value = {k: _uncell((record.get(k) or "").strip()) for k in CSV_COLUMNS}
            term = " ".join(value["term"].lower().split())
            kind = value["kind"].lower()
            problem = None
            if not term:
                problem = "the term is empty"
            elif len(term) > MAX_TERM:
                problem = f"the term has more than {MAX_TERM} characters"
            elif normalise(term) in keys:
                problem = f"{term!r} repeats line {keys[normalise(term)]}"
            elif kind not in EmotionTerm.Kind.values:
                problem = f"kind {value['kind']!r} is not one of {', '.join(EmotionTerm.Kind.values)}"
            elif value["flagged"].lower() not in _BOOL:
                problem = f"flagged {value['flagged']!r} is not true or false"
            elif len(value["source"]) > 16:
                problem = "the source has more than 16 characters"
            elif kind == EmotionTerm.Kind.TERM:
                if value["canonical"]:
                    problem = "a term has no canonical term (leave that column empty)"
                elif value["family"] not in FAMILIES:
                    problem = f"unknown family {value['family']!r}"
                elif value["valence"] not in VALENCES:
                    problem = f"unknown valence {value['valence']!r}"
                elif value["family"] == UNASSIGNED and not _BOOL[value["flagged"].lower()]:
                    problem = "the unassigned family is for proposed terms: set flagged to true, or choose a family"
            elif not value["canonical"]:
                problem = f"a {kind} names its canonical term"
            if problem:
                errors.append(f"line {line}: {problem}")
                if term:
                    keys.setdefault(normalise(term), line)
                continue
            keys[normalise(term)] = line
            rows[term] = {"kind": kind, "canonical": " ".join(value["canonical"].lower().split()),
                          "family": value["family"] if kind == "term" else "",
                          "valence": value["valence"] if kind == "term" else "",
                          "source": value["source"], "flagged": _BOOL[value["flagged"].lower()] and kind == "term",
                          "line": line}
            if len(errors) >= CSV_MAX_ERRORS:
                break
    except csv.Error as exc:
        errors.append(f"line {reader.line_num}: {exc}")
    records: dict[str, dict] = {}
    for term, row in rows.items():
        if row["kind"] == "term":
            records[term] = {"term": term, "family": row["family"], "valence": row["valence"], "synonyms": [],
                             "word_forms": []}
    for term, row in rows.items():
        if row["kind"] == "term":
            continue
        target = rows.get(row["canonical"])
        if target is None:
            errors.append(f"line {row['line']}: its canonical term {row['canonical']!r} is not in the file")
        elif target["kind"] != "term":
            errors.append(f"line {row['line']}: its canonical term {row['canonical']!r} is itself a "
                          f"{target['kind']} (line {target['line']}); name a term")
        else:
            records[row["canonical"]]["synonyms" if row["kind"] == "synonym" else "word_forms"].append(term)
    if not rows and not errors:
        errors.append("the file holds no terms")
    vocabulary = None
    if not errors:
        try:
            vocabulary = Vocabulary.from_records(records.values())
        except VocabularyError as exc:
            errors.append(f"the vocabulary would not be consistent: {exc}")
    if errors:
        raise ImportErrors(errors[:CSV_MAX_ERRORS])
    return ParsedImport(rows=rows, vocabulary=vocabulary, digest=audit.digest(data))


@dataclass
class ImportPlan:
    parsed: ParsedImport
    added: list[str]
    changed: list[str]
    removed: list[str]
    impact: Impact


def plan_import(project: Project, data: bytes | str) -> ImportPlan:
    """Validate a CSV and compare it with the vocabulary now: rows added, changed, removed, labels affected.
    The file replaces the vocabulary: a row not in the file is removed."""
    parsed = parse_csv(data)
    current = {r.term: r for r in EmotionTerm.objects.filter(project=project).select_related("canonical")}
    added = sorted(set(parsed.rows) - set(current))
    removed = sorted(set(current) - set(parsed.rows))
    changed = sorted(t for t in set(parsed.rows) & set(current) if _differs(current[t], parsed.rows[t]))
    return ImportPlan(parsed, added, changed, removed, impact(project, parsed.vocabulary))


def _differs(row: EmotionTerm, new: dict) -> bool:
    canonical = row.canonical.term if row.canonical_id else ""
    return ((row.kind, canonical, row.family, row.valence, row.flagged) !=
            (new["kind"], new["canonical"], new["family"], new["valence"], new["flagged"])
            or bool(new["source"]) and new["source"] != row.source)


def import_csv(project: Project, data: bytes | str, *, actor=None) -> ImportPlan:
    """Replace the project's vocabulary with the file's, all or nothing: validated first (ImportErrors lists
    every problem by line), then written in one transaction with one audit event and a version bump."""
    with transaction.atomic():
        _lock(project)
        plan = plan_import(project, data)
        rows = plan.parsed.rows
        current = {r.term: r for r in EmotionTerm.objects.filter(project=project)}
        # 1. terms: create the new ones, update the others (a variant becoming a term loses its canonical).
        for term, row in rows.items():
            if row["kind"] != "term":
                continue
            fields = {"kind": "term", "canonical": None, "family": row["family"], "valence": row["valence"],
                      "flagged": row["flagged"]}
            if term in current:
                if row["source"]:
                    fields["source"] = row["source"]
                EmotionTerm.objects.filter(pk=current[term].pk).update(**fields)
            else:
                current[term] = EmotionTerm.objects.create(project=project, term=term,
                                                           source=row["source"] or "import", **fields)
        # 2. variants: point each at its term (a term becoming a variant loses its family and valence).
        for term, row in rows.items():
            if row["kind"] == "term":
                continue
            fields = {"kind": row["kind"], "canonical": current[row["canonical"]], "family": "", "valence": "",
                      "flagged": False}
            if term in current:
                if row["source"]:
                    fields["source"] = row["source"]
                EmotionTerm.objects.filter(pk=current[term].pk).update(**fields)
            else:
                EmotionTerm.objects.create(project=project, term=term, source=row["source"] or "import", **fields)
        # 3. what the file no longer holds (their variants were all re-pointed above or go too).
        EmotionTerm.objects.filter(project=project, term__in=plan.removed).delete()
        audit.record("vocabulary.imported", EmotionTerm, actor=actor, project=project,
                     changes={"added": len(plan.added), "changed": len(plan.changed), "removed": len(plan.removed),
                              "rows": len(rows), "file_sha256": plan.parsed.digest, **plan.impact.summary()})
        _bump(project, terms=None)
    return plan


def wheel_for_suggestions():
    """The configured official emotion wheels (settings.WHEEL_DIR or $AFFECTLOOP_WHEEL_DIR), or None."""
    from ml.metrics import WheelDataError, load_wheel

    from .evaluation import wheel_dir

    folder = wheel_dir()
    if not folder:
        return None
    try:
        return load_wheel(folder)
    except (WheelDataError, OSError):
        return None
