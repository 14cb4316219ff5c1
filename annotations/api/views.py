"""The REST API's endpoints. Thin, like the web views: find the project or clip through permissions (the
UI's membership rule: 404 outside one's projects, 403 for a role too low), call the one service or selector
the web page calls, shape the answer with a serializer.

Errors are JSON: {"error": "..."} (and {"errors": [...]} where several keys are wrong); a stale annotation
version is 409 with the stored annotation.
"""

from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.db import IntegrityError
from django.http import Http404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import generics, status
from rest_framework.exceptions import PermissionDenied, ValidationError
from rest_framework.parsers import JSONParser, MultiPartParser
from rest_framework.response import Response
from rest_framework.views import APIView
from rest_framework.views import exception_handler as drf_exception_handler

from .. import selectors
from ..filters import ClipFilter
from ..http import serve_media
from ..models import (
    Annotation,
    DatasetSnapshot,
    EmotionTerm,
    Export,
    Membership,
    ModelVersion,
    Prediction,
    Review,
    Role,
    TrainingRun,
)
from ..project_config import ConfigError
from ..request_limits import accepts_uploads
from ..services import annotating, exports, ingest, projects, queue, reviews, snapshots, training, vocabulary
from . import permissions as perms
from . import serializers as s
from .pagination import ClipCursor


def exception_handler(exc, context):
    """DRF's handler, with every error under "error" (the web pages' JSON calls answer the same way); a
    serializer's field errors also stay under "errors"."""
    response = drf_exception_handler(exc, context)
    if response is None or not isinstance(response.data, dict):
        return response
    data = response.data
    if "detail" in data:
        response.data = {"error": str(data["detail"])}
    elif "error" in data:
        error = data["error"]
        response.data = {**data, "error": str(error[0] if isinstance(error, list) and len(error) == 1 else error)}
        if isinstance(data.get("errors"), list):
            response.data["errors"] = [str(e) for e in data["errors"]]
    else:
        lines = [f"{key}: {' '.join(str(m) for m in (msgs if isinstance(msgs, list) else [msgs]))}"
                 for key, msgs in data.items()]
        response.data = {"error": "; ".join(lines).replace("non_field_errors: ", ""), "errors": data}
    return response


def _error(message: str, code: int = status.HTTP_400_BAD_REQUEST, **extra) -> Response:
    return Response({"error": message, **extra}, status=code)


# --- projects ---------------------------------------------------------------------------------------------
class ProjectList(generics.ListAPIView):
    serializer_class = s.ProjectSerializer

    def get_queryset(self):
        return selectors.projects_for(self.request.user).order_by("name")

    def get_serializer_context(self):
        roles = dict(Membership.objects.filter(user=self.request.user).values_list("project_id", "role"))
        return {**super().get_serializer_context(), "roles": roles}


class ProjectDetail(APIView):
    serializer_class = s.ProjectSerializer

    def _answer(self, request, project):
        roles = {project.pk: getattr(selectors.membership(request.user, project), "role", None)}
        return Response(s.ProjectSerializer(project, context={"request": request, "roles": roles}).data)

    @extend_schema(responses=s.ProjectSerializer, summary="A project (its config for managers only)")
    def get(self, request, slug):
        return self._answer(request, perms.project(request, slug))

    @extend_schema(request=s.ProjectConfigSerializer, responses={200: s.ProjectSerializer, 400: s.ErrorSerializer},
                   summary="Managers: replace the project's configuration (validated, audited)")
    def patch(self, request, slug):
        project = perms.project(request, slug, Role.MANAGER)
        body = s.ProjectConfigSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            # The admin's path: validated by the typed config (errors name each key's full path), frozen keys
            # refused, audited with its diff.
            project = projects.update_config(project, body.validated_data["config"], actor=request.user)
        except ConfigError as exc:
            return _error(str(exc), errors=exc.errors)
        return self._answer(request, project)


