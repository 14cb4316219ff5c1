"""Label Studio, both ways: push clips and predictions there, pull its annotations back, and answer as its
ML backend from stored predictions.

- **Connection.** `config.labelstudio.url` names the server and `project_id` the mapped Label Studio project
  (filled in by the first push). The API key is a secret, so it is a deployment setting
  (AFFECTLOOP_LABEL_STUDIO_API_KEY, or …_FILE), never part of the project config that managers edit and the
  audit log records. Media go as signed links (annotations.signed_media), made absolute with
  AFFECTLOOP_PUBLIC_URL: Label Studio's browser fetches them, not our session.
- **Push** (`push`): creates the Label Studio project, or updates its labelling config (video, transcript,
  a Taxonomy of the project vocabulary's families and terms, and a free-text box for words outside it);
  imports each ready clip once as a task and refreshes the data of those already there (signed links
  expire after AFFECTLOOP_SIGNED_MEDIA_SECONDS, so pushing again renews them); sends each clip's newest
  fused prediction as a pre-annotation with its model version and score, once per model version (a new
  version is new to Label Studio too, so it never skips it). Which task is which clip is kept in
  LabelStudioTask and written into the task's data (`affectloop_clip`), so an interrupted push is
  adopted by the next one instead of importing twice, and tasks whose clip is gone (erased while Label
  Studio was down) are deleted.
- **Pull** (`pull`): each Label Studio annotation becomes its author's Affectloop annotation, submitted
  through services.annotating (the same lease, overlap, history and review rules as the web page). The
  author is found by email among the project's members; anyone else is a report line, never a new
  account. The idempotency key names the Label Studio annotation and its last change, so pulling again
  adds nothing; a change made in Label Studio after the first pull is reported, not applied over work
  already submitted here.
- **ML backend** (`predict_results`, `backend_model_version`): answers from stored predictions only; the
  web process never runs a model.
- **Erasure** (`forget_clips`): an erased clip's task is deleted once the erasure commits; if Label Studio
  cannot be reached the erasure still stands, the failure is logged, and the next push deletes the orphan.

Every step reports one line per clip or annotation (Outcome), like the imports do.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from urllib.parse import urljoin
from xml.sax.saxutils import quoteattr

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models import Q

from .. import signed_media
from ..models import Clip, Prediction, Project
from ..project_config import project_config

log = logging.getLogger(__name__)

TIMEOUT_S = 30.0
PAGE_SIZE = 100
IMPORT_BATCH = 200
# The names in our labelling config: pull reads these back.
VIDEO, TRANSCRIPT, TAXONOMY, FREE_TEXT = "video", "transcript", "emotions", "other_emotions"
_SPLIT_WORDS = re.compile(r"[,;\n]+")


class LabelStudioError(RuntimeError):
    """Not connected, misconfigured, or Label Studio refused: safe to show."""


@dataclass(frozen=True)
class Outcome:
    status: str  # imported | updated | predicted | deleted | skipped | error
    what: str
    reason: str = ""

    def text(self) -> str:
        return f"{self.status} {self.what}: {self.reason}" if self.reason else f"{self.status} {self.what}"


@dataclass
class Report:
    ls_project: int | None = None
    outcomes: list[Outcome] = field(default_factory=list)

    def add(self, status: str, what: str, reason: str = "") -> None:
        self.outcomes.append(Outcome(status, what, reason))

    def count(self, status: str) -> int:
        return sum(1 for o in self.outcomes if o.status == status)

    def lines(self) -> list[str]:
        return [o.text() for o in self.outcomes]

    def summary(self) -> str:
        counts = ", ".join(f"{status} {self.count(status)}" for status in
                           ("imported", "updated", "predicted", "deleted", "skipped", "error")
                           if self.count(status))
        return f"Label Studio project {self.ls_project}: {counts or 'nothing to do'}"


# --- connection ------------------------------------------------------------------------------------------
def api_key() -> str:
    return getattr(settings, "LABEL_STUDIO_API_KEY", "") or ""


def public_url() -> str:
    return getattr(settings, "PUBLIC_BASE_URL", "") or ""


def is_connected(project: Project) -> bool:
    section = project_config(project).labelstudio
    return bool(section.url and api_key())


def make_client(url: str):
    """The SDK client (tests replace this with one on a mock transport)."""
    try:
        from label_studio_sdk.client import LabelStudio
    except ImportError:
        raise LabelStudioError("label-studio-sdk is not installed (pip install 'affectloop[labelstudio]')") from None
    return LabelStudio(base_url=url, api_key=api_key(), timeout=TIMEOUT_S)


def _client(project: Project):
    section = project_config(project).labelstudio
    if not section.url:
        raise LabelStudioError(f"Project {project.name} is not connected: set config.labelstudio.url.")
    if not api_key():
        raise LabelStudioError("No Label Studio API key: set AFFECTLOOP_LABEL_STUDIO_API_KEY (or …_FILE).")
    return make_client(section.url.rstrip("/")), section


def _remote_errors() -> tuple[type[Exception], ...]:
    """What a call to Label Studio may raise: the SDK's ApiError (one subclass per status), a transport error,
    or a response that does not parse. Imported late: the SDK is an optional extra."""
    import httpx
    from label_studio_sdk.core.api_error import ApiError

    return ApiError, httpx.HTTPError, ValueError


def _status(exc: Exception) -> int | None:
    return getattr(exc, "status_code", None)


def _describe(exc: Exception) -> str:
    status = _status(exc)
    body = getattr(exc, "body", None)
    text = f"HTTP {status}: {body}" if status else f"{type(exc).__name__}: {exc}"
    return text[:300]


def _translated(step):
    """A step whose unexpected Label Studio failure (a listing that fails half-way, the server gone) becomes
    a LabelStudioError, which commands and pages show; per-item failures are report lines instead."""
    @functools.wraps(step)
    def run(*args, **kwargs):
        try:
            return step(*args, **kwargs)
        except _remote_errors() as exc:
            raise LabelStudioError(f"Label Studio failed: {_describe(exc)}") from None
    return run


def _plain(obj) -> dict:
    if isinstance(obj, dict):
        return obj
    return obj.dict() if hasattr(obj, "dict") else dict(obj)


# --- the labelling config ----------------------------------------------------------------------------------
def labelling_config(project: Project) -> str:
    """Video, transcript, a Taxonomy of the vocabulary (families, then their canonical terms) and a free-text
    box for words outside it. Only confirmed terms: a proposed word waiting in `unassigned` is not offered."""
    from ml.vocabulary import UNASSIGNED

    from .vocabulary import project_vocabulary

    families: dict[str, list[str]] = {}
    for term in project_vocabulary(project).terms():
        if term.family and term.family != UNASSIGNED:
            families.setdefault(term.family, []).append(term.term)
    choices = "\n".join(
        f"    <Choice value={quoteattr(family)}>\n"
        + "\n".join(f"      <Choice value={quoteattr(word)}/>" for word in sorted(words))
        + "\n    </Choice>"
        for family, words in sorted(families.items()))
    return (
        "<View>\n"
        f'  <Header value="$name"/>\n'
        f'  <Video name="{VIDEO}" value="${VIDEO}"/>\n'
        f'  <Text name="{TRANSCRIPT}" value="${TRANSCRIPT}"/>\n'
        f'  <Taxonomy name="{TAXONOMY}" toName="{TRANSCRIPT}" leafsOnly="true" showFullPath="false">\n'
        f"{choices}\n"
        "  </Taxonomy>\n"
        f'  <TextArea name="{FREE_TEXT}" toName="{TRANSCRIPT}" maxSubmissions="1" editable="true" '
        f'placeholder="Other emotion words, comma separated"/>\n'
        "</View>\n")


def _media_url(clip: Clip) -> str:
    base = public_url()
    if not base:
        raise LabelStudioError("Set AFFECTLOOP_PUBLIC_URL (this server's address as Label Studio's users reach "
                               "it): task media are signed links to it.")
    return urljoin(base.rstrip("/") + "/", signed_media.url_for(None, clip).lstrip("/"))


def task_data(clip: Clip) -> dict:
    return {VIDEO: _media_url(clip), TRANSCRIPT: clip.transcript or "", "name": clip.name,
            "affectloop_clip": clip.pk}


# --- predictions in Label Studio's format -------------------------------------------------------------------
def shown_prediction(clip: Clip) -> Prediction | None:
    """What goes to Label Studio for a clip: its newest fused prediction, else its newest of any backend."""
    preds = Prediction.objects.filter(clip=clip).order_by("-created_at", "-id")
    return preds.filter(backend="fused").first() or preds.first()


def prediction_payload(prediction: Prediction, vocabulary=None) -> dict:
    """{"result", "score", "model_version"}: vocabulary terms as Taxonomy paths, other words as free text."""
    if vocabulary is None:
        from .vocabulary import project_vocabulary

        vocabulary = project_vocabulary(prediction.clip.project)
    paths, other, scores = [], [], []
    for label in prediction.labels or []:
        term = label.get("term") if isinstance(label, dict) else None
        if not term:
            continue
        if isinstance(label.get("score"), (int, float)):
            scores.append(float(label["score"]))
        canonical = vocabulary.canonical(term)
        family = vocabulary.family(term) if canonical else None
        if canonical and family:
            if [family, canonical] not in paths:
                paths.append([family, canonical])
        elif term not in other:
            other.append(term)
    result = []
    if paths:
        result.append({"from_name": TAXONOMY, "to_name": TRANSCRIPT, "type": "taxonomy",
                       "value": {"taxonomy": paths}})
    if other:
        result.append({"from_name": FREE_TEXT, "to_name": TRANSCRIPT, "type": "textarea",
                       "value": {"text": [", ".join(other)]}})
    score = round(sum(scores) / len(scores), 4) if scores else None
    return {"result": result, "score": score, "model_version": prediction.model_version}


def labels_from_result(result: Iterable[dict]) -> list[str]:
    """The emotion words of a Label Studio result: each Taxonomy path's leaf, then the free-text words."""
    words: list[str] = []
    for region in result or []:
        value = region.get("value") or {}
        if region.get("type") == "taxonomy" or "taxonomy" in value:
            for path in value.get("taxonomy") or []:
                if path:
                    words.append(str(path[-1]))
        elif region.get("type") == "textarea" or "text" in value:
            for text in value.get("text") or []:
                words += [w.strip() for w in _SPLIT_WORDS.split(str(text)) if w.strip()]
    seen, out = set(), []
    for word in words:
        if word.lower() not in seen:
            seen.add(word.lower())
            out.append(word)
    return out


