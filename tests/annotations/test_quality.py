"""Quality figures (services.quality): agreement over canonical terms and model quality against the verified
labels, checked against values computed by hand on a small fixture (the arithmetic is in the comments)."""

from datetime import timedelta
from itertools import count

import pytest
from django.db.models import F
from django.utils import timezone

from annotations.models import Annotation, Clip, EmotionTerm, ModelVersion, Prediction, Project, Review
from annotations.services import quality

pytestmark = pytest.mark.django_db

_n = count(1)
T0 = timezone.now() - timedelta(days=30)


# --- a small project, by rows ---------------------------------------------------------------------------------
def make_clip(project, split="test", name=None):
    n = next(_n)
    return Clip.objects.create(project=project, file=f"clips/q{n}.mp4", original_name=f"q{n}.mp4",
                               name=name or f"q{n:03d}", sha256=f"{n:064x}", size_bytes=10, split=split)


def submit(clip, user, words, status="submitted"):
    return Annotation.objects.create(clip=clip, annotator=user, labels=[{"term": w, "source": "human"} for w in words],
                                     status=status, submitted_at=timezone.now() if status == "submitted" else None)


def verify(clip, user, reviewer, words, *, fix=None):
    annotation = submit(clip, user, words)
    Review.objects.create(annotation=annotation, reviewer=reviewer, decision="fix" if fix else "accept",
                          annotation_version=1, fixed_labels=[{"term": w} for w in fix] if fix else None)
    return annotation


def predict(clip, backend, version, words, *, at=None, model=None):
    row = Prediction.objects.create(clip=clip, backend=backend, model_version=version, model=model,
                                    labels=[{"term": w, "score": 0.5, "source": backend} for w in words])
    Prediction.objects.filter(pk=row.pk).update(created_at=at or T0)
    return row


@pytest.fixture
def people(project, annotator, manager, django_user_model):
    users = {"alice": annotator, "maria": manager}
    for name in ("bob", "carol", "vera"):
        users[name] = django_user_model.objects.create_user(name, password=f"pw-{name}-12345")
    return users


@pytest.fixture
def agreement_clips(project, people):
    """Three units (clips with two or more submitted annotations) and two clips that are not units."""
    alice, bob, carol = people["alice"], people["bob"], people["carol"]
    u1, u2, u3, single, drafted = (make_clip(project, "train") for _ in range(5))
    submit(u1, alice, ["happy"])
    submit(u1, bob, ["Glad"])  # a synonym of happy (and another case): the same canonical term
    submit(u2, alice, ["sad"])
    submit(u2, bob, ["sad", "angry"])
    submit(u3, alice, ["angry"])
    submit(u3, bob, ["annoyed"])
    submit(u3, carol, ["mad"])  # a synonym of angry
    submit(single, alice, ["calm"])  # one annotator: not a unit
    submit(drafted, alice, ["calm"])
    submit(drafted, bob, ["calm"], status="draft")  # a draft is not an answer: not a unit either
    return u1, u2, u3


# Canonical sets per unit: u1 = {happy}, {happy}; u2 = {sad}, {sad, angry}; u3 = A {angry}, B {annoyed},
# C {angry}. MASI distance: equal sets 0; {sad} vs {sad, angry} (a subset): 1 - J*M = 1 - 0.5*0.67 = 0.665;
# disjoint sets 1.
#
# Project alpha: n = 7 values.
#   D_o = (1/n) * sum over units of (sum over ordered pairs of d) / (m_u - 1)
#       = (0 + 2*0.665/1 + (1+1+0+0+1+1)/2) / 7 = (1.33 + 2) / 7 = 3.33/7
#   Value counts: {happy} 2, {sad} 1, {sad, angry} 1, {angry} 2, {annoyed} 1. Unordered pairs c_x*c_y*d:
#     happy-sad 2, happy-sadangry 2, happy-angry 4, happy-annoyed 2, sad-sadangry 0.665, sad-angry 2,
#     sad-annoyed 1, sadangry-angry 2*0.665 = 1.33, sadangry-annoyed 1, angry-annoyed 2  -> 17.995
#   D_e = 2 * 17.995 / (7*6) = 35.99/42
#   alpha = 1 - (3.33/7) / (35.99/42) = 1 - 19.98/35.99
PROJECT_ALPHA = 1 - 19.98 / 35.99
# Mean pairwise Jaccard per unit: u1 1; u2 1/2; u3 (J(A,B) 0 + J(A,C) 1 + J(B,C) 0)/3 = 1/3.
PROJECT_JACCARD = (1 + 1 / 2 + 1 / 3) / 3


def test_project_agreement_over_canonical_terms(project, agreement_clips):
    figures = quality.project_agreement(project)
    assert figures["n"] == 3
    assert figures["alpha"] == pytest.approx(PROJECT_ALPHA)
    assert figures["jaccard"] == pytest.approx(PROJECT_JACCARD)


