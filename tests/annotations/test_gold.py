"""Gold clips: marked by managers, served unmarked in annotators' queues at config.gold.rate, scored over canonical
terms with family partial credit, kept out of annotations, agreement and snapshots, and flagging annotators
below the floor."""

import json

import pytest
from django.urls import reverse

from annotations.models import (
    Annotation,
    AuditEvent,
    Clip,
    ClipLease,
    EmotionTerm,
    GoldAnswer,
    GoldClip,
    Membership,
    Review,
    Role,
    SnapshotItem,
)
from annotations.services import annotating, gold, quality, queue, snapshots, vocabulary
from annotations.services.projects import set_membership, update_config

pytestmark = pytest.mark.django_db


def ready_clip(project, n, priority=None):
    return Clip.objects.create(project=project, file=f"clips/{n}.mp4", sha256=f"{n:064x}", name=f"clip-{n}",
                               size_bytes=1, status=Clip.Status.READY, duration=2.0, priority=priority)


def submit(user, clip, labels):
    queue.claim(user, clip)
    draft = annotating.start(user, clip)
    return annotating.submit(draft, labels=labels, base_version=draft.version)


@pytest.fixture
def people(project, annotator, manager, django_user_model):
    users = {"alice": annotator, "maria": manager}
    for name, role, trusted in (("bob", Role.ANNOTATOR, True), ("carol", Role.ANNOTATOR, False),
                                ("rita", Role.REVIEWER, False)):
        users[name] = django_user_model.objects.create_user(name, password=f"pw-{name}-12345")
        set_membership(project=project, user=users[name], role=role, trusted=trusted)
    return users


def verified_clip(project, people, n, labels):
    """A clip verified by Bob, a trusted annotator (his submit is accepted automatically)."""
    clip = ready_clip(project, n, priority=0.0)
    submit(people["bob"], clip, labels)
    clip.refresh_from_db()
    assert clip.label_state == Clip.LabelState.VERIFIED
    return clip


def irritated_means_annoyed(project):
    """Edit the project vocabulary: "irritated" becomes a synonym of "annoyed" (it is a term of its own in the
    default)."""
    EmotionTerm.objects.filter(project=project, term="irritated").delete()
    annoyed = EmotionTerm.objects.get(project=project, term="annoyed")
    row = EmotionTerm.objects.create(project=project, term="irritated", kind=EmotionTerm.Kind.SYNONYM,
                                     canonical=annoyed)
    vocabulary.vocabulary_changed(project, row)
    project.refresh_from_db()


# --- scoring ---------------------------------------------------------------------------------------------------
def test_synonyms_count_as_the_same_term(project):
    vocab = vocabulary.project_vocabulary(project)
    before = gold.score(["irritated"], ["annoyed"], vocab)
    # Two terms of one family: no term match, full family match, half credit.
    assert before == {"precision": 0.0, "recall": 0.0, "f": 0.0, "family_f": 1.0, "score": 0.5}

    irritated_means_annoyed(project)
    vocab = vocabulary.project_vocabulary(project)
    assert gold.score(["irritated"], ["annoyed"], vocab)["f"] == 1.0
    # {annoyed, happy} against {annoyed, sad}: one of two on each side.
    got = gold.score([{"term": "Irritated"}, {"term": "happy"}], ["annoyed", "sad"], vocab)
    assert got == pytest.approx({"precision": 0.5, "recall": 0.5, "f": 0.5, "family_f": 0.5, "score": 0.5})


