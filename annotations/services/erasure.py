"""Erasure on request: a clip, or every clip with a metadata value (a subject id), and everything derived from it.

`plan` says what an erasure would remove and changes nothing (the dry run); `erase` removes it:

- the rows: predictions, annotations with their revisions and reviews, captions, leases, skips, the clip's
  label index, the admin's log entries about them, and the clip itself;
- frozen snapshots: their items for the clip are deleted (the one change a snapshot takes) and the snapshot
  records it (erased_count, erasures: when, how many, the audit event);
- exports of those snapshots: the file goes and the row is marked erased, so asking for the export again
  builds it without the clip;
- models: every model version trained on such a snapshot, and every version trained on top of one, is
  flagged (erased_data_at); their evaluation details (per-clip names and labels) lose the erased clips;
- files: the media file, its thumbnail, the export files, and the clip's lines in training runs' data files
  (train/val/test.jsonl, captions.jsonl under the model directory). No frame or audio caches exist on disk:
  frames and audio are decoded in memory by the workers (ml.video), so there is nothing else to remove.

All database work is one transaction (in chunks of CHUNK clips); files are removed only once it commits
(transaction.on_commit), so a failed erasure loses nothing. One audit event, clip.erased, says who, when,
how many, and the clips' sha256 only.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.db.models import Count, Q
from django.utils import timezone

from ..models import (
    Annotation,
    AnnotationRevision,
    Caption,
    Clip,
    ClipLabel,
    ClipLease,
    ClipSkip,
    DatasetSnapshot,
    Export,
    ModelVersion,
    Prediction,
    Project,
    Review,
    SnapshotItem,
    TrainingRun,
)
from . import audit

log = logging.getLogger(__name__)

CHUNK = 500  # clip ids per query
# The web page erases up to this many clips in the request; more go to a media worker (erase_later).
WEB_SYNC_LIMIT = 200
_KEY = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")
KINDS = ("clips", "predictions", "annotations", "revisions", "reviews", "captions", "leases", "skips",
         "label_index", "snapshot_items", "files")


class ErasureError(ValueError):
    """Bad input (unknown clip names, a bad KEY=VALUE, nothing to erase): safe to show."""


@dataclass
class ErasurePlan:
    """What an erasure would remove, by clip id; counts per kind, and the snapshots, exports and model
    versions it touches. `unknown`: requested names that are no clip of the project."""

    project: Project
    clip_ids: list[int]
    unknown: list[str] = field(default_factory=list)
    by: str = "name"  # name | metadata
    counts: dict = field(default_factory=dict)
    snapshots: list[int] = field(default_factory=list)
    exports: list[int] = field(default_factory=list)
    models: list[int] = field(default_factory=list)
    runs: list[int] = field(default_factory=list)  # running training runs that would be asked to stop

    def describe(self) -> list[str]:
        """Lines for a person: the counts, and what else is touched."""
        lines = [f"{kind.replace('_', ' ')}: {self.counts.get(kind, 0)}" for kind in KINDS]
        lines.append(f"snapshots that lose items: {len(self.snapshots)}"
                     + (f" (ids {', '.join(map(str, self.snapshots))})" if self.snapshots else ""))
        lines.append(f"exports whose files go: {len(self.exports)}"
                     + (f" (ids {', '.join(map(str, self.exports))})" if self.exports else ""))
        lines.append(f"model versions flagged as trained on erased data: {len(self.models)}"
                     + (f" (ids {', '.join(map(str, self.models))})" if self.models else ""))
        if self.runs:
            lines.append(f"running training runs asked to stop: {', '.join(map(str, self.runs))}")
        return lines


@dataclass
class ErasureResult:
    event_id: int
    clips: int
    counts: dict
    snapshots: list[int]
    exports: list[int]
    models: list[int]
    runs: list[int] = field(default_factory=list)
    files: list[str] = field(default_factory=list)  # relative to MEDIA_ROOT, removed on commit


# --- which clips ----------------------------------------------------------------------------------------------
def parse_where(where) -> tuple[str, str]:
    """KEY=VALUE (or a (key, value) pair) as (key, value). Keys are plain metadata keys: no paths."""
    if isinstance(where, (tuple, list)):
        key, value = where
    else:
        key, sep, value = str(where or "").partition("=")
        if not sep:
            raise ErasureError("Give the metadata selector as KEY=VALUE, e.g. subject=s017.")
    key, value = key.strip(), str(value).strip()
    if not _KEY.match(key) or "__" in key:
        raise ErasureError("A metadata key is letters, digits, '_', '.' or '-' (at most 64, no '__').")
    if not value:
        raise ErasureError("Give the metadata value to match (KEY=VALUE).")
    return key, value


def _metadata_match(key: str, value: str) -> Q:
    """Clip.metadata[key] equal to the value as text, or as the number it spells (a manifest may store 17 or
    "17"). A JSON key lookup, the same on SQLite and PostgreSQL."""
    lookup = f"metadata__{key}"
    match = Q(**{lookup: value})
    try:
        number = int(value) if re.fullmatch(r"-?\d{1,18}", value) else float(value)
    except ValueError:
        return match
    if math.isfinite(number):  # no NaN or infinity in JSON
        match |= Q(**{lookup: number})
    return match


def select(project: Project, *, names=None, where=None) -> tuple[list[int], list[str], str]:
    """(clip ids, unknown names, by) for exactly one of `names` and `where`."""
    if bool(names) == bool(where):
        raise ErasureError("Choose the clips either by name or by one metadata KEY=VALUE.")
    if names:
        wanted = list(dict.fromkeys(str(n).strip() for n in names if str(n).strip()))
        found: dict[str, int] = {}
        for start in range(0, len(wanted), CHUNK):
            found.update(Clip.objects.filter(project=project, name__in=wanted[start:start + CHUNK])
                         .values_list("name", "pk"))
        return sorted(found.values()), [n for n in wanted if n not in found], "name"
    key, value = parse_where(where)
    ids = list(Clip.objects.filter(project=project).filter(_metadata_match(key, value))
               .order_by("pk").values_list("pk", flat=True))
    return ids, [], "metadata"


def _chunks(ids: list[int]):
    for start in range(0, len(ids), CHUNK):
        yield ids[start:start + CHUNK]


def _affected_snapshots(ids: list[int]) -> Counter:
    """{snapshot id: items of these clips}."""
    counts: Counter = Counter()
    for chunk in _chunks(ids):
        for row in (SnapshotItem.objects.filter(clip_id__in=chunk).values("snapshot_id")
                    .annotate(n=Count("id")).order_by()):
            counts[row["snapshot_id"]] += row["n"]
    return counts


def _affected_models(project: Project, snapshot_ids) -> list[int]:
    """Versions trained on one of these snapshots, and every version trained on top of one of them."""
    found = set(ModelVersion.objects.filter(project=project, training_run__snapshot_id__in=list(snapshot_ids))
                .values_list("pk", flat=True))
    frontier = set(found)
    while frontier:
        children = set(ModelVersion.objects.filter(project=project).filter(
            Q(parent_id__in=frontier) | Q(training_run__base_model_id__in=frontier)).values_list("pk", flat=True))
        frontier = children - found
        found |= frontier
    return sorted(found)


def _running(project: Project, snapshot_ids) -> list[int]:
    """Runs training right now on one of these snapshots: they hold the clips in memory, and the model they
    would register would carry them unflagged. A queued run is left alone: it reads its snapshot when it
    starts, without the erased items."""
    return sorted(TrainingRun.objects.filter(project=project, snapshot_id__in=list(snapshot_ids),
                                             status=TrainingRun.Status.RUNNING).values_list("pk", flat=True))


def _counts(ids: list[int]) -> dict:
    counts = dict.fromkeys(KINDS, 0)
    counts["clips"] = len(ids)
    for chunk in _chunks(ids):
        counts["predictions"] += Prediction.objects.filter(clip_id__in=chunk).count()
        counts["annotations"] += Annotation.objects.filter(clip_id__in=chunk).count()
        counts["revisions"] += AnnotationRevision.objects.filter(annotation__clip_id__in=chunk).count()
        counts["reviews"] += Review.objects.filter(annotation__clip_id__in=chunk).count()
        counts["captions"] += Caption.objects.filter(clip_id__in=chunk).count()
        counts["leases"] += ClipLease.objects.filter(clip_id__in=chunk).count()
        counts["skips"] += ClipSkip.objects.filter(clip_id__in=chunk).count()
        counts["label_index"] += ClipLabel.objects.filter(clip_id__in=chunk).count()
        counts["snapshot_items"] += SnapshotItem.objects.filter(clip_id__in=chunk).count()
        for file_name, thumbnail in Clip.objects.filter(pk__in=chunk).values_list("file", "thumbnail"):
            counts["files"] += bool(file_name) + bool(thumbnail)
    return counts


def plan(project: Project, *, names=None, where=None) -> ErasurePlan:
    """What erasing these clips would remove. Reads only: this is the dry run."""
    ids, unknown, by = select(project, names=names, where=where)
    snapshots = _affected_snapshots(ids)
    exports = sorted(Export.objects.filter(snapshot_id__in=list(snapshots)).exclude(
        status=Export.Status.ERASED, file="").values_list("pk", flat=True))
    counts = _counts(ids)
    counts["files"] += Export.objects.filter(pk__in=exports).exclude(file="").count()
    return ErasurePlan(project=project, clip_ids=ids, unknown=unknown, by=by, counts=counts,
                       snapshots=sorted(snapshots), exports=exports, models=_affected_models(project, snapshots),
                       runs=_running(project, snapshots))


# --- erasing --------------------------------------------------------------------------------------------------
def erase(project: Project, plan_or_args, *, actor) -> ErasureResult:
    """Erase the clips of a plan (or of {"names": [...]} / {"where": "KEY=VALUE"}) and everything derived from
    them. Refuses a plan with unknown names (a typo must not erase the rest unnoticed) or no clips."""
    the_plan = plan_or_args if isinstance(plan_or_args, ErasurePlan) else plan(project, **dict(plan_or_args))
    if the_plan.project.pk != project.pk:
        raise ErasureError("That plan is for another project.")
    if the_plan.unknown:
        raise ErasureError(f"No clip of this name in {project.name}: {', '.join(the_plan.unknown[:20])}"
                           + (f" and {len(the_plan.unknown) - 20} more" if len(the_plan.unknown) > 20 else ""))
    if not the_plan.clip_ids:
        raise ErasureError("No clip matches: nothing to erase.")
    now = timezone.now()
    with transaction.atomic():
        # The clips as they are now (one erased meanwhile is simply gone), locked against concurrent work.
        clips: list[tuple] = []
        for chunk in _chunks(the_plan.clip_ids):
            clips += list(Clip.objects.select_for_update().filter(project=project, pk__in=chunk).order_by("pk")
                          .values_list("pk", "sha256", "name", "file", "thumbnail"))
        if not clips:
            raise ErasureError("No clip matches: nothing to erase.")
        ids = [row[0] for row in clips]
        counts = _counts(ids)
        snapshots = _affected_snapshots(ids)
        exports = list(Export.objects.select_for_update().filter(snapshot_id__in=list(snapshots))
                       .exclude(status=Export.Status.ERASED, file="").order_by("pk"))
        export_files = [e.file.name for e in exports if e.file]
        counts["files"] += len(export_files)
        models = _affected_models(project, snapshots)
        runs = _running(project, snapshots)
        event = audit.record("clip.erased", project, actor=actor, project=project, changes={
            "clips": len(ids), "by": the_plan.by, "sha256": sorted(row[1] for row in clips), "counts": counts,
            "snapshots": sorted(snapshots), "exports": [e.pk for e in exports], "models": models,
            "runs": runs})

        from . import labelstudio

        labelstudio.forget_clips(project, ids)  # its tasks there go on commit; never fails the erasure
        for chunk in _chunks(ids):
            _delete_rows(chunk)
        for snapshot in DatasetSnapshot.objects.select_for_update().filter(pk__in=list(snapshots)).order_by("pk"):
            n = snapshots[snapshot.pk]
            snapshot.erased_count += n
            snapshot.erasures = [*snapshot.erasures, {"at": now.isoformat(), "clips": n, "event": event.pk}]
            snapshot.save(update_fields=["erased_count", "erasures"])
        # The file goes once this commits; a rebuild (services.exports.request_export) leaves the clips out.
        Export.objects.filter(pk__in=[e.pk for e in exports]).update(
            status=Export.Status.ERASED, file="", checksum="", size_bytes=None, row_count=None, progress=0.0,
            finished_at=now)
        ModelVersion.objects.filter(pk__in=models, erased_data_at__isnull=True).update(erased_data_at=now)
        _stop_runs(runs, actor)
        names = {row[2] for row in clips}
        _scrub_evaluations(project, names)

        media = [name for row in clips for name in (row[3], row[4]) if name]
        files = media + export_files
        transaction.on_commit(lambda: _remove_files(files))
        # The training data lives in the model directory, which only training workers mount.
        from .. import dispatch

        dispatch.scrub_training_data(project.pk, [row[3] for row in clips if row[3]])
    return ErasureResult(event_id=event.pk, clips=len(ids), counts=counts, snapshots=sorted(snapshots),
                         exports=[e.pk for e in exports], models=models, runs=runs, files=files)


def _stop_runs(run_ids: list[int], actor) -> None:
    """Ask the running runs to stop (services.training.cancel, audited there); one that ended meanwhile is
    fine as it is (its model, if any, was flagged above)."""
    from . import training

    for run in TrainingRun.objects.filter(pk__in=run_ids).select_related("project"):
        try:
            training.cancel(run, actor=actor)
        except training.TrainingError:
            continue


def erase_later(project: Project, where, *, actor) -> None:
    """Hand a large erasure by metadata value to a media worker (task affectloop.media.erase_clips), on commit.
    It erases what matches when it runs: a clip of the subject imported meanwhile goes too."""
    from .. import dispatch

    key, value = parse_where(where)
    dispatch.erase_clips(project.pk, [key, value], actor.pk if getattr(actor, "pk", None) else None)


def run_erasure(project_id: int, where, actor_id: int | None) -> int:
    """The task's body: the number of clips erased (0 when nothing matches any more: a redelivered message)."""
    from django.contrib.auth import get_user_model

    project = Project.objects.filter(pk=project_id).first()
    if project is None:
        return 0
    actor = get_user_model().objects.filter(pk=actor_id).first() if actor_id else None
    the_plan = plan(project, where=tuple(where))
    if not the_plan.clip_ids:
        return 0
    return erase(project, the_plan, actor=actor).clips