def test_each_annotator_against_the_others(project, agreement_clips):
    rows = {row["annotator"]: row for row in quality.project_agreement(project)["annotators"]}
    assert list(rows) == ["alice", "bob", "carol"]
    # alice coded all three units: Jaccard against the others u1 1, u2 1/2, u3 mean(J(A,B) 0, J(A,C) 1) = 1/2;
    # alpha over her units, which are all units: the project's alpha.
    assert rows["alice"]["n"] == 3
    assert rows["alice"]["jaccard"] == pytest.approx((1 + 1 / 2 + 1 / 2) / 3)
    assert rows["alice"]["alpha"] == pytest.approx(PROJECT_ALPHA)
    # bob: u1 1, u2 1/2, u3 mean(J(B,A) 0, J(B,C) 0) = 0.
    assert rows["bob"]["jaccard"] == pytest.approx((1 + 1 / 2 + 0) / 3)
    # carol coded u3 only: Jaccard mean(J(C,A) 1, J(C,B) 0) = 1/2. Alpha over u3: values {angry} x2, {annoyed};
    # D_o = ((1+1+0+0+1+1)/2)/3 = 2/3; D_e = 2*(2*1*1)/(3*2) = 2/3; alpha = 1 - 1 = 0.
    assert rows["carol"] == {"annotator_id": rows["carol"]["annotator_id"], "annotator": "carol",
                             "alpha": pytest.approx(0.0), "jaccard": pytest.approx(0.5), "n": 1}


def test_agreement_per_family(project, agreement_clips):
    rows = {row["family"]: row for row in quality.project_agreement(project)["families"]}
    assert list(rows) == ["anger", "joy", "sadness"]  # only the families someone used
    # anger (angry, annoyed): presence per coder u1 [0, 0], u2 [0, 1], u3 [1, 1, 1]; n = 7 values.
    # D_o = (2/1)/7 = 2/7; counts absent 3, present 4: D_e = 2*3*4/(7*6) = 4/7; alpha = 1 - (2/7)/(4/7) = 0.5.
    # Jaccard within anger where used: u2 J({}, {angry}) = 0; u3 (0 + 1 + 0)/3 = 1/3; mean 1/6 over 2 units.
    assert rows["anger"] == {"family": "anger", "alpha": pytest.approx(0.5), "jaccard": pytest.approx(1 / 6),
                             "n": 3, "used": 2}
    # joy: both coders of u1 and nobody else: no disagreement, alpha 1; Jaccard on u1 1.
    assert rows["joy"] == {"family": "joy", "alpha": 1.0, "jaccard": 1.0, "n": 3, "used": 1}
    assert rows["sadness"]["alpha"] == 1.0 and rows["sadness"]["used"] == 1


def test_a_synonym_added_to_the_project_vocabulary_counts_as_the_same_term(project, people):
    clip = make_clip(project)
    submit(clip, people["alice"], ["annoyed"])
    submit(clip, people["bob"], ["grumpish"])  # a word the vocabulary does not know: only itself
    assert quality.project_agreement(project)["jaccard"] == 0.0
    annoyed = EmotionTerm.objects.get(project=project, term="annoyed")
    EmotionTerm.objects.create(project=project, term="grumpish", kind="synonym", canonical=annoyed)
    Project.objects.filter(pk=project.pk).update(vocabulary_version=F("vocabulary_version") + 1)
    project.refresh_from_db()
    # No stored annotation changed; the figures are resolved when read.
    assert quality.project_agreement(project) | {"annotators": [], "families": []} == {
        "alpha": 1.0, "jaccard": 1.0, "n": 1, "annotators": [], "families": []}


def test_no_data_gives_none_not_an_error(project, people):
    figures = quality.project_agreement(project)
    assert figures == {"alpha": None, "jaccard": None, "n": 0, "annotators": [], "families": []}
    assert quality.model_quality(project) == []
    assert quality.label_distribution(project) == {"clips": 0, "families": {}, "terms": {}}


# --- model quality ---------------------------------------------------------------------------------------------
@pytest.fixture
def scored(project, people):
    """Verified test clips T1-T3, a test clip that is only submitted (T4), one verified and then rejected (T5),
    and verified train clips R1, R2; predictions of InternVL, the fusion and AffectGPT."""
    vera, maria, bob = people["vera"], people["maria"], people["bob"]
    t1, t2, t3, t4, t5 = (make_clip(project, "test", name=f"T{i}") for i in range(1, 6))
    r1, r2 = make_clip(project, "train", name="R1"), make_clip(project, "train", name="R2")
    verify(t1, vera, maria, ["happy", "excited"])
    verify(t2, vera, maria, ["angry"], fix=["sad"])  # the reviewer's fix is what counts
    verify(t3, vera, maria, ["angry"])
    submit(t4, vera, ["happy"])
    rejected = verify(t5, vera, maria, ["happy"])
    Review.objects.create(annotation=rejected, reviewer=bob, decision="reject", reason="no", annotation_version=1)
    verify(r1, vera, maria, ["calm"])
    verify(r2, vera, maria, ["glad", "happy"])  # one term, counted once
    model = ModelVersion.objects.create(project=project, backend="internvl", name="internvl:base+a1",
                                        base_model="tiny")
    ModelVersion.objects.filter(pk=model.pk).update(created_at=T0 - timedelta(days=1))
    v1 = "internvl:base+a1@8f"
    predict(t1, "internvl", v1, ["glad"], model=model)
    predict(t2, "internvl", v1, ["sad", "tired"], model=model)
    predict(t3, "internvl", v1, [], model=model)  # an empty answer scores 0
    predict(t4, "internvl", v1, ["happy"], model=model)
    predict(t5, "internvl", v1, ["happy"], model=model)
    predict(r1, "internvl", v1, ["calm"], model=model)
    predict(t1, "fused", "fused:v1", ["happy", "excited"], at=T0 + timedelta(days=2))
    predict(t2, "fused", "fused:v1", ["sad"], at=T0 + timedelta(days=1))
    predict(t4, "affectgpt", "affectgpt:v1", ["happy"])  # only on a clip that is not verified
    return {"v1": v1, "model": model}