def test_family_partial_credit(project):
    vocab = vocabulary.project_vocabulary(project)
    # furious (anger) for annoyed (anger): half credit; sad matches. P = R = (0.5 + 1) / 2 = 0.75.
    got = gold.score(["furious", "sad"], ["annoyed", "sad"], vocab)
    assert got == pytest.approx({"precision": 0.5, "recall": 0.5, "f": 0.5, "family_f": 1.0, "score": 0.75})
    # Three answers against one gold term: P = 1/3, R = 1, F = 0.5; family credit: annoyed 1, furious 0.5,
    # calm 0 -> P = 1.5 / 3 = 0.5, R = 1, score = 2/3.
    got = gold.score(["annoyed", "furious", "calm"], ["annoyed"], vocab)
    assert got == pytest.approx({"precision": 1 / 3, "recall": 1.0, "f": 0.5, "family_f": 2 / 3, "score": 2 / 3})
    # The broad "general" family earns nothing: positive is not half of negative.
    assert gold.score(["positive"], ["negative"], vocab)["score"] == 0.0
    # A word the vocabulary lacks stands for itself, without a family.
    assert gold.score(["zorblike"], ["zorblike"], vocab)["f"] == 1.0


def test_wheel_partial_credit_where_wheels_are_configured(project, settings):
    from ml.metrics import load_wheel
    from tests.conftest import reference_path

    folder = reference_path("emotion_wheel")  # skips, saying why, where the reference data is absent
    wheel = load_wheel(folder)
    vocab = vocabulary.project_vocabulary(project)
    # furious for annoyed, wheel by wheel (fine emotion = level 2, coarse = level 1 of the reference wheels):
    # frustrated/anger (coarse mad = mad: 0.5), aggressive = aggressive (1), angry = angry (1),
    # irritated/aggressive (coarse anger = anger: 0.5), angry = angry (1): mean 4 / 5 = 0.8 on each side.
    got = gold.score(["furious"], ["annoyed"], vocab, wheel=wheel)
    assert got["score"] == pytest.approx(0.8) and got["f"] == 0.0
    assert gold.score(["furious"], ["annoyed"], vocab)["score"] == 0.5  # the family rule without wheels
    # sad for anxious: neither the fine nor the coarse emotion is shared on any wheel
    assert gold.score(["sad"], ["anxious"], vocab, wheel=wheel)["score"] == 0.0
    # no wheel places "tearful" (sadness) or "homesick" (sadness): the family rule again, half credit
    assert gold.score(["tearful"], ["homesick"], vocab, wheel=wheel)["score"] == 0.5
    # a configured folder is what a submit uses
    settings.WHEEL_DIR = str(folder)
    assert gold.configured_wheel() is wheel
    settings.WHEEL_DIR = None


def test_the_draw_is_deterministic_and_near_the_rate():
    draws = [gold.draws_gold(7, user, served, 0.2) for user in range(1, 6) for served in range(400)]
    assert draws == [gold.draws_gold(7, user, served, 0.2) for user in range(1, 6) for served in range(400)]
    assert 0.17 < sum(draws) / len(draws) < 0.23  # 2000 draws: the standard error is 0.009
    assert not any(gold.draws_gold(7, user, served, 0.0) for user in range(1, 6) for served in range(400))


# --- marking ---------------------------------------------------------------------------------------------------
def test_only_verified_clips_become_gold_and_the_labels_freeze(project, people):
    with pytest.raises(gold.GoldError):
        gold.mark(ready_clip(project, 1), actor=people["maria"])
    clip = verified_clip(project, people, 2, ["annoyed", "sad"])
    marked = gold.mark(clip, actor=people["maria"])
    assert marked.labels == ["annoyed", "sad"] and marked.active and gold.is_gold(clip)
    assert AuditEvent.objects.filter(action="gold.marked", object_id=str(clip.pk)).exists()
    assert gold.unmark(clip, actor=people["maria"]) and not gold.is_gold(clip)
    assert not gold.unmark(clip, actor=people["maria"])
    assert gold.mark(clip, actor=people["maria"]).pk == marked.pk  # marked again: the same row