# --- clips ------------------------------------------------------------------------------------------------
def _may_upload(request, slug):
    selectors.project_for(request.user, slug, Role.MANAGER)  # 404 for anyone else, before the body is read


def _upload_request_bytes() -> int:
    return settings.MAX_UPLOAD_BYTES + 1024 * 1024


def _import_path(raw: str) -> Path:
    """A path under settings.API_IMPORT_ROOT, or ValidationError: never outside it, never a URL."""
    if not settings.API_IMPORT_ROOT:
        raise ValidationError({"error": "Import by server path is off (set AFFECTLOOP_IMPORT_ROOT)."})
    root = Path(settings.API_IMPORT_ROOT).resolve()
    rel = Path(raw)
    if "://" in raw or rel.is_absolute() or ".." in rel.parts:
        raise ValidationError({"error": "path must be relative to the import root, without '..'"})
    path = (root / rel).resolve()
    try:
        path.relative_to(root)
    except ValueError:
        raise ValidationError({"error": "path leaves the import root"}) from None
    if not path.is_file():
        raise ValidationError({"error": f"no file {raw!r} under the import root"})
    return path


# The clip filters every member may use; the others (labels, scores, annotators, models) need a reviewer.
OPEN_FILTERS = {"name", "status", "label_state"}


class ClipList(generics.ListCreateAPIView):
    """Clips of a project, filtered by the managers' filter definition (annotations.filters.ClipFilter)."""

    serializer_class = s.ClipSerializer
    pagination_class = ClipCursor
    parser_classes = [MultiPartParser, JSONParser]

    def get_throttles(self):
        self.throttle_scope = "upload" if self.request.method == "POST" else None
        return super().get_throttles()

    def get_queryset(self):
        project = perms.project(self.request, self.kwargs["slug"])
        clips = project.clips.all()
        params = {k: v for k, v in self.request.query_params.items() if k in ClipFilter.base_filters}
        labelled = sorted(set(params) - OPEN_FILTERS)
        if labelled and not selectors.has_role(self.request.user, project, Role.REVIEWER):
            # Annotators label independently: filtering by others' labels, annotators or model scores would
            # show them what the clip page hides.
            raise PermissionDenied(f"Filtering by {', '.join(labelled)} needs the reviewer role.")
        if params:
            clip_filter = ClipFilter(params, queryset=clips, project=project)
            if not clip_filter.is_valid():
                raise ValidationError({"error": "invalid filter", "errors": {
                    k: [str(e) for e in v] for k, v in clip_filter.errors.items()}})
            clips = clip_filter.qs
        return clips

    @extend_schema(parameters=[OpenApiParameter(name, OpenApiTypes.STR, description=str(f.label or name))
                               for name, f in ClipFilter.base_filters.items()],
                   summary="Clips of a project (cursor pages, newest first)")
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    @extend_schema(request={"multipart/form-data": s.ClipCreateSerializer, "application/json": s.ClipCreateSerializer},
                   responses={201: s.IngestResultSerializer, 200: s.IngestResultSerializer,
                              400: s.IngestResultSerializer},
                   summary="Managers: add a clip by upload, or by a path under the import root")
    def post(self, request, slug):
        project = perms.project(request, slug, Role.MANAGER)
        body = s.ClipCreateSerializer(data=request.data)  # reading request.data parses the body
        refused = getattr(request._request, "upload_refused", [])
        if refused:  # dropped while the body was read (request_limits): over the size cap
            return Response({"status": "rejected", "file": refused[0]["file"] or "", "line": refused[0]["line"],
                             "clip": None}, status=status.HTTP_400_BAD_REQUEST)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        if data.get("file"):
            outcome = ingest.ingest_upload(project, data["file"], actor=request.user, transcript=data["transcript"],
                                           language=data["language"])
        else:
            path = _import_path(data["path"])
            cand = ingest.Candidate(path=path, display=data["path"], transcript=data["transcript"] or None,
                                    language=data["language"], metadata={"import_path": data["path"]})
            outcome = next(ingest.import_candidates(project, [cand], source="import:folder", actor=request.user))
        clip = project.clips.filter(pk=outcome.clip_id).first() if outcome.clip_id else None
        code = {"imported": status.HTTP_201_CREATED, "duplicate": status.HTTP_200_OK}.get(
            outcome.status, status.HTTP_400_BAD_REQUEST)
        return Response({"status": outcome.status, "file": outcome.display, "line": outcome.line(),
                         "clip": s.ClipSerializer(clip, context={"request": request}).data if clip else None},
                        status=code)