def test_model_quality_on_the_test_split(project, scored):
    rows = quality.model_quality(project)
    assert [(m["backend"], m["model_version"]) for m in rows] == [("internvl", scored["v1"]), ("fused", "fused:v1")]
    internvl, fused = rows
    # InternVL, term level, on T1-T3 (T4 unverified, T5 rejected: not counted):
    #   T1 gold {happy, excited}, predicted {happy} ("glad"): P 1, R 1/2
    #   T2 gold {sad} (the fix), predicted {sad, tired}:       P 1/2, R 1
    #   T3 gold {angry}, predicted nothing:                    P 0, R 0
    #   P = (1 + 1/2 + 0)/3 = 1/2, R = (1/2 + 1 + 0)/3 = 1/2, F = 2PR/(P+R) = 1/2
    assert internvl["clips"] == 3 and internvl["metric"] == "vocabulary"
    assert (internvl["precision"], internvl["recall"], internvl["f"]) == pytest.approx((0.5, 0.5, 0.5))
    # Family level: T1 {joy} vs {joy}: 1, 1; T2 {sadness} vs {sadness} (tired is sadness too): 1, 1; T3 0, 0.
    family = internvl["vocabulary"]["family"]
    assert (family["precision"], family["recall"], family["n"]) == (pytest.approx(2 / 3), pytest.approx(2 / 3), 3)
    for name in ("precision", "recall", "f"):
        lo, hi = internvl["ci"][name]
        assert 0.0 <= lo <= internvl[name] <= hi <= 1.0
    # The fusion only on T1 and T2, both exact: 1, 1, 1 on 2 clips, and every resample gives 1.
    assert (fused["clips"], fused["precision"], fused["recall"], fused["f"]) == (2, 1.0, 1.0, 1.0)
    assert fused["ci"]["f"] == [1.0, 1.0]
    # The time axis: the registered model's creation; the fusion's first prediction on these clips.
    assert internvl["at"] == internvl["registered_at"] == ModelVersion.objects.get().created_at
    assert fused["registered_at"] is None and fused["at"] == T0 + timedelta(days=1)


def test_model_quality_on_all_verified_clips(project, scored):
    internvl = quality.model_quality(project, split="all")[0]
    # R1 joins: gold {calm}, predicted {calm}: P 1, R 1. P = R = (1 + 1/2 + 0 + 1)/4 = 5/8 = F.
    assert internvl["clips"] == 4
    assert (internvl["precision"], internvl["recall"], internvl["f"]) == pytest.approx((0.625, 0.625, 0.625))
    with pytest.raises(ValueError):
        quality.model_quality(project, split="dev")


def test_small_chunks_give_the_same_figures(project, scored):
    assert quality.model_quality(project, chunk=2) == quality.model_quality(project)


def test_label_distribution_over_verified_clips(project, scored):
    # T1 {happy, excited}, T2 {sad}, T3 {angry}, R1 {calm}, R2 {happy} (glad and happy: one term). T4 and T5
    # are not verified.
    assert quality.label_distribution(project) == {
        "clips": 5,
        "families": {"joy": 3, "anger": 1, "calm": 1, "sadness": 1},
        "terms": {"happy": 2, "angry": 1, "calm": 1, "excited": 1, "sad": 1}}


def test_an_erased_clip_is_not_counted(project, scored, people):
    from annotations.services import erasure

    before = quality.model_quality(project)[0]
    erasure.erase(project, {"names": ["T3"]}, actor=people["maria"])
    after = quality.model_quality(project)[0]
    # T3 (P 0, R 0) is gone: P = (1 + 1/2)/2 = 3/4, R = (1/2 + 1)/2 = 3/4.
    assert (before["clips"], after["clips"]) == (3, 2)
    assert (after["precision"], after["recall"]) == pytest.approx((0.75, 0.75))
    assert quality.label_distribution(project)["terms"].get("angry") is None


# --- the large-project paths give the same figures ----------------------------------------------------------------
def test_the_fast_path_reproduces_the_hand_computed_figures(project, agreement_clips, monkeypatch):
    monkeypatch.setattr(quality, "FAST_ALPHA_ABOVE", 0)
    assert quality.project_agreement(project)["alpha"] == pytest.approx(PROJECT_ALPHA, abs=1e-12)