def _delete_rows(chunk: list[int]) -> None:
    """Every row of these clips, children first (SnapshotItem.clip is RESTRICT: its items go explicitly)."""
    from django.contrib.admin.models import LogEntry
    from django.contrib.contenttypes.models import ContentType

    annotations = list(Annotation.objects.filter(clip_id__in=chunk).values_list("pk", flat=True))
    owned = {Clip: chunk, Annotation: annotations,
             Review: list(Review.objects.filter(annotation_id__in=annotations).values_list("pk", flat=True)),
             Prediction: list(Prediction.objects.filter(clip_id__in=chunk).values_list("pk", flat=True)),
             Caption: list(Caption.objects.filter(clip_id__in=chunk).values_list("pk", flat=True))}
    # The admin's own log names what it changed (a clip's name, a label): those entries go with the rows.
    for model, pks in owned.items():
        if pks:
            LogEntry.objects.filter(content_type=ContentType.objects.get_for_model(model),
                                    object_id__in=[str(pk) for pk in pks]).delete()
    SnapshotItem.objects.filter(clip_id__in=chunk).delete()
    Review.objects.filter(annotation_id__in=annotations).delete()
    AnnotationRevision.objects.filter(annotation_id__in=annotations).delete()
    Annotation.objects.filter(pk__in=annotations).delete()
    for model in (Prediction, Caption, ClipLease, ClipSkip, ClipLabel):
        model.objects.filter(clip_id__in=chunk).delete()
    Clip.objects.filter(pk__in=chunk).delete()


