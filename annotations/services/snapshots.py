"""Frozen dataset snapshots: what a training run (and an export) is made of, fixed before it starts.

`freeze` reads the project's verified clips (selectors.verified_clips / verified_labels: the one rule),
optionally narrowed by the managers' filters (filters.ClipFilter: the one filter definition), and stores
per clip what was verified and how: the words in order with their canonical terms and families (through the
project vocabulary), the split (selectors.clip_split), who annotated and who reviewed, and which model
predictions the annotator was shown. A sha256 over all of that, the vocabulary version and the split config
names the snapshot, so freezing the same data twice returns the first snapshot, not a copy.

Snapshots are immutable: this module creates them and writes them out, nothing else. Only erasure removes
an item (SnapshotItem.clip is RESTRICT, so a snapshotted clip cannot be deleted by accident).

`write_jsonl` writes train.jsonl / val.jsonl / test.jsonl in ml.training.data's format: val drives early
stopping, test compares models.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

from django.db import IntegrityError, transaction

from .. import selectors
from ..filters import ClipFilter
from ..models import Annotation, Clip, DatasetSnapshot, Prediction, Project, Review, SnapshotItem
from ..project_config import project_config
from . import annotating, audit

CHUNK = 2000  # clips read, and items written, per query
# In the hash: a change to what an item holds, or to how the hash is made, must change every hash. /2: the
# items' line digests in name order (/1 hashed the lines themselves, which needed them all in memory).
FORMAT = "affectloop-snapshot/2"
ATTEMPTS = 3  # freezes started over when verified clips change between the two passes
SPLITS = ("train", "val", "test")
_VERIFYING = (Review.Decision.ACCEPT, Review.Decision.FIX)


class SnapshotError(ValueError):
    """Bad input (an invalid filter, nothing to freeze, a name in use): safe to show."""


# --- freezing ---------------------------------------------------------------------------------------------
def freeze(project: Project, *, actor=None, filters: dict | None = None,
           name: str | None = None) -> DatasetSnapshot:
    """The snapshot of the project's verified clips (those `filters` select, if given): an existing one when
    the same content was frozen before (keeping its name and first filters), else a new one, audited as
    snapshot.frozen. Concurrent freezes of the same data end with one row, which both return.

    Two passes, so that a large project's items never sit in memory together: the first reads the items
    chunk by chunk and keeps only each clip's name and line digest (for the content hash) and id; the
    second, when the hash is new, reads the same clips again chunk by chunk and writes them. A verified
    clip that changes between the passes (a fix, an erasure) makes its line differ: the freeze starts over,
    at most ATTEMPTS times."""
    name = (name or "").strip()
    if len(name) > DatasetSnapshot._meta.get_field("name").max_length:
        raise SnapshotError("A snapshot name is at most 120 characters.")
    project = Project.objects.get(pk=project.pk)  # the current vocabulary version and config
    config = project_config(project)
    split_config = {"train": config.training.split.train, "val": config.training.split.val,
                    "test": config.training.split.test, "group_key": config.training.group_key}
    clips = filtered_clips(project, filters or {})
    for _ in range(ATTEMPTS):
        lines: dict[int, tuple[str, bytes]] = {}  # clip id -> (name, line digest)
        counts = dict.fromkeys(SPLITS, 0)
        for chunk in _chunks(clips):
            for item in _items(project, config, chunk):
                lines[item["clip_id"]] = (item["clip_name"], _line_digest(item))
                counts[item["split"]] += 1
        if not lines:
            raise SnapshotError("No verified clips match: nothing to freeze.")
        digest = _combine(lines.values(), vocabulary_version=project.vocabulary_version,
                          split_config=split_config)
        existing = _existing(project, digest)
        if existing is not None:
            return existing
        try:
            return _write(project, config, lines, digest, counts, split_config, filters, name, actor)
        except _Changed:
            continue  # a clip changed between the passes: read again
    raise SnapshotError("The verified clips kept changing while they were being frozen: try again.")


class _Changed(Exception):
    """A clip's frozen line differs between the hashing pass and the writing pass."""


