"""Derived columns and rows that let the managers' clip list filter a million clips through indexes: the
clip's split, its backends' disagreement, and ClipLabel rows (canonical term and family of what the fusion
proposed, what annotators submitted and what was verified). Everything here is recomputable from the
source rows; call index_clip after any of them changes.
"""

from __future__ import annotations

from collections.abc import Iterable

from django.db import transaction

from .. import selectors
from ..models import Annotation, Clip, ClipLabel, Prediction, Project
from ..project_config import project_config

CHUNK = 2000


def index_clip(clip: Clip) -> None:
    index_clips([clip])


def index_clips(clips: Iterable[Clip]) -> None:
    from .vocabulary import project_vocabulary

    clips = list(clips)
    if not clips:
        return
    by_project: dict[int, list[Clip]] = {}
    for clip in clips:
        by_project.setdefault(clip.project_id, []).append(clip)
    for project_id, group in by_project.items():
        project = group[0].project
        vocab = project_vocabulary(project)
        config = project_config(project)
        ids = [c.pk for c in group]
        fused: dict[int, list] = {}
        for row in Prediction.objects.filter(clip_id__in=ids, backend="fused").order_by("clip_id", "-created_at",
                                                                                           "-id"):
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
                    rows.append(ClipLabel(clip=clip, project_id=project_id, term=term, source=source,
                                          family=(vocab.family(word) or "unassigned")[:32], score=score))
        with transaction.atomic():
            ClipLabel.objects.filter(clip_id__in=ids).delete()
            ClipLabel.objects.bulk_create(rows, batch_size=CHUNK)
            for clip in group:
                split = selectors.clip_split(clip, config)
                disagreement = (clip.al_signals or {}).get("disagreement")
                if clip.split != split or clip.disagreement != disagreement:
                    Clip.objects.filter(pk=clip.pk).update(split=split, disagreement=disagreement)
                    clip.split, clip.disagreement = split, disagreement


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
        for clip in batch:
            split = selectors.clip_split(clip, config)
            if split != clip.split:
                clip.split = split
                changed += 1
        Clip.objects.bulk_update(batch, ["split"], batch_size=CHUNK)
