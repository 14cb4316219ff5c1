"""Vocabulary governance (services.vocabulary_governance, vocabulary_views): edits change only the vocabulary, are
previewed, audited and versioned; a split lists the labels to reassign; suggestions never join opposite
valences; the CSV round-trips and a bad file imports nothing."""

import io
from collections import Counter

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse
from django.utils import timezone

from annotations import selectors
from annotations.models import (
    Annotation,
    AuditEvent,
    ClipLabel,
    DismissedSuggestion,
    EmotionTerm,
    Project,
    Role,
    SnapshotItem,
)
from annotations.services import dashboard, snapshots, vocabulary
from annotations.services import vocabulary_governance as governance
from annotations.services.projects import set_membership
from ml.metrics import REFERENCE_DIR, load_wheel

from .test_snapshots import clip_in, people, predict, submitted, verified  # noqa: F401 - people is a fixture

pytestmark = pytest.mark.django_db
HOSTILE = "<img src=x onerror=alert(1)>"


def url(name, project, *args):
    return reverse(f"annotations:{name}", args=[project.slug, *args])


def canonical_counts(project, source="verified"):
    """What the dashboard counts: labels by canonical term, resolved through the project vocabulary now."""
    vocab = vocabulary.project_vocabulary(project)
    labels = selectors.verified_labels(project) if source == "verified" else {}
    return Counter(vocab.canonical(word) or word for words in labels.values() for word in words)


@pytest.fixture
def labelled(project, people, django_capture_on_commit_callbacks):  # noqa: F811
    with django_capture_on_commit_callbacks(execute=True):
        one = clip_in(project, "train", name="clip-worried")
        verified(one, people, ["worried"])
        predict(one, "fused", "v1", ["worry", "calm"])
        two = clip_in(project, "train", name="clip-anxiety")
        verified(two, people, ["anxiety", "calm"])
        three = clip_in(project, "val", name="clip-nervous")
        verified(three, people, ["nervous"])
    return {"worried": one, "anxiety": two, "nervous": three}


def stored(project):
    return (sorted(Annotation.objects.filter(clip__project=project).values_list("pk", "labels", "version")),
            sorted(SnapshotItem.objects.filter(snapshot__project=project)
                   .values_list("pk", "labels", "terms", "families")))


# --- the test ------------------------------------------------------------------------------------------
def test_a_merge_changes_what_the_dashboard_counts_but_no_stored_annotation_and_no_snapshot(
        project, manager, labelled, django_capture_on_commit_callbacks):
    snapshot = snapshots.freeze(project, actor=manager)
    before = stored(project)
    assert canonical_counts(project) == Counter({"worried": 1, "anxious": 1, "calm": 1, "nervous": 1})
    shown = dashboard.compute(project)["labels"]["terms"]  # what the dashboard's label plot counts
    assert shown["worried"] == 1 and shown["anxious"] == 1
    version = project.vocabulary_version

    plan = governance.plan_merge(project, "worried", "anxious")
    assert plan.impact.counts == {"annotations": 1, "verified": 1, "predictions": 1}
    assert "worried" in plan.impact.words and "worry" in plan.impact.words
    with django_capture_on_commit_callbacks(execute=True):
        event = governance.apply(project, plan, actor=manager)

    assert canonical_counts(project) == Counter({"anxious": 2, "calm": 1, "nervous": 1})
    shown = dashboard.compute(project)["labels"]["terms"]
    assert "worried" not in shown and shown["anxious"] == 2
    index = Counter(ClipLabel.objects.filter(project=project, source="verified").values_list("term", flat=True))
    assert index == Counter({"anxious": 2, "calm": 1, "nervous": 1})  # the clip index followed
    assert stored(project) == before  # no annotation and no snapshot item changed
    snapshot.refresh_from_db()
    assert snapshot.vocabulary_version == version
    project.refresh_from_db()
    assert project.vocabulary_version == version + 1
    assert event.action == "vocabulary.merged"
    assert event.changes == {"term": "worried", "into": "anxious", "variants_moved": 6, "annotations_changed": 1,
                             "verified_changed": 1, "predictions_changed": 1}
    row = EmotionTerm.objects.get(project=project, term="worried")
    assert (row.kind, row.canonical.term, row.family) == ("synonym", "anxious", "")
    assert EmotionTerm.objects.get(project=project, term="fretful").canonical.term == "anxious"