def clip_list_view():
    """The clip list's view, marked as an upload route: bodies up to the upload cap, from the project's
    managers only, decided on the headers before the body is read (annotations.request_limits)."""
    return accepts_uploads(_upload_request_bytes, _may_upload)(ClipList.as_view())


class ClipDetail(APIView):
    @extend_schema(responses=s.ClipSerializer, summary="A clip, with signed links to its media")
    def get(self, request, clip_id):
        clip = perms.clip(request, clip_id)
        return Response(s.ClipSerializer(clip, context={"request": request}).data)


# --- predictions ------------------------------------------------------------------------------------------
class ClipPredictions(generics.ListAPIView):
    """A clip's predictions. Annotators see none on a blind clip (a test-split clip, or a project that hides
    suggestions), as on the clip page."""

    serializer_class = s.PredictionSerializer

    def get_queryset(self):
        clip = perms.clip(self.request, self.kwargs["clip_id"])
        if (not selectors.has_role(self.request.user, clip.project, Role.REVIEWER)
                and annotating.suggestion_mode(clip) == "hide"):
            return Prediction.objects.none()
        return Prediction.objects.filter(clip=clip).order_by("backend", "-created_at", "id")


class ProjectPredictions(generics.ListAPIView):
    """Every prediction in a project (reviewers and managers); ?backend= and ?model_version= narrow it."""

    serializer_class = s.PredictionSerializer

    @extend_schema(parameters=[OpenApiParameter("backend", OpenApiTypes.STR),
                               OpenApiParameter("model_version", OpenApiTypes.STR)])
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    def get_queryset(self):
        project = perms.project(self.request, self.kwargs["slug"], Role.REVIEWER)
        rows = Prediction.objects.filter(clip__project=project)
        for key in ("backend", "model_version"):
            if self.request.query_params.get(key):
                rows = rows.filter(**{key: self.request.query_params[key]})
        return rows.order_by("clip_id", "backend", "id")


# --- annotations ------------------------------------------------------------------------------------------
def _conflict(exc: annotating.Conflict) -> Response:
    return _error(str(exc), status.HTTP_409_CONFLICT, stored=s.AnnotationSerializer(exc.annotation).data)


def _mine(request, clip_id) -> Annotation:
    clip = perms.clip(request, clip_id)
    annotation = Annotation.objects.filter(clip=clip, annotator=request.user).select_related("clip").first()
    if annotation is None:
        raise Http404("No annotation of yours on this clip: POST to start one")
    return annotation


class MyAnnotation(APIView):
    """The requesting user's own annotation of a clip, as on the clip page: start it (claims a place on the
    clip), save the draft with the version it was based on, submit it with an idempotency key."""

    @extend_schema(responses={200: s.AnnotationSerializer}, summary="My annotation of this clip")
    def get(self, request, clip_id):
        return Response(s.AnnotationSerializer(_mine(request, clip_id)).data)

    @extend_schema(request=None, responses={200: s.AnnotationSerializer, 409: s.ErrorSerializer},
                   summary="Start (or resume) my annotation: claims the clip like the queue does")
    def post(self, request, clip_id):
        clip = perms.clip(request, clip_id)
        try:
            queue.claim(request.user, clip)
        except queue.QueueError as exc:
            if not Annotation.objects.filter(clip=clip, annotator=request.user).exists():
                return _error(str(exc), status.HTTP_409_CONFLICT, code="lease")
        return Response(s.AnnotationSerializer(annotating.start(request.user, clip)).data)

    @extend_schema(request=s.DraftSerializer, responses={200: s.AnnotationSerializer, 409: s.ConflictSerializer,
                                                         400: s.ErrorSerializer},
                   summary="Save my draft (409 on a stale version)")
    def put(self, request, clip_id):
        annotation = _mine(request, clip_id)
        body = s.DraftSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        try:
            saved = annotating.save_draft(annotation, labels=data["labels"], base_version=data["version"],
                                          lead_time=data["lead_time"])
        except annotating.Conflict as exc:
            return _conflict(exc)
        except annotating.LeaseLost as exc:
            return _error(str(exc), status.HTTP_409_CONFLICT, code="lease")
        except annotating.AnnotationError as exc:
            return _error(str(exc))
        return Response(s.AnnotationSerializer(saved).data)