# --- push ---------------------------------------------------------------------------------------------------
def _task_rows(project: Project, ls_project: int):
    from ..models import LabelStudioTask

    return LabelStudioTask.objects.filter(clip__project=project, ls_project=ls_project)


def _ensure_project(client, project: Project, section, report: Report, actor) -> int:
    config = labelling_config(project)
    if section.project_id:
        try:
            current = _plain(client.projects.get(id=section.project_id))
        except _remote_errors() as exc:
            raise LabelStudioError(f"Label Studio project {section.project_id} cannot be read: "
                                   f"{_describe(exc)}") from None
        if (current.get("label_config") or "").strip() != config.strip():
            try:
                client.projects.update(id=section.project_id, label_config=config)
            except _remote_errors() as exc:
                raise LabelStudioError(f"Label Studio refused the labelling config: {_describe(exc)}") from None
            report.add("updated", f"project {section.project_id}", "labelling config")
        return section.project_id
    try:
        created = _plain(client.projects.create(title=project.name[:50], label_config=config,
                                                description=f"Affectloop project {project.slug}"))
    except _remote_errors() as exc:
        raise LabelStudioError(f"Label Studio refused to create the project: {_describe(exc)}") from None
    ls_project = int(created["id"])
    from . import projects

    raw = dict(project.config or {})
    raw["labelstudio"] = {**(raw.get("labelstudio") or {}), "project_id": ls_project}
    projects.update_config(project, raw, actor=actor)
    project.refresh_from_db(fields=["config"])
    report.add("imported", f"project {ls_project}", "created in Label Studio")
    return ls_project


