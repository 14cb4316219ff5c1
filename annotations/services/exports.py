"""Dataset exports: a frozen snapshot written out in one format with one set of options (services.snapshots
freezes, export_formats writes each format and the dataset card).

One Export row per (snapshot, format, options hash): asking again reuses a done export whose file is there,
and re-queues one that failed, expired or was erased. The worker (`build`) writes the export folder into a
temporary directory, zips it deterministically (sorted entries, fixed timestamps and permissions) and only
then stores the zip, so a failure leaves no half file. The same snapshot and options give the same bytes,
down to the zip's sha256.

Streaming, and the order: rows are sorted by clip name in Python (a database collation would otherwise decide
the order, and the bytes). Only the (item id, clip name) pairs of the export are read up front (small: some
tens of bytes a clip), sorted, and then the items themselves are fetched CHUNK ids at a time in that order,
so the labels, transcripts and predictions of 100,000 clips never sit in memory together.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import shutil
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.core.files import File
from django.core.files.storage import default_storage
from django.db import IntegrityError, transaction
from django.utils import timezone

from .. import dispatch
from ..filters import ClipFilter
from ..models import DatasetSnapshot, Export
from . import audit, snapshots
from .export_formats import WRITERS, Card

logger = logging.getLogger(__name__)

FORMATS = {
    "merov-csv": Export.Format.MEROV_CSV,
    "train-jsonl": Export.Format.TRAIN_JSONL,
    "internvl-jsonl": Export.Format.INTERNVL_JSONL,
    "swift-jsonl": Export.Format.SWIFT_JSONL,
    "parquet": Export.Format.PARQUET,
    "labelstudio-json": Export.Format.LABEL_STUDIO,
}
FORMAT_NAMES = {value: name for name, value in FORMATS.items()}
MEDIA = ("link", "include")
CHUNK = 2000  # items fetched per query
PROGRESS_EVERY = 1000  # rows between progress writes
ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # the earliest time a zip can hold: no build time leaks into the bytes
STORED_SUFFIXES = {".mp4", ".mkv", ".webm", ".mov", ".avi", ".m4v", ".parquet"}  # already compressed


class ExportError(ValueError):
    """Bad input (an unknown format, a bad option or filter) or a clip that cannot be exported: safe to show."""


# --- options ----------------------------------------------------------------------------------------------
def format_value(format_name: str) -> str:
    """The stored Export.Format of a command-line name (or of a stored value)."""
    if format_name in FORMATS:
        return FORMATS[format_name]
    if format_name in FORMAT_NAMES:
        return format_name
    raise ExportError(f"Unknown format {format_name!r} (known: {', '.join(FORMATS)}).")


def normalise_options(options: dict | None) -> dict:
    """{"filters": {ClipFilter argument: text}, "media": "link" | "include", "pseudonymise": bool}, with
    empty filters dropped and keys sorted, so equal requests hash alike. Unknown keys and bad values raise
    ExportError. (Whether a filter's value is valid for a project is checked by request_export.)"""
    options = dict(options or {})
    unknown = sorted(set(options) - {"filters", "media", "pseudonymise"})
    if unknown:
        raise ExportError(f"Unknown export option{'s' if len(unknown) > 1 else ''}: {', '.join(unknown)} "
                          "(known: filters, media, pseudonymise).")
    filters = options.get("filters") or {}
    if not isinstance(filters, dict):
        raise ExportError("filters must be a mapping of filter name to value.")
    filters = {str(k): str(v).strip() for k, v in filters.items() if v is not None and str(v).strip() != ""}
    bad = sorted(set(filters) - set(ClipFilter.base_filters))
    if bad:
        raise ExportError(f"Unknown filter{'s' if len(bad) > 1 else ''}: {', '.join(bad)} "
                          f"(known: {', '.join(sorted(ClipFilter.base_filters))}).")
    media = options.get("media") or "link"
    if media not in MEDIA:
        raise ExportError(f"media must be one of {', '.join(MEDIA)}, not {media!r}.")
    pseudonymise = options.get("pseudonymise", False)
    if not isinstance(pseudonymise, bool):
        raise ExportError("pseudonymise must be true or false.")
    return {"filters": dict(sorted(filters.items())), "media": media, "pseudonymise": pseudonymise}


def options_hash(options: dict) -> str:
    canonical = json.dumps(options, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _selected_items(snapshot: DatasetSnapshot, filters: dict):
    """The snapshot's items whose clips the filters select now (the current clips table)."""
    items = snapshot.items.all()
    if not filters:
        return items
    try:
        clips = snapshots.filtered_clips(snapshot.project, filters)
    except snapshots.SnapshotError as exc:
        raise ExportError(str(exc)) from None
    return items.filter(clip_id__in=clips.values("pk"))


# --- requesting ---------------------------------------------------------------------------------------------
_REBUILT = (Export.Status.FAILED, Export.Status.EXPIRED, Export.Status.ERASED)


def file_present(export: Export) -> bool:
    return bool(export.file.name) and default_storage.exists(export.file.name)


def request_export(snapshot: DatasetSnapshot, format_name: str, options: dict | None = None, *,
                   actor=None) -> Export:
    """The export of `snapshot` in `format_name` with `options`: the existing row when there is one (a done
    one whose file is there is reused as it is; a failed, expired or erased one is queued again), else a new
    queued row. The build is dispatched on commit, once; concurrent requests end with one row."""
    fmt = format_value(format_name)
    options = normalise_options(options)
    _selected_items(snapshot, options["filters"])  # a filter the project cannot take fails here, not in a worker
    digest = options_hash(options)
    key = {"snapshot": snapshot, "format": fmt, "options_hash": digest}
    with transaction.atomic():
        try:
            with transaction.atomic():
                export, created = Export.objects.get_or_create(
                    **key, defaults={"options": options, "created_by": actor if getattr(actor, "pk", None) else None})
        except IntegrityError:  # a concurrent request inserted it first
            export, created = Export.objects.get(**key), False
        again = list(_REBUILT)
        if export.status == Export.Status.DONE and not file_present(export):
            again.append(Export.Status.DONE)
        queued = created or Export.objects.filter(pk=export.pk, status__in=again).update(
            status=Export.Status.QUEUED, progress=0.0, error="", file="", checksum="", size_bytes=None,
            row_count=None, started_at=None, finished_at=None, expires_at=None)
        if queued:
            if not created and export.file.name:
                _delete_file(export.file.name)
            dispatch.build_export(export.pk)
            audit.record("export.requested", export, actor=actor, project=snapshot.project,
                         changes={"snapshot": snapshot.pk, "format": fmt, "options_hash": digest})
            export.refresh_from_db()
    return export


def export_project(project, format_name: str, options: dict | None = None, *, snapshot_id: int | None = None,
                   actor=None) -> Export:
    """request_export for one of the project's snapshots, or (no snapshot_id) for its verified clips frozen
    now: what the exports page asks for. Every refusal is an ExportError."""
    format_value(format_name)
    normalise_options(options)  # bad input fails before anything is frozen
    if snapshot_id is None:
        try:
            snapshot = snapshots.freeze(project, actor=actor)
        except snapshots.SnapshotError as exc:
            raise ExportError(str(exc)) from None
    else:
        snapshot = DatasetSnapshot.objects.filter(project=project, pk=snapshot_id).first()
        if snapshot is None:
            raise ExportError("No such snapshot in this project.")
    return request_export(snapshot, format_name, options, actor=actor)


# --- writing ------------------------------------------------------------------------------------------------
def write_export(snapshot: DatasetSnapshot, format_name: str, out_dir, options: dict | None = None, *,
                 progress: Callable[[int, int], None] | None = None) -> dict:
    """Write the export folder: the format's files, README.md (the dataset card) and, with media "include",
    the clips' files under media/. Returns {"row_count", "files"} (files relative to the folder, sorted).
    `progress(done, total)` is called every PROGRESS_EVERY rows and at the end."""
    fmt = format_value(format_name)
    options = normalise_options(options)
    items = _selected_items(snapshot, options["filters"])
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    order = sorted(items.values_list("clip_name", "pk").iterator(chunk_size=CHUNK))
    total = len(order)
    writer = WRITERS[fmt](folder, options)
    card = Card()
    pseudonym = _pseudonymiser(snapshot) if options["pseudonymise"] else None
    done = 0
    try:
        for row in _rows(order, folder, options["media"], getattr(writer, "CLIP_FIELDS", False)):
            if pseudonym is not None:
                row["annotator_ids"] = [pseudonym(i) for i in row["annotator_ids"]]
                row["reviewer_ids"] = [pseudonym(i) for i in row["reviewer_ids"]]
            writer.add(row)
            card.add(row)
            done += 1
            if progress is not None and done % PROGRESS_EVERY == 0:
                progress(done, total)
    finally:
        files = writer.close()
    if options["media"] == "include":
        files.append("media/")
    name = FORMAT_NAMES[fmt]
    label = Export.Format(fmt).label
    (folder / "README.md").write_text(card.render(snapshot=snapshot, format_name=name, format_label=label,
                                                  options=options, files=files), encoding="utf-8", newline="\n")
    if progress is not None:
        progress(done, total)
    return {"row_count": done, "files": sorted(p.relative_to(folder).as_posix() for p in _files(folder))}


_ITEM_FIELDS = ("sha256", "transcript", "labels", "terms", "families", "split", "annotator_ids", "reviewer_ids",
                "predictions")
# The clip's current metadata: only the formats that carry it read it (a JSON decode a row saved elsewhere).
_CLIP_FIELDS = ("duration", "fps", "width", "height", "has_audio", "language", "size_bytes", "metadata")


def _rows(order: list[tuple[str, int]], folder: Path, media: str, clip_fields: bool) -> Iterator[dict]:
    """Each selected item as a row, in clip-name order, fetched CHUNK at a time by id."""
    from ..models import SnapshotItem

    fields = ["pk", "clip_name", "clip__file", *_ITEM_FIELDS, *(f"clip__{f}" for f in _CLIP_FIELDS if clip_fields)]
    # The real path of the media folder, once: resolving every clip's path costs more than the rest of a row.
    root = os.path.realpath(default_storage.location)
    for start in range(0, len(order), CHUNK):
        ids = [pk for _, pk in order[start:start + CHUNK]]
        fetched = {values["pk"]: values for values in SnapshotItem.objects.filter(pk__in=ids).values(*fields)}
        for pk in ids:
            values = fetched.get(pk)
            if values is None:
                continue  # erased while the export ran: left out
            row = {"name": values["clip_name"], **{k: values[k] for k in _ITEM_FIELDS}}
            if clip_fields:
                row.update({k: values[f"clip__{k}"] for k in _CLIP_FIELDS})
            row["video"] = _video(values["clip__file"], values["clip_name"], folder, media, root)
            yield row


def _video(file_name: str, clip_name: str, folder: Path, media: str, root: str) -> str:
    if media == "link":
        return os.path.join(root, file_name)  # a storage name: relative, no ".." (FileField validates it)
    source = Path(default_storage.path(file_name)).resolve()
    if not source.is_file():
        raise ExportError(f"The media file of clip {clip_name!r} is missing: the export cannot include it.")
    relative = Path("media") / Path(file_name).as_posix()
    target = folder / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)  # same file system: no copy of the bytes
    except OSError:
        shutil.copyfile(source, target)
    return relative.as_posix()


def _pseudonymiser(snapshot: DatasetSnapshot) -> Callable[[int], str]:
    """A keyed hash of a user id: the key comes from SECRET_KEY and the snapshot's hash, so a person keeps
    one pseudonym across re-exports of a snapshot, cannot be linked across snapshots, and the id cannot be
    recovered without the secret."""
    key = hmac.new(settings.SECRET_KEY.encode("utf-8"), b"affectloop-export-pseudonym:" +
                   snapshot.content_hash.encode("ascii"), hashlib.sha256).digest()
    return lambda user_id: hmac.new(key, str(user_id).encode("ascii"), hashlib.sha256).hexdigest()[:16]


def _files(folder: Path) -> list[Path]:
    return sorted((p for p in folder.rglob("*") if p.is_file()), key=lambda p: p.relative_to(folder).as_posix())


def write_zip(folder: Path, target: Path) -> str:
    """A zip of the folder whose bytes depend only on the files: entries sorted by path, every timestamp
    1980-01-01, mode 0644, Unix as the creating system, fixed compression. Returns its sha256."""
    with zipfile.ZipFile(target, "w") as archive:
        for path in _files(folder):
            info = zipfile.ZipInfo(path.relative_to(folder).as_posix(), date_time=ZIP_TIME)
            info.create_system = 3
            info.external_attr = (0o100644 & 0xFFFF) << 16
            stored = path.suffix.lower() in STORED_SUFFIXES
            info.compress_type = zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED
            info.file_size = path.stat().st_size
            with open(path, "rb") as source, archive.open(info, "w", force_zip64=info.file_size > 2**31) as out:
                shutil.copyfileobj(source, out, 1 << 20)
    digest = hashlib.sha256()
    with open(target, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# --- the worker side ------------------------------------------------------------------------------------------
def build(export_id: int) -> str:
    """Build a queued (or interrupted running) export; idempotent: a done export with its file, or one in any
    other state, is left as it is. Returns the status it ends in."""
    export = Export.objects.select_related("snapshot__project").filter(pk=export_id).first()
    if export is None:
        return "missing"
    if export.status == Export.Status.DONE and file_present(export):
        return export.status
    if export.status not in (Export.Status.QUEUED, Export.Status.RUNNING):
        return export.status
    now = timezone.now()
    if not Export.objects.filter(pk=export.pk, status__in=[Export.Status.QUEUED, Export.Status.RUNNING]).update(
            status=Export.Status.RUNNING, started_at=now, progress=0.0, error=""):
        return Export.objects.get(pk=export.pk).status

    def saved(done: int, total: int) -> None:
        Export.objects.filter(pk=export.pk, status=Export.Status.RUNNING).update(
            progress=round(done / total, 4) if total else 1.0)

    stored = None
    try:
        # Under the media root, not /tmp: included media is hard-linked there (same file system, no copy).
        work = Path(settings.MEDIA_ROOT) / "exports" / "tmp"
        work.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="affectloop-export-", dir=work) as tmp:
            result = write_export(export.snapshot, export.format, Path(tmp) / "export", export.options,
                                  progress=saved)
            archive = Path(tmp) / "export.zip"
            checksum = write_zip(Path(tmp) / "export", archive)
            name = f"exports/{export.snapshot.project.slug}-{export.snapshot_id}-{export.format}-{export.pk}.zip"
            _delete_file(name)  # a previous build's file: the name is this row's
            with open(archive, "rb") as handle:
                stored = default_storage.save(name, File(handle, name=name))
            size = archive.stat().st_size
        finished = timezone.now()
        updated = Export.objects.filter(pk=export.pk, status=Export.Status.RUNNING).update(
            status=Export.Status.DONE, file=stored, checksum=checksum, size_bytes=size,
            row_count=result["row_count"], progress=1.0, finished_at=finished,
            expires_at=finished + timedelta(days=settings.EXPORT_DOWNLOAD_DAYS))
    except Exception as exc:  # any failure ends as a failed export, with no file left behind
        if stored:
            _delete_file(stored)
        message = str(exc) if isinstance(exc, ExportError) else f"{type(exc).__name__}: {exc}"
        logger.exception("export %s failed", export.pk)
        Export.objects.filter(pk=export.pk).update(status=Export.Status.FAILED, error=message[:2000],
                                                   progress=0.0, finished_at=timezone.now())
        return Export.Status.FAILED
    if not updated:  # erased, re-requested or finished by another delivery meanwhile: that state wins
        current = Export.objects.get(pk=export.pk)
        if current.file.name != stored:
            _delete_file(stored)
        return current.status
    return Export.Status.DONE


def _delete_file(name: str) -> None:
    if name and default_storage.exists(name):
        default_storage.delete(name)


def expire_exports(now=None) -> int:
    """Beat: remove the files of done exports past their expiry and mark them expired. Returns how many."""
    now = now or timezone.now()
    count = 0
    for export in Export.objects.filter(status=Export.Status.DONE, expires_at__lte=now).only("pk", "file"):
        if Export.objects.filter(pk=export.pk, status=Export.Status.DONE).update(
                status=Export.Status.EXPIRED, file="", progress=0.0):
            _delete_file(export.file.name)
            count += 1
    return count


def downloadable(export: Export, now=None) -> bool:
    """Done, not past its expiry, and its file is there."""
    now = now or timezone.now()
    return (export.status == Export.Status.DONE and (export.expires_at is None or export.expires_at > now)
            and file_present(export))