def _write(project, config, lines, digest, counts, split_config, filters, name, actor) -> DatasetSnapshot:
    snapshot = DatasetSnapshot(project=project, name=name or f"{project.slug}-{digest[:12]}",
                               content_hash=digest, clip_count=len(lines),
                               vocabulary_version=project.vocabulary_version,
                               split_config=split_config, split_counts=counts, filters=dict(filters or {}),
                               created_by=actor if getattr(actor, "pk", None) else None)
    ids = sorted(lines)
    try:
        with transaction.atomic():
            snapshot.save(force_insert=True)
            for start in range(0, len(ids), CHUNK):
                chunk = list(selectors.verified_clips(Clip.objects.filter(pk__in=ids[start:start + CHUNK]))
                             .order_by("pk").only("pk", "project_id", "name", "sha256", "transcript", "metadata"))
                items = _items(project, config, chunk)
                if len(items) != len(ids[start:start + CHUNK]) or any(
                        lines.get(item["clip_id"]) != (item["clip_name"], _line_digest(item)) for item in items):
                    raise _Changed
                SnapshotItem.objects.bulk_create([SnapshotItem(snapshot=snapshot, **item) for item in items])
            audit.record("snapshot.frozen", snapshot, actor=actor, project=project,
                         changes={"name": snapshot.name, "content_hash": digest, "clips": len(lines),
                                  "splits": counts,
                                  # The filter's keys and hash: a value may be a clip name prefix.
                                  "filter_keys": sorted(snapshot.filters),
                                  **({"filters_sha256": audit.digest(snapshot.filters)} if snapshot.filters else {}),
                                  "vocabulary_version": project.vocabulary_version})
    except IntegrityError:
        # A concurrent freeze of the same data committed first: that one is ours too.
        existing = _existing(project, digest)
        if existing is not None:
            return existing
        raise SnapshotError(f"A different snapshot is already named {snapshot.name!r}.") from None
    return snapshot


def _existing(project: Project, digest: str) -> DatasetSnapshot | None:
    return DatasetSnapshot.objects.filter(project=project, content_hash=digest).first()


def content_hash(items, *, vocabulary_version: int, split_config: dict) -> str:
    """The content hash of frozen items (dicts as _items makes them): see _combine."""
    return _combine(((item["clip_name"], _line_digest(item)) for item in items),
                    vocabulary_version=vocabulary_version, split_config=split_config)


def _line_digest(item: dict) -> bytes:
    """sha256 of one item's canonical JSON line (sorted keys, no spaces), without the database's clip id,
    which is not content."""
    return hashlib.sha256(_canonical({k: v for k, v in item.items() if k != "clip_id"})).digest()


def _combine(lines, *, vocabulary_version: int, split_config: dict) -> str:
    """sha256 of a header line (format, vocabulary version, split config) followed by each item's line
    digest in clip-name order. Python sorts the names, so no database collation can change the order; the
    digests, not the lines, are kept, so hashing a large snapshot needs only its names in memory."""
    digest = hashlib.sha256()
    digest.update(_canonical({"format": FORMAT, "vocabulary_version": vocabulary_version,
                              "split": split_config}) + b"\n")
    for _, line in sorted(lines):
        digest.update(line)
    return digest.hexdigest()


def _canonical(value) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


def filtered_clips(project: Project, filters: dict):
    """The project's clips that the ClipFilter arguments select (GET-style: {"split": "train", ...})."""
    clips = project.clips.all()
    if not filters:
        return clips
    data = {str(key): "" if value is None else str(value) for key, value in filters.items()}
    unknown = sorted(set(data) - set(ClipFilter.base_filters))
    if unknown:
        raise SnapshotError(f"Unknown filter{'s' if len(unknown) > 1 else ''}: {', '.join(unknown)} "
                            f"(known: {', '.join(sorted(ClipFilter.base_filters))}).")
    clip_filter = ClipFilter(data, queryset=clips, project=project)
    if not clip_filter.is_valid():
        problems = "; ".join(f"{field}: {' '.join(errors)}" for field, errors in clip_filter.errors.items())
        raise SnapshotError(f"Invalid filter: {problems}")
    return clip_filter.qs


def _chunks(clips) -> Iterator[list[Clip]]:
    """The verified clips among `clips`, by keyset on the id, CHUNK at a time, each with its verdict."""
    verified = (selectors.verified_clips(clips).order_by("pk")
                .only("pk", "project_id", "name", "sha256", "transcript", "metadata"))
    last = 0
    while True:
        chunk = list(verified.filter(pk__gt=last)[:CHUNK])
        if not chunk:
            return
        yield chunk
        last = chunk[-1].pk


