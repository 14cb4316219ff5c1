"""Clip ingest: validate by content, store once per project, hand the rest to the media task.

Every entry point (web upload, folder import, CSV manifest) goes through `validate_file` and `store_clip`,
so they share the same rules: a file is fully checked before anything is written, a duplicate (same
sha256 in the project) is reported and not stored twice, and a failure leaves neither a row nor a file.
"""

from __future__ import annotations

import ast
import csv
import logging
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction
from django.utils import timezone

from .. import dispatch, media
from ..models import Annotation, Clip, Project, Review
from ..project_config import ConfigError, project_config
from . import audit, clip_index, reviews

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = {".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi"}
IMPORT_USERNAME = "affectloop-import"
PRELABEL_DEBOUNCE_S = 15
MANIFEST_REQUIRED = ("path",)
MANIFEST_KNOWN = ("path", "transcript", "language", "labels")


class ManifestError(ValueError):
    """The manifest as a whole cannot be used (unreadable, wrong columns); nothing is imported."""


def limits() -> media.MediaLimits:
    return media.MediaLimits(
        max_bytes=settings.MAX_UPLOAD_BYTES,
        max_seconds=settings.MAX_CLIP_SECONDS,
        max_width=settings.MAX_CLIP_WIDTH,
        max_height=settings.MAX_CLIP_HEIGHT,
    )


@dataclass
class Candidate:
    """One file to ingest, as the source described it."""

    path: Path
    display: str
    name: str = ""                      # the clip's name; defaults to display without its extension
    transcript: str | None = None       # None: look for a sidecar .srt/.vtt/.txt
    language: str = ""
    labels: list[str] | None = None
    metadata: dict = field(default_factory=dict)
    error: str = ""                     # set when the source row itself is bad


@dataclass
class Checked:
    candidate: Candidate
    probe: media.ProbeResult | None = None
    sha256: str = ""
    transcript: str = ""
    # A time-coded sidecar's cues, [[start, end, text], ...]: the clip page highlights and seeks by them.
    segments: list = field(default_factory=list)
    error: str = ""


@dataclass
class Outcome:
    status: str                         # imported | duplicate | rejected
    display: str
    reason: str = ""
    clip_id: int | None = None

    def line(self) -> str:
        return f"{self.status} {self.display}: {self.reason}" if self.reason else f"{self.status} {self.display}"


def clip_name_for(display: str) -> str:
    """A clip's name: its path relative to the import root (or its upload name) without the extension."""
    path = PurePosixPath(display.replace("\\", "/"))
    return str(path.with_suffix("")) if path.suffix else str(path)