class SubmitAnnotation(APIView):
    @extend_schema(request=s.SubmitSerializer, responses={200: s.AnnotationSerializer, 409: s.ConflictSerializer,
                                                          400: s.ErrorSerializer},
                   summary="Submit my annotation (idempotent per key; 409 on a stale version)")
    def post(self, request, clip_id):
        annotation = _mine(request, clip_id)
        body = s.SubmitSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        try:
            done = annotating.submit(annotation, labels=data["labels"], base_version=data["version"],
                                     idempotency_key=data["key"], lead_time=data["lead_time"])
        except annotating.Conflict as exc:
            return _conflict(exc)
        except annotating.LeaseLost as exc:
            return _error(str(exc), status.HTTP_409_CONFLICT, code="lease")
        except annotating.AnnotationError as exc:
            return _error(str(exc))
        return Response(s.AnnotationSerializer(done).data)


# --- reviews ----------------------------------------------------------------------------------------------
class ClipReviews(APIView):
    """Reviewers: the clip's submitted annotations and verdicts; POST one verdict (accept, reject, fix)."""

    @extend_schema(responses=s.ReviewSerializer(many=True), summary="Reviews of the clip's annotations")
    def get(self, request, clip_id):
        clip = perms.clip(request, clip_id, Role.REVIEWER)
        rows = Review.objects.filter(annotation__clip=clip).order_by("created_at", "id")
        return Response(s.ReviewSerializer(rows, many=True).data)

    @extend_schema(request=s.ReviewCreateSerializer, responses={201: s.ReviewSerializer, 400: s.ErrorSerializer,
                                                                409: s.ErrorSerializer},
                   summary="Record a verdict on a submitted annotation")
    def post(self, request, clip_id):
        clip = perms.clip(request, clip_id, Role.REVIEWER)
        body = s.ReviewCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        annotation = Annotation.objects.filter(pk=data["annotation"], clip=clip,
                                               status=Annotation.Status.SUBMITTED).first()
        if annotation is None:
            return _error("That annotation is not waiting for review.", status.HTTP_409_CONFLICT)
        if annotation.annotator_id == request.user.pk:
            return _error("You cannot review your own annotation.", status.HTTP_403_FORBIDDEN)
        fixed = None
        try:
            if data["decision"] == Review.Decision.FIX:
                fixed = annotating.clean_labels(data.get("labels") or [])
            verdict = reviews.review(annotation, reviewer=request.user, decision=data["decision"],
                                     reason=data["reason"].strip(), fixed_labels=fixed, version=data["version"])
        except (annotating.AnnotationError, reviews.ReviewError) as exc:
            return _error(str(exc))
        except IntegrityError:  # one verdict per reviewer and version
            return _error("Already reviewed.", status.HTTP_409_CONFLICT)
        return Response(s.ReviewSerializer(verdict).data, status=status.HTTP_201_CREATED)