def list_tasks(client, ls_project: int, *, fields: str = "task_only") -> Iterator[dict]:
    """Every task of a Label Studio project, page by page (stops at `total`: asking past the end is a 404)."""
    page, seen = 1, 0
    while True:
        pager = client.tasks.list(project=ls_project, fields=fields, page=page, page_size=PAGE_SIZE)
        items = [_plain(t) for t in (pager.items or [])]
        yield from items
        seen += len(items)
        total = getattr(pager.response, "total", None) if getattr(pager, "response", None) else None
        if not items or (total is not None and seen >= total):
            return
        page += 1


def _reconcile(client, project: Project, ls_project: int, report: Report) -> dict[int, int]:
    """clip id → task id after adopting tasks we imported but did not record, and deleting tasks whose clip
    is gone. Tasks without our clip key are someone else's and left alone."""
    from ..models import LabelStudioTask

    known = dict(_task_rows(project, ls_project).values_list("clip_id", "task_id"))
    by_task = {task: clip for clip, task in known.items()}
    listed: dict[int, int] = {}
    for task in list_tasks(client, ls_project):
        clip_id = (task.get("data") or {}).get("affectloop_clip")
        if isinstance(clip_id, int):
            listed[int(task["id"])] = clip_id
    existing = set(project.clips.filter(pk__in=set(listed.values())).values_list("pk", flat=True))
    for task_id, clip_id in listed.items():
        if clip_id not in existing:
            _delete_one(client, task_id, report, f"task {task_id}", "its clip is no longer here")
        elif task_id not in by_task and clip_id not in known:
            LabelStudioTask.objects.get_or_create(clip_id=clip_id, ls_project=ls_project,
                                                  defaults={"task_id": task_id})
            known[clip_id] = task_id
            report.add("skipped", f"task {task_id}", "adopted: imported by an earlier, interrupted push")
    return known


