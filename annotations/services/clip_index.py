"""Derived columns and rows that let the managers' clip list filter a million clips through indexes: the
clip's split, its backends' disagreement, and ClipLabel rows (canonical term and family of what the fusion
proposed, what annotators submitted and what was verified). Everything here is recomputable from the
source rows; call index_clip after any of them changes.

Project-wide rebuilds run in Celery tasks, never in a request, walking the clips by keyset in CHUNKs: a
vocabulary change re-resolves terms and families (reindex_project), a new split rule moves clips (resplit).
"""

from __future__ import annotations

from collections.abc import Iterable

from django.db import IntegrityError, transaction

from .. import dispatch, selectors
from ..models import Annotation, Clip, ClipLabel, Prediction, Project
from ..project_config import project_config

CHUNK = 2000
SLICE_CHUNKS = 50  # chunks per reindex task: about a minute of work, then a new task goes on


def index_clip(clip: Clip) -> None:
    index_clips([clip])


def index_clips(clips: Iterable[Clip]) -> None:
    clips = list(clips)
    by_project: dict[int, list[Clip]] = {}
    for clip in clips:
        by_project.setdefault(clip.project_id, []).append(clip)
    for group in by_project.values():
        try:
            _index_group(group)
        except IntegrityError:
            # Another index of one of these clips (a submit while a reindex task runs) committed its rows
            # after our delete had started: read the sources again and replace them.
            _index_group(group)


def _index_group(group: list[Clip]) -> None:
    from .vocabulary import project_vocabulary

    project = group[0].project
    vocab = project_vocabulary(project)
    config = project_config(project)
    ids = [c.pk for c in group]
    fused: dict[int, list] = {}
    for row in Prediction.objects.filter(clip_id__in=ids, backend="fused").order_by("clip_id", "-created_at", "-id"):
        fused.setdefault(row.clip_id, row.labels)
    human: dict[int, list] = {}
    for clip_id, labels in Annotation.objects.filter(clip_id__in=ids, status=Annotation.Status.SUBMITTED
                                                     ).values_list("clip_id", "labels"):
        human.setdefault(clip_id, []).extend(labels)
    verified = selectors.verified_labels(project, Clip.objects.filter(pk__in=ids))
    rows = []
    for clip in group:
        seen = set()
        for source, labels in ((ClipLabel.Source.MODEL, fused.get(clip.pk, [])),
                               (ClipLabel.Source.HUMAN, human.get(clip.pk, [])),
                               (ClipLabel.Source.VERIFIED, verified.get(clip.pk, []))):
            for lab in labels:
                word = lab.get("term") if isinstance(lab, dict) else str(lab)
                if not word:
                    continue
                term = (vocab.canonical(word) or word)[:64]
                if (source, term) in seen:
                    continue
                seen.add((source, term))
                score = lab.get("score") if isinstance(lab, dict) and source == ClipLabel.Source.MODEL else None
                rows.append(ClipLabel(clip=clip, project_id=project.pk, term=term, source=source,
                                      family=(vocab.family(word) or "unassigned")[:32], score=score))
    moved = []
    for clip in group:
        split = selectors.clip_split(clip, config)
        disagreement = (clip.al_signals or {}).get("disagreement")
        if clip.split != split or clip.disagreement != disagreement:
            moved.append((clip, Clip(pk=clip.pk, split=split, disagreement=disagreement)))
    with transaction.atomic():
        ClipLabel.objects.filter(clip_id__in=ids).delete()
        ClipLabel.objects.bulk_create(rows, batch_size=CHUNK)
        Clip.objects.bulk_update([new for _, new in moved], ["split", "disagreement"], batch_size=CHUNK)
    for clip, new in moved:
        clip.split, clip.disagreement = new.split, new.disagreement


def reindex_project(project: Project, terms: Iterable[str] | None = None, *, after: int = 0) -> int:
    """Rebuild the index of a project's clips after its vocabulary changed. With `terms`, only the clips
    carrying a ClipLabel that is one of those words under normalisation (an unknown word is stored as it was
    written, "Zoom-Fatigued" say, until the vocabulary learns it); without, every clip. Works through
    SLICE_CHUNKS chunks of clips after the id `after`, then queues a task for the rest, so no task runs near
    the time limit and a lost worker repeats one slice, not the whole project. Returns the clips done here."""
    from ml.vocabulary import normalise

    if terms is None:
        ids = Clip.objects.filter(project=project).order_by("pk").values_list("pk", flat=True)
        field = "pk"
    else:
        terms = sorted(terms)
        keys = {normalise(t) for t in terms}
        spellings = [t for t in ClipLabel.objects.filter(project=project).values_list("term", flat=True).distinct()
                     if normalise(t) in keys]
        if not spellings:
            return 0
        ids = (ClipLabel.objects.filter(project=project, term__in=spellings).order_by("clip_id")
               .values_list("clip_id", flat=True).distinct())
        field = "clip_id"
    done, last = 0, after
    for _ in range(SLICE_CHUNKS):
        chunk = list(ids.filter(**{f"{field}__gt": last})[:CHUNK])
        if not chunk:
            return done
        last = chunk[-1]
        # A fresh project row per chunk: a change made meanwhile is read with its new vocabulary version.
        index_clips(Clip.objects.filter(pk__in=chunk).select_related("project").order_by("pk"))
        done += len(chunk)
    dispatch.reindex_project(project.pk, terms, after=last)
    return done


def resplit(project: Project) -> int:
    """Recompute every clip's stored split (the ratios or the group key changed). Returns clips changed."""
    config = project_config(project)
    changed = 0
    qs = project.clips.only("pk", "sha256", "metadata", "split", "project_id").order_by("pk")
    last = 0
    while True:
        batch = list(qs.filter(pk__gt=last)[:CHUNK])
        if not batch:
            return changed
        last = batch[-1].pk
        moved = []
        for clip in batch:
            split = selectors.clip_split(clip, config)
            if split != clip.split:
                clip.split = split
                moved.append(clip)
        if moved:
            Clip.objects.bulk_update(moved, ["split"], batch_size=CHUNK)
            changed += len(moved)
