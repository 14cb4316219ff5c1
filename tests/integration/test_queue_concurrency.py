"""The queue under contention on PostgreSQL: 2,000 claims from 32 threads, and no clip is ever held beyond its
overlap (SELECT ... FOR UPDATE SKIP LOCKED plus the re-count under the row lock)."""

import threading
from collections import Counter

import pytest
from django.db import connection, connections

from annotations.models import Annotation, Clip, ClipLease, Role
from annotations.services import annotating, queue
from annotations.services.projects import create_project, set_membership, update_config

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]
THREADS, CLAIMS, OVERLAP = 32, 2000, 2


@pytest.fixture
def busy_project(django_user_model):
    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL only (SKIP LOCKED): CI's second pass sets DATABASE_URL=postgres://...")
    owner = django_user_model.objects.create_user("owner", password="pw-owner-12345")
    project = create_project(name="Contended", creator=owner)
    update_config(project, {"annotation": {"overlap": OVERLAP}})
    Clip.objects.bulk_create(
        Clip(project=project, file=f"clips/{n}.mp4", sha256=f"{n:064x}", name=f"c{n}", size_bytes=1,
             status=Clip.Status.READY, duration=1.0, priority=(n % 97) / 97)
        for n in range(CLAIMS // OVERLAP + 50))
    users = []
    for i in range(THREADS):
        user = django_user_model.objects.create_user(f"a{i}", password="pw-annotator-1")
        set_membership(project=project, user=user, role=Role.ANNOTATOR)
        users.append(user)
    return project, users


def run_threads(target, users):
    errors = []

    def wrapped(user):
        try:
            target(user)
        except BaseException as exc:  # noqa: BLE001  (reported by the test below)
            errors.append(repr(exc))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=wrapped, args=(u,)) for u in users]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not any(t.is_alive() for t in threads), "a claimer hung"
    assert errors == []


def test_simultaneous_claims_never_exceed_the_overlap(busy_project):
    project, users = busy_project
    Clip.objects.filter(project=project).exclude(name__in=[f"c{n}" for n in range(8)]).update(
        status=Clip.Status.FAILED)  # 8 clips x overlap 2 = 16 places for 32 claimers
    barrier = threading.Barrier(THREADS)

    def claim(user):
        barrier.wait()
        queue.next_clip(user, project)

    run_threads(claim, users)
    holders = Counter(ClipLease.objects.filter(clip__project=project).values_list("clip_id", flat=True))
    assert max(holders.values()) <= OVERLAP and sum(holders.values()) == 8 * OVERLAP


def test_two_thousand_claims_from_32_threads(busy_project):
    project, users = busy_project
    claims, lock = [], threading.Lock()

    def work(user):
        while True:
            with lock:
                if len(claims) >= CLAIMS:
                    return
            lease = queue.next_clip(user, project)
            if lease is None:
                return
            with lock:
                claims.append((lease.clip_id, user.pk))
            draft = annotating.start(user, lease.clip)
            annotating.submit(draft, labels=["calm"], base_version=draft.version)

    run_threads(work, users)
    assert len(claims) >= CLAIMS
    per_clip = Counter(clip for clip, _ in claims)
    assert max(per_clip.values()) <= OVERLAP, "a clip was handed out beyond its overlap"
    assert len(set(claims)) == len(claims), "someone got the same clip twice"
    submitted = Counter(Annotation.objects.filter(clip__project=project, status="submitted")
                        .values_list("clip_id", flat=True))
    assert max(submitted.values()) <= OVERLAP
    assert not ClipLease.objects.filter(clip__project=project).exists()  # every claim ended in a submit