@_translated
def push(project: Project, *, actor=None) -> Report:
    """Create or update the Label Studio project, import new clips, refresh the others, send new predictions."""
    from ..models import LabelStudioTask
    from .vocabulary import project_vocabulary

    client, section = _client(project)
    report = Report()
    ls_project = _ensure_project(client, project, section, report, actor)
    report.ls_project = ls_project
    known = _reconcile(client, project, ls_project, report)

    clips = list(project.clips.filter(status=Clip.Status.READY).order_by("pk"))
    new = [clip for clip in clips if clip.pk not in known]
    imported: set[int] = set()
    for start in range(0, len(new), IMPORT_BATCH):
        batch = new[start:start + IMPORT_BATCH]
        try:
            response = client.projects.import_tasks(ls_project, request=[{"data": task_data(c)} for c in batch],
                                                    return_task_ids=True)
        except _remote_errors() as exc:
            for clip in batch:
                report.add("error", clip.name, f"import refused: {_describe(exc)}")
            continue
        ids = list(getattr(response, "task_ids", None) or [])
        if len(ids) != len(batch):  # an older server without return_task_ids: find them by our key
            listed = {(t.get("data") or {}).get("affectloop_clip"): int(t["id"])
                      for t in list_tasks(client, ls_project)}
            ids = [listed.get(clip.pk) for clip in batch]
        for clip, task_id in zip(batch, ids):
            if task_id is None:
                report.add("error", clip.name, "imported, but Label Studio did not say as which task")
                continue
            LabelStudioTask.objects.get_or_create(clip=clip, ls_project=ls_project, defaults={"task_id": task_id})
            known[clip.pk] = task_id
            imported.add(clip.pk)
            report.add("imported", clip.name, f"task {task_id}")

    for clip in clips:
        task_id = known.get(clip.pk)
        if task_id is None or clip.pk in imported:
            continue
        try:
            client.tasks.update(id=str(task_id), data=task_data(clip))
        except _remote_errors() as exc:
            report.add("error", clip.name, f"task {task_id} not updated: {_describe(exc)}")
            continue
        report.add("updated", clip.name, f"task {task_id}: media link and transcript renewed")

    if section.push_predictions:
        vocabulary = project_vocabulary(project)
        rows = {row.clip_id: row for row in _task_rows(project, ls_project)}
        for clip in clips:
            row = rows.get(clip.pk)
            prediction = shown_prediction(clip) if row else None
            if prediction is None or row.prediction_version == prediction.model_version:
                continue
            payload = prediction_payload(prediction, vocabulary)
            try:
                client.predictions.create(task=row.task_id, result=payload["result"],
                                          model_version=payload["model_version"],
                                          **({"score": payload["score"]} if payload["score"] is not None else {}))
            except _remote_errors() as exc:
                report.add("error", clip.name, f"prediction not sent: {_describe(exc)}")
                continue
            LabelStudioTask.objects.filter(pk=row.pk).update(prediction_version=prediction.model_version)
            report.add("predicted", clip.name, f"task {row.task_id}: {prediction.model_version}")
    _record(project, actor, "labelstudio.pushed", report)
    return report