class ReviewQueue(generics.ListAPIView):
    """Reviewers: the submitted annotations of this clip that wait for a verdict on their current version."""

    serializer_class = s.SubmittedAnnotationSerializer
    pagination_class = None

    def get_queryset(self):
        clip = perms.clip(self.request, self.kwargs["clip_id"], Role.REVIEWER)
        return clip.annotations.filter(status=Annotation.Status.SUBMITTED).order_by("submitted_at", "id")


# --- vocabulary -------------------------------------------------------------------------------------------
class Vocabulary(generics.ListAPIView):
    """The project's terms (?q= autocompletes over every surface form, as the clip page does)."""

    serializer_class = s.TermSerializer

    @extend_schema(parameters=[OpenApiParameter("q", OpenApiTypes.STR, description="Text to complete")])
    def get(self, request, *args, **kwargs):
        if request.query_params.get("q"):
            project = perms.project(request, kwargs["slug"])
            return Response({"results": vocabulary.complete(project, request.query_params["q"])})
        return super().get(request, *args, **kwargs)

    def get_queryset(self):
        project = perms.project(self.request, self.kwargs["slug"])
        return EmotionTerm.objects.filter(project=project).select_related("canonical").order_by("term")

    @extend_schema(request=s.ProposeSerializer, responses={201: s.ProposedSerializer, 400: s.ErrorSerializer},
                   summary="Propose a term the vocabulary lacks (flagged for a manager)")
    def post(self, request, slug):
        project = perms.project(request, slug)
        body = s.ProposeSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            row = vocabulary.propose_term(project, body.validated_data["word"], actor=request.user)
        except vocabulary.VocabularyChangeError as exc:
            return _error(str(exc))
        return Response({"word": row.term, "term": row.canonical.term if row.canonical_id else row.term,
                         "family": row.family, "pending": row.flagged}, status=status.HTTP_201_CREATED)


class _ManagerList(generics.ListAPIView):
    """Managers only: one project's rows of `model` (reached from it through `project_field`), newest first."""

    model = None
    project_field = "project"

    def get_queryset(self):
        project = perms.project(self.request, self.kwargs["slug"], Role.MANAGER)
        return self.model.objects.filter(**{self.project_field: project}).order_by("-created_at", "-id")


# --- model versions ---------------------------------------------------------------------------------------
class ModelVersions(_ManagerList):
    serializer_class = s.ModelVersionSerializer
    model = ModelVersion


class ModelVersionDetail(APIView):
    @extend_schema(responses=s.ModelVersionSerializer)
    def get(self, request, pk):
        return Response(s.ModelVersionSerializer(perms.in_project(request, ModelVersion, pk, Role.MANAGER)).data)


# --- training runs ----------------------------------------------------------------------------------------
class TrainingRuns(_ManagerList):
    serializer_class = s.TrainingRunSerializer
    model = TrainingRun

    @extend_schema(request=s.TrainingStartSerializer, responses={201: s.TrainingRunSerializer,
                                                                 400: s.ErrorSerializer},
                   summary="Managers: start a training run (services.training.start_run)")
    def post(self, request, slug):
        project = perms.project(request, slug, Role.MANAGER)
        body = s.TrainingStartSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        snapshot = None
        if body.validated_data["snapshot"] is not None:
            snapshot = DatasetSnapshot.objects.filter(project=project, pk=body.validated_data["snapshot"]).first()
            if snapshot is None:
                return _error("No such snapshot in this project.")
        try:
            run = training.start_run(project, actor=request.user, snapshot=snapshot,
                                     overrides=body.validated_data["overrides"])
        except training.TrainingError as exc:
            return _error(str(exc))
        return Response(s.TrainingRunSerializer(run).data, status=status.HTTP_201_CREATED)


class TrainingRunDetail(APIView):
    @extend_schema(responses=s.TrainingRunSerializer)
    def get(self, request, pk):
        return Response(s.TrainingRunSerializer(perms.in_project(request, TrainingRun, pk, Role.MANAGER)).data)