def test_marking_is_for_managers_only(client, project, people):
    clip = verified_clip(project, people, 1, ["calm"])
    url = reverse("annotations:clip-gold", args=[clip.pk])
    client.force_login(people["rita"])
    assert client.post(url, {"action": "mark"}).status_code == 404
    client.force_login(people["maria"])
    history = client.get(reverse("annotations:clip-history", args=[clip.pk]))
    assert b"Use as gold" in history.content
    assert client.post(url, {"action": "mark"}).status_code == 302
    assert gold.is_gold(clip)
    assert b"Stop using it as gold" in client.get(reverse("annotations:clip-history", args=[clip.pk])).content
    client.post(url, {"action": "unmark"})
    assert not gold.is_gold(clip)


# --- serving ---------------------------------------------------------------------------------------------------
def test_rate_zero_never_serves_gold(project, people):
    for n in range(3):
        gold.mark(verified_clip(project, people, 100 + n, ["calm"]), actor=people["maria"])
    for n in range(30):
        ready_clip(project, n + 1, priority=1.0)
    for _ in range(30):
        lease = queue.next_clip(people["alice"], project)
        assert not GoldClip.objects.filter(clip=lease.clip).exists()
        annotation = annotating.start(people["alice"], lease.clip)
        annotating.submit(annotation, labels=["calm"], base_version=annotation.version)
    assert not GoldAnswer.objects.exists()


def test_gold_is_mixed_in_at_the_rate_and_never_twice(project, people):
    update_config(project, {"gold": {"rate": 0.5}})
    golds = [verified_clip(project, people, 100 + n, ["calm"]) for n in range(40)]
    for clip in golds:
        gold.mark(clip, actor=people["maria"])
    for n in range(40):
        ready_clip(project, n + 1, priority=1.0)
    served = []
    for _ in range(40):
        lease = queue.next_clip(people["alice"], project)
        is_gold = GoldClip.objects.filter(clip=lease.clip).exists()
        served.append(is_gold)
        if is_gold:
            answer = gold.answer_for(people["alice"], lease.clip)
            gold.submit(answer, labels=["calm"], base_version=answer.version)
        else:
            annotation = annotating.start(people["alice"], lease.clip)
            annotating.submit(annotation, labels=["calm"], base_version=annotation.version)
    # The same draws as draws_gold for served = 0, 1, ...: deterministic for this user and project.
    assert served == [gold.draws_gold(project.pk, people["alice"].pk, i, 0.5) for i in range(40)]
    assert 10 <= sum(served) <= 30
    answers = GoldAnswer.objects.filter(annotator=people["alice"])
    assert answers.count() == sum(served) == answers.values("gold").distinct().count()


def test_gold_is_not_served_to_its_annotator_nor_to_reviewers(project, people):
    update_config(project, {"gold": {"rate": 0.5}})
    clip = verified_clip(project, people, 100, ["calm"])  # Bob annotated it
    gold.mark(clip, actor=people["maria"])
    assert not gold._candidates(people["bob"], project).exists()
    assert gold._candidates(people["alice"], project).exists()
    assert not gold._eligible(people["rita"], project)  # a reviewer can read any clip's history


def test_a_reload_resumes_an_open_gold_item(project, people):
    update_config(project, {"gold": {"rate": 0.5}})
    gold.mark(verified_clip(project, people, 100, ["calm"]), actor=people["maria"])
    ready_clip(project, 1, priority=1.0)
    user = people["alice"]
    served = 0
    while not gold.draws_gold(project.pk, user.pk, served, 0.5):  # reach a draw that says gold
        lease = queue.next_clip(user, project)
        annotating.start(user, lease.clip)  # the clip page opens it: one more item served
        queue.skip(user, lease.clip, "not now")
        ready_clip(project, 10 + served, priority=1.0)
        served += 1
    lease = queue.next_clip(user, project)
    assert gold.has_open(user, lease.clip)
    ClipLease.objects.filter(pk=lease.pk).delete()  # a manager released it, or it expired and was cleaned
    assert queue.next_clip(user, project).clip == lease.clip
    with pytest.raises(queue.QueueError):
        queue.claim(user, lease.clip)  # never an annotation of the gold clip