def test_terms_of_opposite_valence_are_never_merged(project):
    with pytest.raises(governance.GovernanceError, match="opposite valence"):
        governance.plan_merge(project, "hopeless", "hopeful")
    with pytest.raises(governance.GovernanceError, match="word form of 'anxious'"):
        governance.plan_merge(project, "anxiety", "worried")
    with pytest.raises(governance.GovernanceError, match="not in this project"):
        governance.plan_merge(project, "zzz", "worried")


def test_a_rename_keeps_the_old_name_resolving(project, manager, labelled):
    version = project.vocabulary_version
    plan = governance.plan_rename(project, "nervous", "Jittery ")  # one of its own synonyms: they swap
    assert plan.impact.counts == {"annotations": 1, "verified": 1, "predictions": 0}
    governance.apply(project, plan, actor=manager)
    vocab = vocabulary.project_vocabulary(project)
    assert vocab.canonical("nervous") == "jittery" and vocab.canonical("nervousness") == "jittery"
    assert EmotionTerm.objects.get(project=project, term="nervous").kind == "synonym"
    assert project.vocabulary_version == version + 1
    assert AuditEvent.objects.filter(action="vocabulary.renamed", changes__to="jittery").exists()
    with pytest.raises(governance.GovernanceError, match="merge the two terms"):
        governance.plan_rename(project, "jittery", "anxiety")


def test_proposed_terms_are_approved_or_refused(project, manager, annotator, people):  # noqa: F811
    clip = clip_in(project, "train")
    vocabulary.propose_term(project, "zoom-fatigued", actor=annotator)
    submitted(clip, annotator, ["zoom fatigued"])
    plan = governance.plan_approve(project, "zoom fatigued", "sadness", "negative")
    assert plan.impact.counts["annotations"] == 1  # its family changes
    governance.apply(project, plan, actor=manager)
    assert vocabulary.project_vocabulary(project).family("zoom fatigued") == "sadness"
    with pytest.raises(governance.GovernanceError, match="not a proposed term"):
        governance.plan_refuse(project, "zoom fatigued")

    vocabulary.propose_term(project, "meh", actor=annotator)
    version = project.vocabulary_version
    governance.apply(project, governance.plan_refuse(project, "meh"), actor=manager)
    assert not EmotionTerm.objects.filter(project=project, term="meh").exists()
    assert project.vocabulary_version == version + 1
    assert AuditEvent.objects.filter(action="vocabulary.refused").count() == 1


def test_a_split_relabels_nothing_and_lists_the_labels_to_reassign(project, manager, labelled, people):  # noqa: F811
    before = stored(project)
    plan = governance.plan_split(project, "worried", [{"term": "fretful", "family": "fear", "valence": "negative"},
                                                      {"term": "worried sick", "family": "fear", "valence": "negative"}])
    assert plan.params["moves"] == {"fretful": "fretful"}  # its own synonym became a term of its own
    assert plan.impact.counts == {"annotations": 0, "verified": 0, "predictions": 0}
    event = governance.apply(project, plan, actor=manager)
    assert stored(project) == before
    vocab = vocabulary.project_vocabulary(project)
    assert vocab.canonical("worried") == "worried" and vocab.canonical("fretful") == "fretful"
    entries, total = governance.split_review(project, event)
    assert total == 1 and [(e.clip_name, e.words, e.annotations, e.verified) for e in entries] == [
        ("clip-worried", ["worried"], 1, True)]
    with pytest.raises(governance.GovernanceError, match="already in the vocabulary"):
        governance.plan_split(project, "worried", [{"term": "anxious", "family": "fear", "valence": "negative"}])
    with pytest.raises(governance.GovernanceError, match="not a word form or synonym"):
        governance.plan_split(project, "worried", [{"term": "uneasy2", "family": "fear", "valence": "negative"}],
                              {"calm": "uneasy2"})