# --- pull ---------------------------------------------------------------------------------------------------
def _members_by_email(project: Project) -> dict[str, object]:
    users = get_user_model().objects.filter(Q(memberships__project=project) | Q(is_superuser=True),
                                            is_active=True).exclude(email="").distinct()
    out: dict[str, object] = {}
    for user in users:
        out.setdefault(user.email.strip().lower(), user)
    return out


def _ls_emails(client) -> dict[int, str]:
    try:
        return {int(u.id): (u.email or "").strip().lower() for u in client.users.list()}
    except _remote_errors() as exc:
        raise LabelStudioError(f"Label Studio's users cannot be read: {_describe(exc)}") from None


def _author_email(annotation: dict, emails: dict[int, str]) -> str:
    author = annotation.get("completed_by")
    if isinstance(author, dict):
        return (author.get("email") or emails.get(author.get("id"), "") or "").strip().lower()
    return emails.get(author, "") if isinstance(author, int) else ""


@_translated
def pull(project: Project, *, actor=None) -> Report:
    """Bring Label Studio's annotations in as submitted Affectloop annotations (see the module docstring)."""
    from ..models import LabelStudioTask
    from . import annotating

    client, section = _client(project)
    if not section.project_id:
        raise LabelStudioError(f"Project {project.name} has no Label Studio project yet: push first.")
    ls_project = section.project_id
    report = Report(ls_project=ls_project)
    emails = _ls_emails(client)
    members = _members_by_email(project)
    by_task = dict(_task_rows(project, ls_project).values_list("task_id", "clip_id"))
    clips = {}
    for task in list_tasks(client, ls_project, fields="all"):
        task_id = int(task["id"])
        clip_id = by_task.get(task_id) or (task.get("data") or {}).get("affectloop_clip")
        annotations = [a for a in task.get("annotations") or [] if isinstance(a, dict)]
        if not annotations:
            continue
        if clip_id not in clips:
            clips[clip_id] = Clip.objects.filter(pk=clip_id, project=project).first() if isinstance(clip_id, int) \
                else None
        clip = clips[clip_id]
        if clip is None:
            report.add("error", f"task {task_id}", "no clip of this project: push first, or the clip was erased")
            continue
        if task_id not in by_task:
            LabelStudioTask.objects.get_or_create(clip=clip, ls_project=ls_project, defaults={"task_id": task_id})
        # A person's newest annotation of the task is theirs; one Affectloop annotation per person and clip.
        newest: dict[str, dict] = {}
        for ann in sorted(annotations, key=lambda a: (str(a.get("updated_at") or ""), a.get("id") or 0)):
            what = f"{clip.name} (task {task_id}, annotation {ann.get('id')})"
            email = _author_email(ann, emails)
            if ann.get("was_cancelled"):
                report.add("skipped", what, "skipped in Label Studio")
                continue
            if not email:
                report.add("error", what, "its author has no email in Label Studio: cannot tell who it is")
                continue
            if email in newest:
                report.add("skipped", f"{clip.name} (task {task_id}, annotation {newest[email].get('id')})",
                           f"{email} has a newer annotation of this task")
            newest[email] = ann
        for email, ann in newest.items():
            what = f"{clip.name} (task {task_id}, annotation {ann.get('id')})"
            user = members.get(email)
            if user is None:
                report.add("error", what, f"{email} is no member of {project.name} here: add the account to the "
                                          f"project (no account is created automatically), then pull again")
                continue
            _pull_one(annotating, clip, user, ann, what, report)
    _record(project, actor, "labelstudio.pulled", report)
    return report


