"""One project vocabulary: filled from the default on creation, read through project_vocabulary, changed only
with a version bump, and never by rewriting human labels."""

import pytest
from django.db import IntegrityError, transaction

from annotations.models import Annotation, AuditEvent, Clip, EmotionTerm
from annotations.services import vocabulary
from ml.vocabulary import Vocabulary

pytestmark = pytest.mark.django_db


def test_a_new_project_gets_the_default_vocabulary_as_rows(project):
    default = Vocabulary.default()
    terms = EmotionTerm.objects.filter(project=project, kind="term")
    assert terms.count() == len(default)
    anxious = terms.get(term="anxious")
    assert anxious.family == "fear" and anxious.valence == "negative"
    forms = set(anxious.variants.values_list("term", flat=True))
    assert set(default.lookup("anxious").surface_forms[1:]) == forms  # synonyms and word forms are rows
    assert EmotionTerm.objects.get(project=project, term="anxiety").canonical == anxious


def test_project_vocabulary_equals_the_default_and_follows_changes(project, manager):
    vocab = vocabulary.project_vocabulary(project)
    assert vocab.to_records() == Vocabulary.default().to_records()
    version = project.vocabulary_version
    row = vocabulary.propose_term(project, "Zoom-fatigued", actor=manager)
    assert (row.term, row.family, row.flagged) == ("zoom fatigued", "unassigned", True)
    assert project.vocabulary_version == version + 1
    assert vocabulary.project_vocabulary(project).family("zoom-fatigued") == "unassigned"
    assert vocabulary.propose_term(project, "anxiety").term == "anxious"  # known words are not proposed
    vocabulary.approve_term(row, family="sadness", valence="negative", actor=manager)
    assert vocabulary.project_vocabulary(project).family("zoom fatigued") == "sadness"
    assert list(AuditEvent.objects.filter(action__startswith="vocabulary.").values_list("action", flat=True)
                .order_by("id")) == ["vocabulary.proposed", "vocabulary.approved"]
    with pytest.raises(vocabulary.VocabularyChangeError):
        vocabulary.approve_term(row, family="unassigned", valence="negative")


def test_a_vocabulary_change_never_rewrites_human_labels(project, annotator):
    clip = Clip.objects.create(project=project, file="clips/x.mp4", original_name="x.mp4", name="x", sha256="e" * 64,
                               size_bytes=10)
    labels = [{"term": "deserted", "source": "human"}]
    annotation = Annotation.objects.create(clip=clip, annotator=annotator, labels=labels)
    row = EmotionTerm.objects.get(project=project, term="deserted")
    row.delete()
    vocabulary.vocabulary_changed(project, row)
    annotation.refresh_from_db()
    assert annotation.labels == labels  # the chosen word stays; only its resolution changes
    assert vocabulary.project_vocabulary(project).canonical("deserted") is None


def test_a_term_needs_family_and_valence_and_a_variant_needs_its_term(project):
    with pytest.raises(IntegrityError), transaction.atomic():
        EmotionTerm.objects.create(project=project, term="blah", kind="term", family="", valence="negative")
    with pytest.raises(IntegrityError), transaction.atomic():
        EmotionTerm.objects.create(project=project, term="blahs", kind="synonym")