def test_suggestions_from_spelling_cooccurrence_and_never_antonyms(project, manager, annotator, people):  # noqa: F811
    vocabulary.propose_term(project, "frustated", actor=annotator)  # a typo of "frustrated"
    for words in [("irritated", "annoyed")] * 3 + [("hopeful", "hopeless")] * 3:  # antonyms split annotators too
        clip = clip_in(project, "train")
        for who, word in zip(("alice", "bob"), words):
            Annotation.objects.create(clip=clip, annotator=people[who], labels=[{"term": word, "source": "human"}],
                                      status="submitted", submitted_at=timezone.now())
    found = {(s.source, s.target): s for s in governance.suggestions(project)}
    assert ("frustated", "frustrated") in found
    assert any("spelled like" in r for r in found[("frustated", "frustrated")].reasons)
    pair = found.get(("irritated", "annoyed")) or found.get(("annoyed", "irritated"))
    assert pair is not None and any("same clip" in r for r in pair.reasons)
    assert not {("hopeful", "hopeless"), ("hopeless", "hopeful")} & set(found)


def test_a_dismissed_pair_is_not_suggested_again_until_restored(manager_client, project, manager, annotator):
    """"Not the same" from the page: audited, gone from the list whatever the evidence, listed as dismissed,
    and back after "Suggest again". Only terms of the project can be dismissed."""
    vocabulary.propose_term(project, "frustated", actor=annotator)
    page = url("vocabulary-suggestions", project)
    assert 'data-pair="frustated|frustrated"' in manager_client.get(page).content.decode()

    response = manager_client.post(url("vocabulary-dismiss", project),
                                   {"action": "dismiss", "source": "frustated", "target": "frustrated"})
    assert response.status_code == 302
    row = DismissedSuggestion.objects.get(project=project)
    assert (row.term_a, row.term_b, row.dismissed_by) == ("frustated", "frustrated", manager)
    assert all({s.source, s.target} != {"frustated", "frustrated"} for s in governance.suggestions(project))
    body = manager_client.get(page).content.decode()
    listed = body[body.index('id="suggestions"'):body.index("</table>", body.index('id="suggestions"'))]
    assert "frustated" not in listed
    assert 'id="dismissed"' in body and 'data-pair="frustated|frustrated"' in body
    assert AuditEvent.objects.filter(project=project, action="vocabulary.suggestion_dismissed").count() == 1
    # Again, in the other order: the same pair, no second row or event.
    governance.dismiss(project, "frustrated", "frustated", actor=manager)
    assert DismissedSuggestion.objects.count() == 1
    assert AuditEvent.objects.filter(action="vocabulary.suggestion_dismissed").count() == 1
    with pytest.raises(governance.GovernanceError):
        governance.dismiss(project, "frustrated", "zorblike", actor=manager)

    manager_client.post(url("vocabulary-dismiss", project), {"action": "restore", "id": row.pk})
    assert not DismissedSuggestion.objects.exists()
    assert AuditEvent.objects.filter(action="vocabulary.suggestion_restored").count() == 1
    assert any({s.source, s.target} == {"frustated", "frustrated"} for s in governance.suggestions(project))
    assert manager_client.post(url("vocabulary-dismiss", project),
                               {"action": "restore", "id": row.pk}).status_code == 404


def test_morphology_finds_a_new_word_form(project, manager):
    assert governance.stem("anxious") == governance.stem("anxiety") == governance.stem("anxiousness")
    assert governance.stem("serenely") == governance.stem("serene") == governance.stem("serenity")
    EmotionTerm.objects.create(project=project, term="sereneness", kind="term", family="calm", valence="positive",
                               source="human")
    vocabulary.vocabulary_changed(project, EmotionTerm.objects.get(project=project, term="sereneness"))
    found = {(s.source, s.target): s for s in governance.suggestions(project)}
    assert any("same stem" in r for r in found[("sereneness", "serene")].reasons)


