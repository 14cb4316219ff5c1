"""The project vocabulary: filled from the default when a project is created, edited by managers, and read
through one `project_vocabulary(project)` by fusion, active learning, metrics and the UI.

Human labels are never rewritten: annotations and predictions store the word that was chosen, and the
canonical term and family are resolved through the vocabulary when read. Every change bumps
`Project.vocabulary_version`, which keys the cache below and tells stored figures they are stale, and queues
the rebuild of the clip index (services.clip_index), which stores resolved terms and families.
"""

from __future__ import annotations

import threading

from django.db import transaction
from django.db.models import F

from ml.vocabulary import UNASSIGNED, Vocabulary, normalise

from .. import dispatch
from ..models import EmotionTerm, Project
from . import audit


class VocabularyChangeError(ValueError):
    pass


def default_rows(project_id: int, model=EmotionTerm) -> list:
    """The default vocabulary as unsaved rows: terms first (their ids are needed by the variants)."""
    return [model(project_id=project_id, term=t.term, kind="term", family=t.family, valence=t.valence,
                  source="seed") for t in Vocabulary.default().terms()]


def fill_default(project_id: int, model=EmotionTerm) -> int:
    """Fill a project's vocabulary from the default; `model` lets a data migration pass its historical one."""
    terms = model.objects.bulk_create(default_rows(project_id, model))
    if any(t.pk is None for t in terms):  # backends that do not return ids from bulk_create
        terms = list(model.objects.filter(project_id=project_id, kind="term"))
    by_term = {t.term: t for t in terms}
    variants, seen = [], set(by_term)
    for entry in Vocabulary.default().terms():
        for kind, forms in (("word_form", entry.word_forms), ("synonym", entry.synonyms)):
            for form in forms:
                if form in seen:
                    continue
                seen.add(form)
                variants.append(model(project_id=project_id, term=form, kind=kind,
                                      canonical=by_term[entry.term], source="seed"))
    model.objects.bulk_create(variants, batch_size=500)
    return len(terms) + len(variants)


_CACHE: dict[tuple, Vocabulary] = {}
_LOCK = threading.Lock()


def project_vocabulary(project: Project) -> Vocabulary:
    """The project's vocabulary as an `ml.vocabulary.Vocabulary`, cached per vocabulary version."""
    # created_at too: SQLite may reuse a deleted project's id, and a new project starts at version 1 again.
    key = (project.pk, project.created_at, project.vocabulary_version)
    cached = _CACHE.get(key)
    if cached is not None:
        return cached
    records: dict[int, dict] = {}
    rows = (EmotionTerm.objects.filter(project=project).order_by("pk")
            .values_list("pk", "term", "kind", "canonical_id", "family", "valence"))
    variants = []
    for pk, term, kind, canonical, family, valence in rows:
        if kind == EmotionTerm.Kind.TERM:
            records[pk] = {"term": term, "family": family, "valence": valence, "synonyms": [],
                           "word_forms": []}
        else:
            variants.append((canonical, kind, term))
    for canonical, kind, term in variants:
        records[canonical]["synonyms" if kind == "synonym" else "word_forms"].append(term)
    vocabulary = Vocabulary.from_records(records.values()) if records else Vocabulary.default()
    with _LOCK:
        if len(_CACHE) > 256:
            _CACHE.clear()
        _CACHE[key] = vocabulary
    return vocabulary


def _bump(project: Project, *, terms: list[str] | None) -> None:
    """Bump the version and, once committed, reindex the clips whose stored labels may now resolve
    differently: those carrying one of `terms`, or all of them (None) when the change's reach is unknown."""
    Project.objects.filter(pk=project.pk).update(vocabulary_version=F("vocabulary_version") + 1)
    project.refresh_from_db(fields=["vocabulary_version"])
    dispatch.reindex_project(project.pk, terms)