# --- sources ----------------------------------------------------------------------------------------
def _inside(root: Path, path: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
    except ValueError:
        return False
    return True


def folder_candidates(root: Path) -> Iterator[Candidate]:
    """Every video-named file under root, in a stable order; links that leave the root are refused."""
    root = root.resolve()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if path.suffix.lower() not in VIDEO_SUFFIXES:
                continue
            display = str(path.relative_to(root))
            if not _inside(root, path):
                yield Candidate(path=path, display=display, error="outside the import root (symbolic link)")
                continue
            yield Candidate(path=path, display=display, metadata={"import_path": display})


def parse_labels(raw: str) -> list[str]:
    """A manifest's labels cell: a list string "['anxious', 'relieved']" or a plain "anxious, relieved"."""
    raw = (raw or "").strip()
    if not raw:
        return []
    if raw.startswith("["):
        try:
            value = ast.literal_eval(raw)  # literals only: never evaluates code
        except (ValueError, SyntaxError):
            raise ValueError(f"labels {raw[:60]!r} is not a valid list") from None
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ValueError("labels must be a list of words")
        words = value
    else:
        words = raw.replace(";", ",").split(",")
    seen, out = set(), []
    for word in words:
        term = " ".join(word.strip().lower().split())
        if term and term not in seen:
            seen.add(term)
            out.append(term)
    return out


def manifest_candidates(manifest: Path, root: Path | None = None) -> list[Candidate]:
    """Rows of a CSV manifest (`path,transcript,language,labels,...`); extra columns go to metadata.

    Paths are relative to `root` (default: the manifest's folder) and may not leave it.
    """
    root = (root or manifest.parent).resolve()
    try:
        text = manifest.read_bytes().decode("utf-8-sig")
    except OSError as exc:
        raise ManifestError(f"cannot read manifest: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ManifestError(f"manifest is not UTF-8 (byte 0x{exc.object[exc.start]:02x} at offset {exc.start})") from None
    reader = csv.reader(text.splitlines())
    try:
        header = [h.strip().lower() for h in next(reader)]
    except StopIteration:
        raise ManifestError("manifest is empty") from None
    except csv.Error as exc:
        raise ManifestError(f"manifest is not valid CSV: {exc}") from None
    missing = [c for c in MANIFEST_REQUIRED if c not in header]
    if missing:
        raise ManifestError(f"manifest is missing column(s): {', '.join(missing)} (found: {', '.join(header) or 'none'})")
    if len(set(header)) != len(header):
        raise ManifestError("manifest has duplicate column names")
    out: list[Candidate] = []
    try:
        for lineno, row in enumerate(reader, start=2):
            if not any(cell.strip() for cell in row):
                continue
            given = row[header.index("path")].strip() if len(row) > header.index("path") else ""
            display = given or f"<row {lineno}>"
            if len(row) != len(header):
                out.append(Candidate(path=root, display=display,
                                     error=f"row {lineno} has {len(row)} fields, the header has {len(header)}"))
                continue
            cells = dict(zip(header, row))
            cand = Candidate(path=root / given, display=display, language=cells.get("language", "").strip()[:16],
                             metadata={k: v for k, v in cells.items() if k not in MANIFEST_KNOWN})
            cand.metadata["import_path"] = given
            if not given:
                cand.error = f"row {lineno} has an empty path"
            elif not _inside(root, root / given):
                cand.error = "outside the import root"
            if "transcript" in cells and cells["transcript"].strip():
                cand.transcript = cells["transcript"].strip()
            if "labels" in cells:
                try:
                    cand.labels = parse_labels(cells["labels"])
                except ValueError as exc:
                    cand.error = cand.error or str(exc)
            out.append(cand)
    except csv.Error as exc:
        raise ManifestError(f"manifest is not valid CSV: {exc}") from None
    return out


# --- validation -------------------------------------------------------------------------------------
def validate_file(cand: Candidate) -> Checked:
    """Everything that can reject a file, done before anything is stored."""
    checked = Checked(candidate=cand, error=cand.error)
    if checked.error:
        return checked
    if not cand.path.is_file():
        checked.error = "no such file"
        return checked
    try:
        checked.probe = media.probe_video(cand.path, limits())
        checked.sha256 = media.sha256_file(cand.path)
        if cand.transcript is not None:
            checked.transcript = cand.transcript
        else:
            sidecar = media.find_sidecar_transcript(cand.path)
            if sidecar is not None and sidecar.is_symlink():
                raise media.MediaRejected(f"transcript {sidecar.name} is a symbolic link")
            checked.transcript = media.read_transcript_file(sidecar) if sidecar else ""
            if sidecar is not None and sidecar.suffix.lower() in (".srt", ".vtt"):
                checked.segments = [[round(s.start, 3), round(s.end, 3), s.text]
                                    for s in media.read_transcript_segments(sidecar)]
    except media.MediaRejected as exc:
        checked.error = str(exc)
    return checked


def validate_all(cands: Iterable[Candidate], workers: int | None = None) -> Iterator[Checked]:
    """Validate in parallel (ffprobe runs in subprocesses, so threads are enough); results keep input order."""
    with ThreadPoolExecutor(max_workers=workers or min(8, (os.cpu_count() or 2) * 2)) as pool:
        yield from pool.map(validate_file, cands)


# --- storing ----------------------------------------------------------------------------------------
def _import_user():
    user, created = get_user_model().objects.get_or_create(
        username=IMPORT_USERNAME, defaults={"is_active": False, "first_name": "Import"})
    if created:
        user.set_unusable_password()
        user.save(update_fields=["password"])
    return user


MEDIA_DIR_MODE = 0o750  # owner and group (nginx reads media through the app's group in compose), never others


def media_dirs(path: Path) -> None:
    """Create `path` and its missing parents inside MEDIA_ROOT with MEDIA_DIR_MODE, whatever the umask of the
    process (a command run by hand has 022; os.makedirs applies its mode to the last level only)."""
    root = Path(settings.MEDIA_ROOT)
    missing = []
    for level in [path, *path.parents]:
        if level.exists() or level == root.parent:
            break
        missing.append(level)
    for level in reversed(missing):
        try:
            level.mkdir()
        except FileExistsError:
            continue  # another worker made it meanwhile
        level.chmod(MEDIA_DIR_MODE)


def _store_media(src: Path, rel: str) -> bool:
    """Copy into MEDIA_ROOT atomically (temp file + rename). Returns True if this call created the file."""
    dest = Path(settings.MEDIA_ROOT) / rel
    if dest.exists():
        return False
    media_dirs(dest.parent)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".incoming-")
    try:
        with os.fdopen(fd, "wb") as out, open(src, "rb") as inp:
            shutil.copyfileobj(inp, out, 1 << 20)
        os.chmod(tmp, 0o640)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return True


def clip_media_name(project: Project, sha256: str, container: str) -> str:
    ext = {"mp4": ".mp4", "matroska": ".mkv", "avi": ".avi"}.get(container, ".bin")
    return f"clips/{project.pk}/{sha256[:2]}/{sha256}{ext}"


def store_clip(project: Project, checked: Checked, *, source: str, actor=None,
               labels_verified: bool = False) -> Outcome:
    """Store one validated file as a clip, or report it as a duplicate. All or nothing."""
    cand = checked.candidate
    if checked.error:
        return Outcome("rejected", cand.display, checked.error)
    existing = Clip.objects.filter(project=project, sha256=checked.sha256).only("id", "name").first()
    if existing:
        return Outcome("duplicate", cand.display, f"same content as clip {existing.pk} ({existing.name})",
                       existing.pk)
    name = (cand.name or clip_name_for(cand.display))[:300]
    clash = Clip.objects.filter(project=project, name=name).exclude(sha256=checked.sha256).only("id").first()
    if clash:
        return Outcome("rejected", cand.display, f"the name {name!r} is already used by clip {clash.pk} in this "
                                                 f"project (different content)")
    probe = checked.probe
    rel = clip_media_name(project, checked.sha256, probe.container)
    created_file = _store_media(cand.path, rel)
    try:
        with transaction.atomic():
            clip = Clip.objects.create(
                project=project, file=rel, original_name=cand.display[:300], name=name, source=source,
                sha256=checked.sha256, size_bytes=probe.size_bytes, container=probe.container,
                duration=probe.duration, fps=probe.fps, width=probe.width, height=probe.height,
                video_codec=probe.video_codec[:32], audio_codec=probe.audio_codec[:32], has_audio=probe.has_audio,
                transcript=checked.transcript, language=cand.language,
                metadata={**cand.metadata, **({"transcript_segments": checked.segments} if checked.segments else {})},
            )
            if cand.labels:
                _import_labels(clip, cand.labels, verified=labels_verified)
            clip_index.index_clip(clip)
            audit.record("clip.imported", clip, actor=actor, project=project,
                         changes={"source": source, "sha256": checked.sha256,
                                  **audit.labels_summary(cand.labels or []), "labels_verified": labels_verified})
            dispatch.process_clip(clip.pk)
    except IntegrityError:
        # Another import stored the same content between our check and our insert. The file is the same
        # bytes (content-addressed) and now belongs to that clip: keep it.
        existing = Clip.objects.filter(project=project, sha256=checked.sha256).first()
        if existing is not None:
            return Outcome("duplicate", cand.display, f"same content as clip {existing.pk} ({existing.name})",
                           existing.pk)
        clash = Clip.objects.filter(project=project, name=name).first()
        if clash is None:
            raise
        return Outcome("rejected", cand.display, f"the name {name!r} is already used by clip {clash.pk} in this "
                                                 f"project (different content)")
    except BaseException:
        if created_file and not Clip.objects.filter(file=rel).exists():
            (Path(settings.MEDIA_ROOT) / rel).unlink(missing_ok=True)
        raise
    return Outcome("imported", cand.display, f"clip {clip.pk}", clip.pk)


def _import_labels(clip: Clip, labels: list[str], *, verified: bool) -> None:
    """Existing human labels: a submitted annotation by the import user, accepted at once if verified."""
    now = timezone.now()
    user = _import_user()
    annotation = Annotation.objects.create(
        clip=clip, annotator=user, labels=[{"term": t, "source": "import"} for t in labels],
        status=Annotation.Status.SUBMITTED, submitted_at=now)
    if verified:
        reviews.review(annotation, reviewer=user, decision=Review.Decision.ACCEPT, reason="imported as verified")
    else:
        # Imported labels stand for the whole overlap: they wait for a reviewer, not for more annotators.
        Clip.objects.filter(pk=clip.pk).update(label_state=Clip.LabelState.SUBMITTED)


def import_candidates(project: Project, cands: Iterable[Candidate], *, source: str, actor=None,
                      labels_verified: bool = False, dry_run: bool = False) -> Iterator[Outcome]:
    """Validate every file first, then store; yields one final Outcome per candidate, in input order."""
    checked = list(validate_all(list(cands)))
    seen: dict[str, str] = {}
    names: dict[str, str] = {}
    for item in checked:
        if not item.error and item.sha256 in seen:
            yield Outcome("duplicate", item.candidate.display, f"same content as {seen[item.sha256]} in this import")
            continue
        name = item.candidate.name or clip_name_for(item.candidate.display)
        if not item.error and name in names:
            # a.mp4 and a.mkv would both be named "a": refuse the second rather than rename it silently.
            yield Outcome("rejected", item.candidate.display, f"the name {name!r} is also the name of "
                                                              f"{names[name]} in this import")
            continue
        if not item.error:
            seen[item.sha256] = item.candidate.display
            names[name] = item.candidate.display
        if dry_run:
            yield Outcome("rejected", item.candidate.display, item.error) if item.error else Outcome(
                "valid", item.candidate.display)
            continue
        yield store_clip(project, item, source=source, actor=actor, labels_verified=labels_verified)


def ingest_upload(project: Project, uploaded, *, actor, transcript: str = "", language: str = "") -> Outcome:
    """A file from the web form: written to a private temp file, then the same path as an import."""
    name = Path(uploaded.name or "upload").name[:200]
    if uploaded.size is not None and uploaded.size > settings.MAX_UPLOAD_BYTES:
        return Outcome("rejected", name, f"file is {uploaded.size / 1e6:.1f} MB, the limit is "
                                         f"{settings.MAX_UPLOAD_BYTES / 1e6:.0f} MB")
    path = getattr(uploaded, "temporary_file_path", None)
    tmp_path = None
    try:
        if path is None:
            fd, tmp_path = tempfile.mkstemp(prefix="affectloop-upload-")
            with os.fdopen(fd, "wb") as out:
                for chunk in uploaded.chunks():
                    out.write(chunk)
            path = tmp_path
        else:
            path = path()
        cand = Candidate(path=Path(path), display=name, transcript=transcript.strip() or "", language=language,
                         metadata={"uploaded_name": name})
        return store_clip(project, validate_file(cand), source="upload", actor=actor)
    finally:
        if tmp_path:
            Path(tmp_path).unlink(missing_ok=True)


# --- media task -------------------------------------------------------------------------------------
def process_clip(clip_id: int) -> str:
    """Probe the stored file, record its facts, make the thumbnail, mark the clip ready. Idempotent."""
    with transaction.atomic():
        clip = Clip.objects.select_for_update().filter(pk=clip_id).first()
        if clip is None:
            return "missing"
        if clip.status == Clip.Status.READY:
            return "ready"
        clip.status = Clip.Status.PROCESSING
        clip.save(update_fields=["status", "updated_at"])
    path = Path(clip.file.path)
    try:
        clip_limits = limits()
        probe = media.probe_video(path, clip_limits)
        digest = media.sha256_file(path)
        if digest != clip.sha256:
            raise media.MediaRejected("stored file does not match its checksum")
        thumb_rel = f"thumbs/{clip.project_id}/{clip.sha256[:2]}/{clip.sha256}.jpg"
        thumb_abs = Path(settings.MEDIA_ROOT) / thumb_rel
        media_dirs(thumb_abs.parent)
        media.make_thumbnail(path, thumb_abs, at_seconds=min(1.0, probe.duration / 2), limits=clip_limits)
    except media.MediaRejected as exc:
        # A concurrent run may have finished first: never turn a ready clip into a failed one.
        Clip.objects.filter(pk=clip_id).exclude(status=Clip.Status.READY).update(
            status=Clip.Status.FAILED, error=str(exc), updated_at=timezone.now())
        return "failed"
    Clip.objects.filter(pk=clip_id).update(
        status=Clip.Status.READY, error="", thumbnail=thumb_rel, duration=probe.duration, fps=probe.fps,
        width=probe.width, height=probe.height, has_audio=probe.has_audio, size_bytes=probe.size_bytes,
        video_codec=probe.video_codec[:32], audio_codec=probe.audio_codec[:32], container=probe.container,
        ready_at=timezone.now(), updated_at=timezone.now())
    try:
        wanted = bool(project_config(clip.project).backends())
    except ConfigError:
        wanted = False  # validated on save: only a hand-edited database gets here; beat logs it
    if wanted:
        # A short delay lets a burst of clips becoming ready share GPU batches.
        dispatch.enqueue_prelabel(clip.project_id, countdown=PRELABEL_DEBOUNCE_S)
    return "ready"