@pytest.mark.skipif(not (REFERENCE_DIR / "emotion_wheel").is_dir(), reason="no emotion-wheel reference data")
def test_the_emotion_wheels_suggest_where_configured(project, annotator):
    wheel = load_wheel(REFERENCE_DIR / "emotion_wheel")
    assert governance.suggestions(project, wheel=wheel) == []  # the seed's own neighbours are left alone
    vocabulary.propose_term(project, "abashed", actor=annotator)
    vocabulary.propose_term(project, "abhorrent", actor=annotator)
    found = {(s.source, s.target): s for s in governance.suggestions(project, wheel=wheel)}
    assert any("emotion wheels read 'abashed' as 'embarrassed'" in r for r in found[("abashed", "embarrassed")].reasons)
    assert ("abhorrent", "hateful") in found
    assert all(s.source != "abashed" for s in governance.suggestions(project))  # the wheels found that one


# --- CSV -------------------------------------------------------------------------------------------------------
def test_the_csv_round_trips_without_a_change(project, manager, annotator):
    vocabulary.propose_term(project, '=HYPERLINK("http://x")', actor=annotator)  # annotators' text
    text = governance.export_csv(project)
    assert '"\'=hyperlink(""http://x"")",term,,unassigned,ambiguous,human,true' in text.splitlines()
    assert text.splitlines()[0] == "term,kind,canonical,family,valence,source,flagged"
    assert "anxiety,word_form,anxious,,,seed,false" in text.splitlines()
    plan = governance.plan_import(project, text.encode())
    assert (plan.added, plan.changed, plan.removed, plan.impact.total) == ([], [], [], 0)
    records = vocabulary.project_vocabulary(project).to_records()
    version = project.vocabulary_version
    governance.import_csv(project, text.encode(), actor=manager)
    project.refresh_from_db()
    assert project.vocabulary_version == version + 1
    assert sorted(vocabulary.project_vocabulary(project).to_records(), key=lambda r: r["term"]) == sorted(
        records, key=lambda r: r["term"])
    assert AuditEvent.objects.filter(action="vocabulary.imported", changes__removed=0).exists()


def test_an_import_changes_the_vocabulary_and_reports_the_labels(project, manager, labelled):
    lines = governance.export_csv(project).splitlines()
    lines = [line for line in lines if not line.startswith("jittery,")]  # removed
    lines = [line.replace("worried,term,,fear,negative", "worried,synonym,anxious,,") for line in lines]
    lines = [line.replace(",worried,,,seed", ",anxious,,,seed") for line in lines]  # worried's variants follow
    lines.append("zoned out,term,,neutral,neutral,import,false")
    plan = governance.import_csv(project, "\n".join(lines).encode(), actor=manager)
    assert plan.added == ["zoned out"] and plan.removed == ["jittery"] and "worried" in plan.changed
    assert plan.impact.counts == {"annotations": 1, "verified": 1, "predictions": 1}
    vocab = vocabulary.project_vocabulary(project)
    assert vocab.canonical("worry") == "anxious" and vocab.canonical("jittery") is None
    assert vocab.family("zoned out") == "neutral"


def test_a_bad_csv_imports_nothing_and_names_each_line(project, manager):
    version, rows = project.vocabulary_version, EmotionTerm.objects.filter(project=project).count()
    lines = ["term,kind,canonical,family,valence,source,flagged",
             "calm,term,,calm,positive,seed,false",
             "tranquil,synonym,serenity,,,seed,false",  # canonical not in the file
             "Calm,term,,calm,positive,seed,false",  # repeats line 2
             "odd,term,,no-such-family,positive,,false",
             "wild,emotion,,joy,positive,,false",
             ",term,,joy,positive,,",
             "blue,term,,sadness,negative,,maybe"]
    bad = "\n".join(lines)
    with pytest.raises(governance.ImportErrors) as caught:
        governance.import_csv(project, bad.encode(), actor=manager)
    errors = caught.value.errors
    assert any(e.startswith("line 3:") and "serenity" in e for e in errors)
    assert any(e.startswith("line 4:") and "repeats line 2" in e for e in errors)
    assert any(e.startswith("line 5:") and "unknown family" in e for e in errors)
    assert any(e.startswith("line 6:") and "kind" in e for e in errors)
    assert any(e.startswith("line 7:") and "empty" in e for e in errors)
    assert any(e.startswith("line 8:") and "flagged" in e for e in errors)
    with pytest.raises(governance.ImportErrors, match="header lacks"):
        governance.parse_csv(b"word,family\nx,joy\n")
    with pytest.raises(governance.ImportErrors, match="not UTF-8"):
        governance.parse_csv(b"term,kind,canonical,family,valence\n\xff\xfe,term,,joy,positive\n")
    with pytest.raises(governance.ImportErrors, match="line 3: 'light hearted' repeats line 2"):
        governance.parse_csv("term,kind,canonical,family,valence\nlight-hearted,term,,joy,positive\n"
                             "light hearted,term,,joy,positive\n")
    project.refresh_from_db()
    assert project.vocabulary_version == version
    assert EmotionTerm.objects.filter(project=project).count() == rows
    assert not AuditEvent.objects.filter(action="vocabulary.imported").exists()