class TrainingRunCancel(APIView):
    @extend_schema(request=None, responses={200: s.TrainingRunSerializer, 409: s.ErrorSerializer},
                   summary="Managers: cancel a queued run, or ask a running one to stop")
    def post(self, request, pk):
        run = perms.in_project(request, TrainingRun, pk, Role.MANAGER)
        try:
            run = training.cancel(run, actor=request.user)
        except training.TrainingError as exc:
            return _error(str(exc), status.HTTP_409_CONFLICT)
        return Response(s.TrainingRunSerializer(run).data)


# --- snapshots --------------------------------------------------------------------------------------------
class Snapshots(_ManagerList):
    serializer_class = s.SnapshotSerializer
    model = DatasetSnapshot

    @extend_schema(request=s.FreezeSerializer, responses={201: s.SnapshotSerializer, 200: s.SnapshotSerializer,
                                                          400: s.ErrorSerializer},
                   summary="Managers: freeze the verified clips (an existing snapshot of the same data is reused)")
    def post(self, request, slug):
        project = perms.project(request, slug, Role.MANAGER)
        body = s.FreezeSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        before = set(DatasetSnapshot.objects.filter(project=project).values_list("pk", flat=True))
        try:
            snapshot = snapshots.freeze(project, actor=request.user, filters=body.validated_data["filters"] or None,
                                        name=body.validated_data["name"])
        except snapshots.SnapshotError as exc:
            return _error(str(exc))
        return Response(s.SnapshotSerializer(snapshot).data,
                        status=status.HTTP_200_OK if snapshot.pk in before else status.HTTP_201_CREATED)


class SnapshotDetail(APIView):
    @extend_schema(responses=s.SnapshotSerializer)
    def get(self, request, pk):
        return Response(s.SnapshotSerializer(perms.in_project(request, DatasetSnapshot, pk, Role.MANAGER)).data)


# --- exports ----------------------------------------------------------------------------------------------
class Exports(_ManagerList):
    serializer_class = s.ExportSerializer
    model = Export
    project_field = "snapshot__project"

    def get_serializer_context(self):
        return {**super().get_serializer_context(), "request": self.request}

    @extend_schema(request=s.ExportCreateSerializer, responses={202: s.ExportSerializer, 200: s.ExportSerializer,
                                                                400: s.ErrorSerializer},
                   summary="Managers: request an export of a snapshot (built in the background; reused when the "
                           "same snapshot, format and options were exported before)")
    def post(self, request, slug):
        project = perms.project(request, slug, Role.MANAGER)
        body = s.ExportCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        snapshot = DatasetSnapshot.objects.filter(project=project, pk=data["snapshot"]).first()
        if snapshot is None:
            return _error("No such snapshot in this project.")
        try:
            export = exports.request_export(snapshot, data["format"], data["options"], actor=request.user)
        except exports.ExportError as exc:
            return _error(str(exc))
        code = status.HTTP_200_OK if export.status == Export.Status.DONE else status.HTTP_202_ACCEPTED
        return Response(s.ExportSerializer(export, context={"request": request}).data, status=code)


class ExportDetail(APIView):
    @extend_schema(responses=s.ExportSerializer)
    def get(self, request, pk):
        export = perms.in_project(request, Export, pk, Role.MANAGER, field="snapshot__project")
        return Response(s.ExportSerializer(export, context={"request": request}).data)


class ExportDownload(APIView):
    """The export's zip, for a token as for a session: managers only, while it is built and not expired."""

    @extend_schema(responses={(200, "application/zip"): OpenApiTypes.BINARY, 410: s.ErrorSerializer},
                   summary="Managers: download a built export (410 once expired)")
    def get(self, request, pk):
        export = perms.in_project(request, Export, pk, Role.MANAGER, field="snapshot__project")
        if not exports.downloadable(export):
            return _error("This export is not available for download: it is not built, or it expired. "
                          "Request it again.", status.HTTP_410_GONE)
        name = f"{export.snapshot.name}-{exports.FORMAT_NAMES.get(export.format, export.format)}.zip"
        return serve_media(request._request, export.file.name, download_name=name)