def serve_gold_to(user, project, clip):
    """Serve this gold clip to this user now, whatever the draw."""
    GoldAnswer.objects.create(gold=clip.gold, annotator=user, served_at=clip.created_at)
    return gold.take(gold.answer_for(user, clip))


# --- answering -------------------------------------------------------------------------------------------------
def test_a_gold_answer_changes_no_annotation_verification_agreement_or_snapshot(project, people):
    irritated_means_annoyed(project)
    clip = verified_clip(project, people, 1, ["annoyed", "sad"])
    gold.mark(clip, actor=people["maria"])
    serve_gold_to(people["alice"], project, clip)
    annotations = list(Annotation.objects.values_list("pk", "version", "labels", "status"))
    reviews = Review.objects.count()
    before = quality.agreement_units(project)
    clip.refresh_from_db()
    state = (clip.label_state, clip.verified_at)

    answer = gold.answer_for(people["alice"], clip)
    answer = gold.save_draft(answer, labels=["irritated"], base_version=answer.version)
    done = gold.submit(answer, labels=["irritated", "happy"], base_version=answer.version, idempotency_key="k1")
    assert (done.status, done.precision, done.recall, done.f, done.score) == ("submitted", 0.5, 0.5, 0.5, 0.5)
    assert done.labels[0]["term"] == "irritated"

    assert list(Annotation.objects.values_list("pk", "version", "labels", "status")) == annotations
    assert Review.objects.count() == reviews
    assert quality.agreement_units(project) == before
    clip.refresh_from_db()
    assert (clip.label_state, clip.verified_at) == state
    snapshot = snapshots.freeze(project, actor=people["maria"])
    item = SnapshotItem.objects.get(snapshot=snapshot, clip=clip)
    assert item.labels == ["annoyed", "sad"] and item.annotator_ids == [people["bob"].pk]
    assert not ClipLease.objects.filter(user=people["alice"], clip=clip).exists()  # released on submit


def test_stale_and_repeated_submits(project, people):
    clip = verified_clip(project, people, 1, ["calm"])
    gold.mark(clip, actor=people["maria"])
    serve_gold_to(people["alice"], project, clip)
    answer = gold.answer_for(people["alice"], clip)
    with pytest.raises(annotating.Conflict):
        gold.submit(answer, labels=["calm"], base_version=answer.version + 5, idempotency_key="a")
    done = gold.submit(answer, labels=["calm"], base_version=answer.version, idempotency_key="a")
    again = gold.submit(answer, labels=["sad"], base_version=answer.version, idempotency_key="a")
    assert again.pk == done.pk and again.score == 1.0 and again.version == done.version
    with pytest.raises(annotating.Conflict):
        gold.submit(answer, labels=["sad"], base_version=done.version, idempotency_key="b")
    with pytest.raises(annotating.Conflict):
        gold.save_draft(answer, labels=["sad"], base_version=done.version)
    assert AuditEvent.objects.filter(action="gold.answered").count() == 1


# --- the page cannot tell ----------------------------------------------------------------------------------------
def post_json(client, url, body):
    return client.post(url, json.dumps(body), content_type="application/json")