def test_the_command_exports_and_imports(project, manager, tmp_path):
    path = tmp_path / "vocabulary.csv"
    call_command("vocabulary", "--project", project.slug, "export", str(path))
    path.write_text(path.read_text() + "zoned out,term,,neutral,neutral,import,false\n")
    out = io.StringIO()
    call_command("vocabulary", "--project", project.slug, "--dry-run", "import", str(path), stdout=out)
    assert "would import: 1 added" in out.getvalue()
    assert vocabulary.project_vocabulary(project).lookup("zoned out") is None
    call_command("vocabulary", "--project", project.slug, "--user", "maria", "import", str(path), stdout=out)
    project.refresh_from_db()
    assert vocabulary.project_vocabulary(project).family("zoned out") == "neutral"
    assert AuditEvent.objects.get(action="vocabulary.imported").actor == manager
    path.write_text("term,kind\n")
    with pytest.raises(CommandError, match="line 1"):
        call_command("vocabulary", "--project", project.slug, "import", str(path))


# --- pages -----------------------------------------------------------------------------------------------------
@pytest.fixture
def manager_client(client, manager):
    client.force_login(manager)
    return client


def test_only_the_projects_managers_see_the_pages(client, project, manager, annotator, outsider,
                                                  django_user_model):
    reviewer = django_user_model.objects.create_user("rhea", password="pw-rhea-12345")
    set_membership(project=project, user=reviewer, role=Role.REVIEWER)
    event = AuditEvent.objects.create(project=project, action="vocabulary.split", object_type="emotionterm",
                                      changes={"term": "worried", "into": ["x"], "words": ["worried"]})
    pages = [("get", url("vocabulary-manage", project)), ("get", url("vocabulary-suggestions", project)),
             ("get", url("vocabulary-export", project)), ("get", url("vocabulary-import", project)),
             ("get", url("vocabulary-split-review", project, event.pk)),
             ("post", url("vocabulary-edit", project)), ("post", url("vocabulary-dismiss", project))]
    for user in (annotator, reviewer, outsider):
        client.force_login(user)
        for method, address in pages:
            assert getattr(client, method)(address, {"action": "refuse", "term": "calm",
                                                     "confirm": "1"}).status_code == 404, (user, address)
    client.logout()
    assert client.get(url("vocabulary-manage", project)).status_code == 302  # to log in
    client.force_login(manager)
    for method, address in pages[:-2]:  # the GET pages
        assert client.get(address).status_code == 200, address
    other = AuditEvent.objects.create(project=None, action="vocabulary.split", object_type="emotionterm",
                                      changes={"words": ["worried"]})
    assert client.get(url("vocabulary-split-review", project, other.pk)).status_code == 404


def test_a_merge_is_previewed_then_confirmed_from_the_page(manager_client, project, labelled):
    version = project.vocabulary_version
    response = manager_client.post(url("vocabulary-edit", project),
                                   {"action": "merge", "source": "worried", "target": "anxious"})
    assert response.status_code == 200
    body = response.content.decode()
    assert 'data-count="verified">1<' in body and "Confirm" in body
    project.refresh_from_db()
    assert project.vocabulary_version == version  # the preview changed nothing
    response = manager_client.post(url("vocabulary-edit", project),
                                   {"action": "merge", "source": "worried", "target": "anxious", "confirm": "1"},
                                   follow=True)
    assert "1 verified label" in response.content.decode()
    project.refresh_from_db()
    assert vocabulary.project_vocabulary(project).canonical("worried") == "anxious"
    response = manager_client.post(url("vocabulary-edit", project),
                                   {"action": "merge", "source": "hopeless", "target": "hopeful", "confirm": "1"},
                                   follow=True)
    assert "opposite valence" in response.content.decode() and "Nothing was changed" in response.content.decode()