def _items(project: Project, config, chunk: list[Clip]) -> list[dict]:
    """The frozen content of one chunk of verified clips: a fixed number of queries, whatever its size."""
    from .vocabulary import project_vocabulary

    vocab = project_vocabulary(project)
    ids = [clip.pk for clip in chunk]
    labels = selectors.verified_labels(project, Clip.objects.filter(pk__in=ids))
    accepted = {clip.pk: clip.verdict_annotation for clip in chunk}
    annotations = {pk: (annotator, submitted) for pk, annotator, submitted in Annotation.objects.filter(
        pk__in=accepted.values()).values_list("pk", "annotator_id", "submitted_at")}
    reviews: dict[int, list[tuple]] = {}
    for row in (Review.objects.filter(annotation_id__in=accepted.values()).order_by("-created_at", "-id")
                .values_list("annotation_id", "reviewer_id", "decision", "annotation_version", "created_at")):
        reviews.setdefault(row[0], []).append(row[1:])
    predictions: dict[int, list[tuple]] = {}
    for row in (Prediction.objects.filter(clip_id__in=ids)
                .order_by("clip_id", "backend", "-created_at", "-id")
                .values_list("clip_id", "backend", "model_version", "labels", "created_at")):
        predictions.setdefault(row[0], []).append(row[1:])

    items = []
    for clip in chunk:
        if clip.pk not in labels:
            continue  # un-verified between the two reads: not frozen
        clip.project = project  # the one config parse, for clip_split and suggestion_mode
        words = labels[clip.pk]
        annotation_id = accepted[clip.pk]
        annotator, submitted_at = annotations.get(annotation_id, (None, None))
        verdicts = reviews.get(annotation_id, [])
        # The reviewers who verified the version that the latest verdict judged.
        judged = verdicts[0][2] if verdicts else None
        reviewers = sorted({reviewer for reviewer, decision, version, _ in verdicts
                            if decision in _VERIFYING and version == judged})
        # When the accepted work was submitted (a review never precedes its submit).
        cutoff = submitted_at or (verdicts[0][3] if verdicts else None)
        items.append({
            "clip_id": clip.pk,
            "clip_name": clip.name,
            "sha256": clip.sha256,
            "transcript": clip.transcript,
            "labels": words,
            "terms": [vocab.canonical(word) or word for word in words],
            "families": [vocab.family(word) or "unassigned" for word in words],
            "split": selectors.clip_split(clip, config),
            "annotator_ids": [annotator] if annotator is not None else [],
            "reviewer_ids": reviewers,
            "predictions": _shown(clip, predictions.get(clip.pk, []), cutoff),
        })
    return items


def _shown(clip: Clip, rows: list[tuple], cutoff) -> list[dict]:
    """What the annotator saw beside the clip: each backend's (and the fusion's) latest prediction made by
    the time the accepted annotation was submitted, as the clip page shows them (selectors.model_suggestions);
    nothing for a blind clip (annotating.suggestion_mode: the test split, or a project that hides them).
    The mode is the project's setting at freeze time."""
    if cutoff is None or annotating.suggestion_mode(clip) == "hide":
        return []
    shown: dict[str, dict] = {}
    for backend, model_version, labels, created_at in rows:  # newest first within each backend
        if backend not in shown and created_at <= cutoff:
            shown[backend] = {"backend": backend, "model_version": model_version, "labels": labels}
    return [shown[backend] for backend in sorted(shown)]


# --- writing out ------------------------------------------------------------------------------------------
def media_path(file_name: str, media_root=None) -> str:
    """The absolute path of a stored media file, as training JSONL names it: under `media_root` when given
    (a worker that mounts the media elsewhere), else where the storage keeps it."""
    from django.core.files.storage import default_storage

    if media_root is not None:
        return str((Path(media_root) / file_name).resolve())
    return str(Path(default_storage.path(file_name)).resolve())


def write_jsonl(snapshot: DatasetSnapshot, folder, *, media_root=None) -> dict[str, Path]:
    """train.jsonl, val.jsonl and test.jsonl in `folder`, in ml.training.data's format ({"video": absolute
    path, "transcript": text, "labels": [verified words]}), each sorted by clip name with "\\n" line endings:
    the same snapshot writes the same bytes. `media_root` replaces the storage's folder (a worker that mounts
    the media elsewhere). A split without clips is an empty file."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for split in SPLITS:
        path = folder / f"{split}.jsonl"
        # Sorted here, not by the database: its collation (PostgreSQL's locale vs SQLite's bytes) would
        # otherwise decide the order, and the bytes.
        rows = sorted(snapshot.items.filter(split=split).values_list("clip_name", "clip__file", "transcript",
                                                                       "labels").iterator(chunk_size=CHUNK),
                      key=lambda row: row[0])
        tmp = path.with_name(f".{path.name}.tmp")
        with open(tmp, "w", encoding="utf-8", newline="\n") as out:
            for _, file_name, transcript, labels in rows:
                line = {"video": media_path(file_name, media_root), "transcript": transcript,
                        "labels": list(labels)}
                out.write(json.dumps(line, ensure_ascii=False) + "\n")
        tmp.replace(path)  # a reader never sees half a file
        paths[split] = path
    return paths