def test_the_annotate_page_of_a_gold_item_looks_like_any_other(client, project, people):
    clip = verified_clip(project, people, 1, ["calm"])
    gold.mark(clip, actor=people["maria"])
    other = ready_clip(project, 2, priority=1.0)
    ready_clip(project, 3, priority=0.5)
    serve_gold_to(people["alice"], project, clip)
    client.force_login(people["alice"])

    page = client.get(reverse("annotations:clip-annotate", args=[clip.pk]) + "?take=1")
    assert page.status_code == 200
    assert b"gold" not in page.content.lower()
    normal = client.get(reverse("annotations:clip-annotate", args=[other.pk]) + "?take=1")

    def data(response):
        text = response.content.decode()
        start = text.index('id="clip-data"')
        return json.loads(text[text.index(">", start) + 1:text.index("</script>", start)])

    gold_page, normal_page = data(page), data(normal)
    assert gold_page["annotation"] == {"version": 1, "labels": [], "status": "draft"} == normal_page["annotation"]
    assert gold_page["editable"] and set(gold_page) == set(normal_page)
    assert gold_page["urls"]["submit"] == reverse("annotations:clip-submit", args=[clip.pk])

    draft = post_json(client, reverse("annotations:clip-draft", args=[clip.pk]), {"labels": ["calm"], "version": 1})
    assert draft.status_code == 200 and draft.json()["annotation"]["version"] == 2
    assert b"gold" not in draft.content.lower()
    stale = post_json(client, reverse("annotations:clip-draft", args=[clip.pk]), {"labels": ["sad"], "version": 1})
    assert stale.status_code == 409 and stale.json()["stored"]["version"] == 2
    beat = client.post(reverse("annotations:clip-heartbeat", args=[clip.pk]), {"kind": "annotate"})
    assert beat.status_code == 200
    done = post_json(client, reverse("annotations:clip-submit", args=[clip.pk]),
                     {"labels": ["calm"], "version": 2, "key": "k"})
    assert done.status_code == 200 and b"gold" not in done.content.lower()
    assert done.json()["annotation"]["status"] == "submitted" and "/clips/" in done.json()["next"]
    assert GoldAnswer.objects.get(annotator=people["alice"]).score == 1.0
    assert not Annotation.objects.filter(clip=clip, annotator=people["alice"]).exists()
    # Read only afterwards, as a submitted annotation.
    after = client.get(reverse("annotations:clip-annotate", args=[clip.pk]))
    assert after.status_code == 200 and not data(after)["editable"]


def test_an_answered_gold_item_is_in_recent_work_and_its_history_gives_feedback(client, project, people):
    """Before the submit, the work page and the history read as for any draft (listed; no history yet). After
    it, the clip stays in "My recent clips" like any submitted one, and its history tells the annotator it was
    a quality check, with their answer beside the verified labels."""
    clip = verified_clip(project, people, 1, ["calm", "relieved"])
    gold.mark(clip, actor=people["maria"])
    mine = ready_clip(project, 2, priority=1.0)
    submit(people["alice"], mine, ["sad"])
    serve_gold_to(people["alice"], project, clip)
    client.force_login(people["alice"])
    work = reverse("annotations:work", args=[project.slug])
    history = reverse("annotations:clip-history", args=[clip.pk])

    post_json(client, reverse("annotations:clip-draft", args=[clip.pk]), {"labels": ["calm"], "version": 1})
    recent = [(row.clip_id, row.status) for row in client.get(work).context["recent"]]
    assert recent == [(clip.pk, "draft"), (mine.pk, "submitted")]
    assert client.get(history).status_code == 404

    done = post_json(client, reverse("annotations:clip-submit", args=[clip.pk]),
                     {"labels": ["calm", "anxious"], "version": 2, "key": "k"})
    assert done.status_code == 200
    page = client.get(work)
    assert [(row.clip_id, row.status) for row in page.context["recent"]] == [
        (clip.pk, "submitted"), (mine.pk, "submitted")]
    assert page.content.decode().count(history) == 1
    feedback = client.get(history)
    assert feedback.status_code == 200
    text = feedback.content.decode()
    assert "This clip was a quality check" in text
    section = text[text.index('id="gold-feedback"'):text.index("</section>", text.index('id="gold-feedback"'))]
    assert "anxious" in section and "relieved" in section
    # Bob, whose submit verified it, sees its history as before, without the feedback.
    client.force_login(people["bob"])
    assert b"quality check" not in client.get(history).content


def test_skipping_a_gold_item_closes_it_unscored(client, project, people):
    clip = verified_clip(project, people, 1, ["calm"])
    gold.mark(clip, actor=people["maria"])
    ready_clip(project, 2, priority=1.0)
    serve_gold_to(people["alice"], project, clip)
    client.force_login(people["alice"])
    response = client.post(reverse("annotations:clip-skip", args=[clip.pk]), {"reason": "no face"})
    assert response.status_code == 302
    answer = GoldAnswer.objects.get(annotator=people["alice"])
    assert answer.status == "skipped" and answer.score is None
    assert gold.gold_accuracy(project)["annotators"] == []