def test_a_split_from_the_page_leads_to_its_review_list(manager_client, project, labelled, people):  # noqa: F811
    fields = {"action": "split", "term": "worried", "new_terms": "worried sick, fear, negative",
              "moves": "worry -> worried sick"}
    preview = manager_client.post(url("vocabulary-edit", project), fields).content.decode()
    assert '<textarea name="moves" hidden>worry -&gt; worried sick</textarea>' in preview
    assert 'data-count="predictions">1<' in preview  # the fused "worry" now resolves to the new term
    response = manager_client.post(url("vocabulary-edit", project),
                                   {"action": "split", "term": "worried", "new_terms": "worried sick, fear, negative",
                                    "moves": "worry -> worried sick", "confirm": "1"}, follow=True)
    body = response.content.decode()
    assert "clip-worried" in body and reverse("annotations:clip-history", args=[labelled["worried"].pk]) in body
    project.refresh_from_db()
    assert vocabulary.project_vocabulary(project).canonical("worry") == "worried sick"
    event = AuditEvent.objects.get(action="vocabulary.split")
    response = manager_client.post(url("vocabulary-split-review", project, event.pk), follow=True)
    assert "Sent 1 clip to review" in response.content.decode()
    assert AuditEvent.objects.filter(action="clip.review_requested",
                                     object_id=str(labelled["worried"].pk)).exists()


def test_labels_are_escaped_and_the_csv_downloads(manager_client, project, annotator):
    vocabulary.propose_term(project, HOSTILE, actor=annotator)
    body = manager_client.get(url("vocabulary-manage", project)).content.decode()
    assert HOSTILE.lower() not in body and "&lt;img src=x onerror=alert(1)&gt;" in body
    response = manager_client.get(url("vocabulary-export", project))
    assert response["Content-Type"].startswith("text/csv") and "attachment" in response["Content-Disposition"]
    assert b"anxiety,word_form,anxious" in response.content


def test_the_import_page_previews_confirms_and_shows_errors(manager_client, project):
    text = governance.export_csv(project) + "zoned out,term,,neutral,neutral,import,false\n"
    upload = io.BytesIO(text.encode())
    upload.name = "v.csv"
    response = manager_client.post(url("vocabulary-import", project), {"file": upload})
    assert response.status_code == 200 and "1 added, 0 changed, 0 removed" in response.content.decode()
    assert vocabulary.project_vocabulary(project).lookup("zoned out") is None
    response = manager_client.post(url("vocabulary-import", project), {"text": text, "confirm": "1"}, follow=True)
    assert "Imported: 1 added" in response.content.decode()
    project.refresh_from_db()
    assert vocabulary.project_vocabulary(project).family("zoned out") == "neutral"
    bad = io.BytesIO(b"term,kind,canonical,family,valence\nx,term,,nope,positive\n")
    bad.name = "bad.csv"
    response = manager_client.post(url("vocabulary-import", project), {"file": bad})
    assert response.status_code == 400 and "line 2: unknown family" in response.content.decode()


def test_an_edit_is_checked_again_when_it_is_made(project, manager):
    stale = Project.objects.get(pk=project.pk)
    plan = governance.plan_merge(stale, "worried", "anxious")
    governance.apply(project, governance.plan_merge(project, "nervous", "worried"), actor=manager)
    governance.apply(stale, plan, actor=manager)  # made against the vocabulary as it is now, not as previewed
    assert stale.vocabulary_version == project.vocabulary_version + 1
    vocab = vocabulary.project_vocabulary(stale)
    assert vocab.canonical("jittery") == "anxious" and vocab.canonical("nervous") == "anxious"
    with pytest.raises(governance.GovernanceError, match="synonym of 'anxious'"):
        governance.apply(project, plan, actor=manager)  # worried is no longer a term