def _scrub_evaluations(project: Project, names: set[str]) -> None:
    """Drop the erased clips from stored evaluation details ({"per_clip": [{"clip": name, "gold": labels,
    ...}]}, services.evaluation) in model versions' metrics and training runs' eval_metrics."""

    def scrub(value):
        if isinstance(value, dict):
            out, changed = {}, False
            for key, item in value.items():
                if key == "per_clip" and isinstance(item, list):
                    kept = [row for row in item if not (isinstance(row, dict) and row.get("clip") in names)]
                    changed |= len(kept) != len(item)
                    out[key] = kept
                else:
                    out[key], sub = scrub(item)
                    changed |= sub
            return out, changed
        if isinstance(value, list):
            pairs = [scrub(item) for item in value]
            return [p[0] for p in pairs], any(p[1] for p in pairs)
        return value, False

    for model, column in ((ModelVersion, "metrics"), (TrainingRun, "eval_metrics")):
        for pk, value in model.objects.filter(project=project).values_list("pk", column):
            new, changed = scrub(value)
            if changed:
                model.objects.filter(pk=pk).update(**{column: new})


def _remove_files(names: list[str]) -> None:
    """Delete the files (relative to MEDIA_ROOT) and the folders they leave empty. After the commit: a
    failure here is logged, and what stays is a file no row points at."""
    from django.core.files.storage import default_storage

    root = Path(settings.MEDIA_ROOT).resolve()
    # Defensive: a file some remaining row still names stays (media is content-addressed per project, so none
    # should; a hand-made row might).
    used: set[str] = set()
    for start in range(0, len(names), CHUNK):
        part = names[start:start + CHUNK]
        used.update(Clip.objects.filter(file__in=part).values_list("file", flat=True))
        used.update(Clip.objects.filter(thumbnail__in=part).values_list("thumbnail", flat=True))
        used.update(Export.objects.filter(file__in=part).values_list("file", flat=True))
    for name in names:
        if name in used:
            log.warning("erasure: %s is still used by another row; kept", name)
            continue
        try:
            default_storage.delete(name)
        except OSError:
            log.exception("erasure: could not delete %s", name)
            continue
        folder = (root / name).parent
        while folder != root and root in folder.parents:
            try:
                folder.rmdir()  # only an empty one
            except OSError:
                break
            folder = folder.parent