def _pull_one(annotating, clip: Clip, user, ann: dict, what: str, report: Report) -> None:
    from ..models import Annotation

    key = f"ls:{ann.get('id')}:{str(ann.get('updated_at') or '')[:40]}"[:64]
    existing = Annotation.objects.filter(clip=clip, annotator=user).first()
    if existing is not None and existing.last_idempotency_key == key:
        report.add("skipped", what, "already pulled")
        return
    words = labels_from_result(ann.get("result") or [])
    if not words:
        report.add("skipped", what, "no emotion words in it")
        return
    if existing is not None and existing.status == Annotation.Status.SUBMITTED:
        report.add("skipped", what, f"{user.get_username()} already submitted this clip here; changes made in "
                                    f"Label Studio after that are not applied")
        return
    from . import queue

    try:
        # A place on the clip first, by the queue's rules: a clip closed to them (verified, overlap full)
        # gets a report line and no stray draft.
        queue.claim(user, clip)
    except queue.QueueError as exc:
        report.add("error", what, str(exc))
        return
    try:
        annotation = annotating.start(user, clip)
        annotating.submit(annotation, labels=words, base_version=annotation.version, idempotency_key=key,
                          lead_time=ann.get("lead_time") or 0)
    except (annotating.Conflict, annotating.AnnotationError, ValueError) as exc:
        queue.release(user, clip)
        report.add("skipped" if isinstance(exc, annotating.Conflict) else "error", what, str(exc))
        return
    report.add("imported", what, f"by {user.get_username()}: {', '.join(words)}")


def _record(project: Project, actor, action: str, report: Report) -> None:
    from . import audit

    counts = {status: report.count(status) for status in ("imported", "updated", "predicted", "deleted",
                                                           "skipped", "error")}
    audit.record(action, project, actor=actor if getattr(actor, "pk", None) else None, project=project,
                 changes={"ls_project": report.ls_project, **counts})


# --- deletion and erasure -----------------------------------------------------------------------------------
def _delete_one(client, task_id: int, report: Report, what: str, why: str) -> bool:
    try:
        client.tasks.delete(id=str(task_id))
    except _remote_errors() as exc:
        if _status(exc) == 404:
            report.add("skipped", what, "already gone from Label Studio")
            return True
        report.add("error", what, f"not deleted: {_describe(exc)}")
        return False
    report.add("deleted", what, why)
    return True


@_translated
def delete_tasks(project: Project, *, clip_ids: Iterable[int] = (), task_ids: Iterable[int] = ()) -> Report:
    """Delete these clips' tasks (and these task ids) from the mapped Label Studio project."""
    from ..models import LabelStudioTask

    client, section = _client(project)
    report = Report(ls_project=section.project_id)
    rows = list(LabelStudioTask.objects.filter(clip_id__in=list(clip_ids)).values_list("pk", "task_id"))
    targets = sorted({task for _pk, task in rows} | {int(t) for t in task_ids})
    for task_id in targets:
        if _delete_one(client, task_id, report, f"task {task_id}", "deleted on request"):
            LabelStudioTask.objects.filter(task_id=task_id, ls_project=section.project_id).delete()
    return report