def test_outsiders_get_404(client, project, people, outsider):
    clip = verified_clip(project, people, 1, ["calm"])
    gold.mark(clip, actor=people["maria"])
    serve_gold_to(people["alice"], project, clip)
    client.force_login(outsider)
    for name in ("clip-annotate", "clip-history"):
        assert client.get(reverse(f"annotations:{name}", args=[clip.pk])).status_code == 404, name
    assert post_json(client, reverse("annotations:clip-submit", args=[clip.pk]),
                     {"labels": ["calm"], "version": 1}).status_code == 404
    assert client.post(reverse("annotations:clip-gold", args=[clip.pk]), {"action": "unmark"}).status_code == 404
    members = reverse("annotations:members", args=[project.slug])
    assert client.get(members).status_code == 404
    assert gold.is_gold(clip)


def test_a_vocabulary_merge_rescores_earlier_answers(project, people, django_capture_on_commit_callbacks):
    """Labels resolve when read, so a merge moves the gold scores as it moves the dashboard's counts: after
    "irritated" is merged into "annoyed", Alice's earlier "irritated" for "annoyed" is a match. Carol's answer,
    which uses neither word, is not rewritten; no answer's updated_at moves."""
    from annotations.services import vocabulary_governance as governance

    answered(project, people, people["alice"], [(["annoyed"], ["irritated"])])
    answered(project, people, people["carol"], [(["calm"], ["sad"])])
    alice = GoldAnswer.objects.get(annotator=people["alice"])
    carol = GoldAnswer.objects.get(annotator=people["carol"])
    assert (alice.f, alice.score) == (0.0, 0.5)  # two terms of one family: half credit
    touched = {a.pk: a.updated_at for a in GoldAnswer.objects.all()}

    with django_capture_on_commit_callbacks(execute=True):
        governance.apply(project, governance.plan_merge(project, "irritated", "annoyed"), actor=people["maria"])
    alice.refresh_from_db()
    assert (alice.precision, alice.recall, alice.f, alice.score) == (1.0, 1.0, 1.0, 1.0)
    assert {a.pk: a.updated_at for a in GoldAnswer.objects.all()} == touched
    assert GoldAnswer.objects.get(pk=carol.pk).score == carol.score == 0.0
    person = next(p for p in gold.gold_accuracy(project)["annotators"] if p["username"] == "alice")
    assert person["f"] == 1.0
    # Scoring again with nothing changed writes nothing.
    assert gold.rescore(project) == 0


# --- accuracy, the flag and the manager's action --------------------------------------------------------------
def answered(project, people, user, pairs):
    """Gold clips with these (gold labels, answer) pairs, each served to and answered by `user`."""
    for i, (key, labels) in enumerate(pairs):
        clip = verified_clip(project, people, 1000 + GoldClip.objects.count() * 10 + i, key)
        gold.mark(clip, actor=people["maria"])
        serve_gold_to(user, project, clip)
        answer = gold.answer_for(user, clip)
        gold.submit(answer, labels=labels, base_version=answer.version)