def propose_term(project: Project, word: str, *, actor=None) -> EmotionTerm:
    """A word an annotator used that the vocabulary lacks: added to the `unassigned` family, flagged for a
    manager. A word the vocabulary already knows returns its existing row."""
    word = normalise(word)
    if not word:
        raise VocabularyChangeError("an empty word cannot be a term")
    known = project_vocabulary(project).lookup(word)  # also catches "light hearted" for "light-hearted"
    existing = EmotionTerm.objects.filter(project=project, term=known.term if known else word).first()
    if existing is not None:
        return existing
    with transaction.atomic():
        row = EmotionTerm.objects.create(project=project, term=word, kind=EmotionTerm.Kind.TERM,
                                         family=UNASSIGNED, valence=EmotionTerm.Valence.AMBIGUOUS,
                                         source="human", flagged=True)
        audit.record("vocabulary.proposed", row, actor=actor, project=project, changes={"term": word})
        _bump(project, terms=[word])  # spellings of the word stored before it was known now resolve to it
    return row


def approve_term(row: EmotionTerm, *, family: str, valence: str, actor=None) -> EmotionTerm:
    """A manager places a proposed term in a family (and may correct its valence)."""
    from ml.vocabulary import FAMILIES, VALENCES

    if family not in FAMILIES or family == UNASSIGNED:
        raise VocabularyChangeError(f"unknown family {family!r}")
    if valence not in VALENCES:
        raise VocabularyChangeError(f"unknown valence {valence!r}")
    with transaction.atomic():
        EmotionTerm.objects.filter(pk=row.pk).update(family=family, valence=valence, flagged=False)
        audit.record("vocabulary.approved", row, actor=actor, project=row.project,
                     changes={"term": row.term, "family": family, "valence": valence})
        _bump(row.project, terms=[row.term])  # only its family changed
    row.refresh_from_db()
    return row


def vocabulary_changed(project: Project, row: EmotionTerm, *, actor=None,
                       action: str = "vocabulary.changed") -> None:
    """An edit made elsewhere (the admin): audited, the version bumped, and every clip reindexed (the row's
    previous state, a synonym's old canonical term say, is gone, so the affected clips cannot be named)."""
    with transaction.atomic():
        audit.record(action, row, actor=actor, project=project, changes={"term": row.term, "kind": row.kind,
                                                                         "family": row.family})
        _bump(project, terms=None)


def vocabulary_rows_deleted(rows: list[EmotionTerm], *, actor=None) -> None:
    """The admin's bulk delete: each row audited, each project's version bumped and reindexed once."""
    with transaction.atomic():
        projects = {}
        for row in rows:
            audit.record("vocabulary.deleted", row, actor=actor, project=row.project,
                         changes={"term": row.term, "kind": row.kind, "family": row.family})
            projects[row.project_id] = row.project
        for project in projects.values():
            _bump(project, terms=None)


def complete(project: Project, text: str, limit: int = 12) -> list[dict]:
    """Autocomplete over every surface form of the project's vocabulary: a synonym or word form finds its
    canonical term, and each entry names the term's family. Best matches first: the exact word, then words
    that start with the text, then words that contain it."""
    query = normalise(text or "")
    if not query:
        return []
    ranked = []
    for form, term in project_vocabulary(project).surface_forms():
        key = normalise(form)
        if key == query:
            rank = 0
        elif key.startswith(query):
            rank = 1 if form == term.term else 2
        elif f" {query}" in f" {key}" or query in key:
            rank = 3
        else:
            continue
        kind = "term" if form == term.term else ("word_form" if form in term.word_forms else "synonym")
        ranked.append((rank, len(key), form, {"word": form, "term": term.term, "family": term.family,
                                                "valence": term.valence, "kind": kind}))
    ranked.sort(key=lambda r: r[:3])
    out, seen = [], set()
    for *_, entry in ranked:
        if (entry["word"], entry["term"]) not in seen:
            seen.add((entry["word"], entry["term"]))
            out.append(entry)
        if len(out) >= limit:
            break
    return out
