"""A manager in a real Chromium against `make run`: the project dashboard with every plot drawn and its numbers
under it, and the vocabulary page. The data are rows made with `manage.py shell` (two annotators who overlap,
reviews that verify test-split clips, pre-labels of two model versions and their fusion, gold answers, a
proposed term), so that every figure has something to show."""

import json
import uuid

import pytest

from tests.browser.pages import log_in, log_in_admin
from tests.browser.shots import shot

pytestmark = [pytest.mark.browser]

SETUP = """
import json, random
from datetime import timedelta
from django.contrib.auth import get_user_model
from django.utils import timezone
from annotations.models import (Annotation, Clip, EmotionTerm, GoldAnswer, GoldClip, ModelVersion, Prediction,
                                Review, Role)
from annotations.services.projects import create_project, set_membership
rng = random.Random(7)
project = create_project(name={name!r}, creator=None)
User = get_user_model()
people = []
for name in ("ana", "ben", "chloe"):
    user, _ = User.objects.get_or_create(username=name + "-" + project.slug[-6:])
    set_membership(project=project, user=user, role=Role.ANNOTATOR)
    people.append(user)
reviewer = User.objects.filter(is_superuser=True).first()
now = timezone.now()
sets = [["happy"], ["happy", "relieved"], ["sad"], ["anxious", "nervous"], ["angry"], ["surprised", "happy"],
        ["bored"], ["anxious"], ["calm"], ["frustrated", "angry"]]
near = {{"happy": "glad", "anxious": "worried", "angry": "annoyed", "sad": "down", "calm": "relaxed"}}
versions = {{}}
for backend, names in (("internvl", ["internvl:base", "internvl:run-3"]), ("affectgpt", ["affectgpt:ov"])):
    for i, vname in enumerate(names):
        mv = ModelVersion.objects.create(project=project, backend=backend, name=vname + "-" + project.slug[-6:],
                                         base_model="m", status="active" if i == len(names) - 1 else "retired")
        ModelVersion.objects.filter(pk=mv.pk).update(created_at=now - timedelta(days=20 - 12 * i))
        versions[mv.name] = (backend, 0.35 + 0.25 * i)
for n in range(60):
    truth = sets[n % len(sets)]
    day = now - timedelta(days=21 - n // 3)
    clip = Clip.objects.create(project=project, file=f"clips/d{{n}}.mp4", original_name=f"d{{n}}.mp4", name=f"dash-{{n}}",
                               sha256=f"{{n:060x}}dash", size_bytes=1, status="ready", duration=3.0, ready_at=day,
                               split="test" if n % 2 else "train", label_state="prelabeled")
    for vname, (backend, skill) in versions.items():
        guess = truth if rng.random() < skill else sets[rng.randrange(len(sets))]
        p = Prediction.objects.create(clip=clip, backend=backend, model_version=vname, model=ModelVersion.objects.get(name=vname),
                                      labels=[{{"term": t, "score": 0.8}} for t in guess])
        Prediction.objects.filter(pk=p.pk).update(created_at=day + timedelta(hours=1))
    p = Prediction.objects.create(clip=clip, backend="fused", model_version="fused:" + project.slug[-6:],
                                  labels=[{{"term": t, "score": 0.9}} for t in truth[:1]])
    Prediction.objects.filter(pk=p.pk).update(created_at=day + timedelta(hours=2))
    if n >= 50:
        continue
    coders = people[:2] if n % 3 else people[1:]
    first = None
    for k, user in enumerate(coders):
        words = truth if (k == 0 or rng.random() < 0.6) else [near.get(truth[0], truth[0])] + truth[1:]
        a = Annotation.objects.create(clip=clip, annotator=user, status="submitted", submitted_at=day + timedelta(hours=3 + k),
                                      labels=[{{"term": w, "source": "human"}} for w in words], lead_time=rng.uniform(20, 90))
        first = first or a
    if n < 40:
        Review.objects.create(annotation=first, reviewer=reviewer, decision="accept", annotation_version=1)
        Clip.objects.filter(pk=clip.pk).update(label_state="verified", verified_at=day + timedelta(hours=6))
    else:
        Clip.objects.filter(pk=clip.pk).update(label_state="submitted")
golds = [GoldClip.objects.create(project=project, clip=c, labels=["happy"]) for c in project.clips.filter(label_state="verified")[:6]]
for k, user in enumerate(people):
    for g, gold in enumerate(golds):
        score = [0.9, 0.85, 0.35][k] if g % 2 else [1.0, 0.8, 0.4][k]
        ans = GoldAnswer.objects.create(gold=gold, annotator=user, status="submitted", labels=[{{"term": "happy"}}],
                                        served_at=now - timedelta(days=14 - 2 * g),
                                        submitted_at=now - timedelta(days=14 - 2 * g), precision=score, recall=score,
                                        f=score, family_f=min(1.0, score + 0.1), score=score)
for word, days in (("hangry", 10), ("snackish", 3), ("zenful", 2), ("frustated", 1)):
    t = EmotionTerm.objects.create(project=project, term=word, kind="term", family="unassigned", valence="ambiguous",
                                   source="human", flagged=True)
    EmotionTerm.objects.filter(pk=t.pk).update(created_at=now - timedelta(days=days))
print(json.dumps({{"slug": project.slug}}))
"""