def test_flagged_below_the_floor_after_min_answers(project, people):
    update_config(project, {"gold": {"accuracy_floor": 0.7, "min_answers": 3}})
    answered(project, people, people["alice"], [(["calm"], ["sad"])] * 2)  # score 0 twice
    answered(project, people, people["carol"], [(["calm"], ["calm"])] * 3)
    report = gold.gold_accuracy(project)
    alice = next(p for p in report["annotators"] if p["username"] == "alice")
    assert (alice["n"], alice["score"], alice["flagged"]) == (2, 0.0, False)  # too few answers yet
    answered(project, people, people["alice"], [(["annoyed", "sad"], ["furious", "sad"])])  # score 0.75
    report = gold.gold_accuracy(project)
    assert report["floor"] == 0.7 and report["min_answers"] == 3 and report["gold_clips"] == 6
    alice, carol = report["annotators"]  # flagged first
    assert alice["username"] == "alice" and alice["flagged"] and alice["n"] == 3
    assert alice["score"] == 0.25 and alice["f"] == pytest.approx(0.5 / 3, abs=1e-4)  # rounded to 4 places
    assert alice["family_f"] == pytest.approx(1 / 3, abs=1e-4)
    assert sum(w["n"] for w in alice["weeks"]) == 3 and alice["weeks"][0]["week"] <= alice["last_at"][:10]
    assert (carol["flagged"], carol["score"]) == (False, 1.0)
    json.dumps(report)  # plain JSON for the dashboard's stored figures
    assert set(gold.flagged(project)) == {people["alice"].pk}


def test_members_page_flags_and_sends_work_to_review(client, project, people):
    update_config(project, {"gold": {"min_answers": 1}})
    set_membership(project=project, user=people["alice"], role=Role.ANNOTATOR, trusted=True)
    mine = ready_clip(project, 1, priority=0.0)
    submit(people["alice"], mine, ["calm"])  # trusted: verified without review
    answered(project, people, people["alice"], [(["calm"], ["sad"])])
    membership = Membership.objects.get(project=project, user=people["alice"])
    url = reverse("annotations:members", args=[project.slug])

    client.force_login(people["rita"])  # a reviewer is no manager
    assert client.post(url, {"action": "review-work", "membership": membership.pk}).status_code == 404
    client.force_login(people["maria"])
    page = client.get(url)
    assert b"below the floor" in page.content and b"Send their work to review" in page.content
    response = client.post(url, {"action": "review-work", "membership": membership.pk})
    assert response.status_code == 302
    mine.refresh_from_db()
    assert mine.review_requested_at is not None
    assert list(queue.review_candidates(people["rita"], project)) == [mine]
    membership.refresh_from_db()
    assert not membership.trusted
    assert AuditEvent.objects.filter(action="gold.work_sent_to_review").exists()


def test_one_answer_per_gold_clip_and_person_in_the_database(project, people):
    from django.db import IntegrityError, transaction

    clip = verified_clip(project, people, 1, ["calm"])
    gold.mark(clip, actor=people["maria"])
    serve_gold_to(people["alice"], project, clip)
    with pytest.raises(IntegrityError), transaction.atomic():
        GoldAnswer.objects.create(gold=clip.gold, annotator=people["alice"], served_at=clip.created_at)
    with pytest.raises(IntegrityError), transaction.atomic():
        GoldAnswer.objects.filter(annotator=people["alice"]).update(status="submitted")  # unscored


def test_a_gold_lease_cannot_move_to_someone_else(project, people):
    clip = verified_clip(project, people, 1, ["calm"])
    gold.mark(clip, actor=people["maria"])
    lease = serve_gold_to(people["alice"], project, clip)
    with pytest.raises(queue.QueueError):
        queue.reassign(lease, people["carol"], actor=people["maria"])
    assert queue.release_lease(lease, actor=people["maria"])  # releasing is fine: the answer stays open
    assert gold.has_open(people["alice"], clip)


def test_an_unmarked_gold_item_is_not_resumed_but_can_still_be_answered(project, people):
    clip = verified_clip(project, people, 1, ["calm"])
    gold.mark(clip, actor=people["maria"])
    serve_gold_to(people["alice"], project, clip)
    gold.unmark(clip, actor=people["maria"])
    assert gold.resume(people["alice"], project) is None
    answer = gold.answer_for(people["alice"], clip)
    assert gold.submit(answer, labels=["calm"], base_version=answer.version).score == 1.0


def test_a_bad_member_id_is_a_404(client, project, people):
    client.force_login(people["maria"])
    url = reverse("annotations:members", args=[project.slug])
    for value in ("abc", "99999", ""):
        assert client.post(url, {"action": "review-work", "membership": value}).status_code == 404