def scrub_training_data(project_id: int, file_names: list[str]) -> int:
    """On a training worker (task affectloop.train.scrub_erased): remove the erased clips' lines from the
    project's JSONL under the model directory, whose "video" is the clip's media path: the runs' data
    (MODEL_DIR/training/<slug>/run-*/{train,val,test,captions}.jsonl, from snapshots.write_jsonl and
    captions.write_jsonl) and the adapters' evaluation answers (MODEL_DIR/adapters/<slug>/run-*/
    eval_predictions.jsonl, with gold labels). Returns the number of files rewritten."""
    from .registry import models_dir

    project = Project.objects.filter(pk=project_id).first()
    if project is None or not file_names:
        return 0
    suffixes = tuple("/" + name.lstrip("/") for name in file_names)
    paths = [path for sub in ("training", "adapters") if (models_dir() / sub / project.slug).is_dir()
             for path in (models_dir() / sub / project.slug).rglob("*.jsonl")]
    rewritten = 0
    for path in paths:
        try:
            lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
            kept = [line for line in lines if not _names_video(line, suffixes)]
            if len(kept) == len(lines):
                continue
            tmp = path.with_name(f".{path.name}.erasure")
            with open(tmp, "w", encoding="utf-8", newline="\n") as out:
                out.writelines(kept)
            os.replace(tmp, path)
            rewritten += 1
        except OSError:
            log.exception("erasure: could not rewrite %s", path)
    return rewritten


def _names_video(line: str, suffixes: tuple[str, ...]) -> bool:
    try:
        video = json.loads(line).get("video", "")
    except (ValueError, AttributeError):
        return False
    return isinstance(video, str) and video.replace(os.sep, "/").endswith(suffixes)