@pytest.fixture(scope="module")
def dashboard_project(embedded_platform):
    name = f"Dashboard {uuid.uuid4().hex[:6]}"
    result = embedded_platform.manage("shell", "-c", SETUP.format(name=name))
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_a_manager_reads_the_dashboard_and_the_vocabulary(embedded_platform, dashboard_project, page):
    from playwright.sync_api import expect

    platform, slug = embedded_platform, dashboard_project["slug"]
    errors = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    log_in_admin(page, platform)
    page.goto(f"{platform.url}/p/{slug}/")
    page.get_by_role("link", name="Dashboard").click()

    for section in ("progress", "throughput", "agreement", "labels", "models", "gold", "drift"):
        expect(page.locator(f"#{section} figure.plot svg").first).to_be_visible()
    expect(page.locator("figure.plot svg")).to_have_count(12)
    # drawn, not empty: lines for progress, bars with intervals for the models
    expect(page.locator("#progress svg g.series")).to_have_count(4)
    expect(page.locator("#models svg g.bar")).to_have_count(4)  # two internvl versions, affectgpt, fused
    expect(page.locator("#models svg g.bar line").first).to_be_attached()
    expect(page.locator("#agreement [data-figure=units]")).to_have_text("50")
    expect(page.locator("#gold-table tr.flagged")).to_have_count(1)
    page.locator("#models").scroll_into_view_if_needed()
    page.locator("#models summary").first.click()
    expect(page.locator("#models figure.plot table").first).to_be_visible()
    page.locator("#models summary").first.click()
    shot(page, "dashboard")

    page.get_by_role("button", name="Recompute now").click()
    expect(page.locator("ul.messages")).to_contain_text("being recomputed")

    page.goto(f"{platform.url}/p/{slug}/vocabulary/")
    expect(page.get_by_text("hangry").first).to_be_visible()
    shot(page, "vocabulary", full_page=False)
    # A merge: previewed with the labels it changes, then confirmed; the stored words stay as they are.
    page.get_by_label("Term to merge", exact=False).fill("worried")
    page.get_by_label("Into", exact=True).fill("anxious")
    page.get_by_role("button", name="Preview merge").click()
    expect(page.locator("#preview [data-count=annotations]")).not_to_have_text("0")
    shot(page, "vocabulary-preview", full_page=False)
    page.get_by_role("button", name="Confirm", exact=False).click()
    expect(page.locator("ul.messages")).to_contain_text("done")

    # Suggestions: the typo is one; "Not the same" takes it off the list and lists it as dismissed.
    page.goto(f"{platform.url}/p/{slug}/vocabulary/suggestions")
    row = page.locator('#suggestions tr[data-pair="frustated|frustrated"]')
    expect(row).to_contain_text("spelled like")
    shot(page, "vocabulary-suggestions", full_page=False)
    row.get_by_role("button", name="Not the same", exact=False).click()
    expect(page.locator("ul.messages")).to_contain_text("will not be suggested again")
    expect(row).to_have_count(0)
    expect(page.locator('#dismissed tr[data-pair="frustated|frustrated"]')).to_be_visible()
    assert not [e for e in errors if "Content Security Policy" in e or "Refused" in e], errors


def test_an_annotator_finds_an_answered_gold_clip_in_recent_work_with_feedback(embedded_platform,
                                                                               dashboard_project, page):
    from playwright.sync_api import expect

    platform, slug = embedded_platform, dashboard_project["slug"]
    result = platform.manage("shell", "-c", f"""
import json
from django.contrib.auth import get_user_model
from annotations.models import Annotation, GoldAnswer
user = get_user_model().objects.get(username="chloe-" + {slug!r}[-6:])
user.set_password("chloe-pass-12345"); user.save()
# One she never annotated, as the queue would have served it.
answer = (GoldAnswer.objects.filter(annotator=user, gold__project__slug={slug!r})
          .exclude(gold__clip__in=Annotation.objects.filter(annotator=user).values("clip")).order_by("pk").first())
print(json.dumps({{"user": user.username, "clip": answer.gold.clip_id, "name": answer.gold.clip.name}}))
""")
    assert result.returncode == 0, result.stderr[-3000:]
    info = json.loads(result.stdout.strip().splitlines()[-1])
    log_in(page, platform, info["user"], "chloe-pass-12345")
    page.goto(f"{platform.url}/p/{slug}/work/")
    history = f"/clips/{info['clip']}/history"
    expect(page.locator(f'a[href="{history}"]')).to_have_count(1)
    page.locator(f'a[href="{history}"]').click()
    feedback = page.locator("#gold-feedback")
    expect(feedback).to_contain_text("This clip was a quality check")
    expect(feedback.locator(".chip").first).to_be_visible()
    shot(page, "gold-feedback", full_page=False)