def forget_clips(project: Project, clip_ids: list[int]) -> None:
    """Called by erasure inside its transaction: delete the clips' tasks once it commits. Never raises: Label
    Studio being down must not undo an erasure (the next push deletes what is left)."""
    try:
        from ..models import LabelStudioTask

        if not project_config(project).labelstudio.url:
            return
        task_ids = list(LabelStudioTask.objects.filter(clip_id__in=clip_ids).values_list("task_id", flat=True))
    except Exception:
        log.exception("Label Studio: cannot list the tasks of erased clips in project %s", project.pk)
        return
    if not task_ids:
        return
    project_id = project.pk

    def delete_later():
        try:
            fresh = Project.objects.get(pk=project_id)
            report = delete_tasks(fresh, task_ids=task_ids)
            for outcome in report.outcomes:
                if outcome.status == "error":
                    log.warning("Label Studio: erased clip's %s", outcome.text())
        except Exception:
            log.warning("Label Studio: erased clips' tasks %s not deleted; the next push removes them", task_ids,
                        exc_info=True)

    transaction.on_commit(delete_later)


# --- the ML backend -----------------------------------------------------------------------------------------
def backend_model_version(project: Project) -> str:
    """The version Label Studio shows for our backend: the newest stored fused prediction's, or a placeholder."""
    latest = (Prediction.objects.filter(clip__project=project, backend="fused").order_by("-created_at", "-id")
              .values_list("model_version", flat=True).first())
    return latest or f"affectloop-{project.slug}-none"


def predict_results(project: Project, tasks: list) -> list[dict]:
    """One stored-prediction answer per task, in order; a task we know nothing of gets an empty result."""
    from ..models import LabelStudioTask
    from .vocabulary import project_vocabulary

    vocabulary = project_vocabulary(project)
    task_ids = [t.get("id") for t in tasks if isinstance(t, dict) and isinstance(t.get("id"), int)]
    mapped = dict(LabelStudioTask.objects.filter(task_id__in=task_ids, clip__project=project)
                  .values_list("task_id", "clip_id"))
    version = backend_model_version(project)
    out = []
    for task in tasks:
        task = task if isinstance(task, dict) else {}
        clip_id = mapped.get(task.get("id")) or (task.get("data") or {}).get("affectloop_clip")
        clip = Clip.objects.filter(pk=clip_id, project=project).first() if isinstance(clip_id, int) else None
        prediction = shown_prediction(clip) if clip is not None else None
        if prediction is None:
            out.append({"result": [], "score": 0.0, "model_version": version})
            continue
        payload = prediction_payload(prediction, vocabulary)
        payload["score"] = payload["score"] if payload["score"] is not None else 0.0
        out.append(payload)
    return out


# --- off the web request --------------------------------------------------------------------------------------
STEPS = ("push", "pull")


def sync_later(project: Project, step: str, *, actor=None) -> None:
    """Queue a push or pull on a media worker (task affectloop.media.labelstudio_sync), on commit."""
    from .. import dispatch

    if step not in STEPS:
        raise ValueError(f"unknown Label Studio step {step!r}")
    dispatch.labelstudio_sync(project.pk, step, actor.pk if getattr(actor, "pk", None) else None)


def run_step(project_id: int, step: str, actor_id: int | None) -> str:
    """The task's body: the step's summary; its error lines go to the log (the audit event has the counts)."""
    project = Project.objects.filter(pk=project_id).first()
    if project is None or step not in STEPS:
        return "nothing to do"
    actor = get_user_model().objects.filter(pk=actor_id).first() if actor_id else None
    try:
        report = push(project, actor=actor) if step == "push" else pull(project, actor=actor)
    except LabelStudioError as exc:
        log.warning("Label Studio %s of project %s failed: %s", step, project.slug, exc)
        return f"failed: {exc}"
    for outcome in report.outcomes:
        if outcome.status == "error":
            log.warning("Label Studio %s of project %s: %s", step, project.slug, outcome.text())
    return report.summary()
