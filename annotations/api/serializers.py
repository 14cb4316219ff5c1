"""The shapes the API reads and writes. Input serializers only check types and sizes; every rule of the
product (labels, versions, leases, verdicts, config keys) stays in the services the views call."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from .. import signed_media
from ..models import (
    Annotation,
    Clip,
    DatasetSnapshot,
    EmotionTerm,
    Export,
    ModelVersion,
    Prediction,
    Project,
    Review,
    TrainingRun,
)


# --- projects ---------------------------------------------------------------------------------------------
class ProjectSerializer(serializers.ModelSerializer):
    """`roles` in the context: project id → the requesting user's role there. The config is shown to
    managers only (model paths and settings are theirs); others get null."""

    role = serializers.SerializerMethodField()
    config = serializers.SerializerMethodField()

    class Meta:
        model = Project
        fields = ["slug", "name", "description", "archived", "created_at", "vocabulary_version", "role", "config"]
        read_only_fields = fields

    def get_role(self, project) -> str | None:
        roles = self.context.get("roles") or {}
        return roles.get(project.pk)

    @extend_schema_field(OpenApiTypes.OBJECT)
    def get_config(self, project) -> dict | None:
        request = self.context.get("request")
        manager = self.get_role(project) == "manager" or bool(request and request.user.is_superuser)
        return project.config if manager else None


class ProjectConfigSerializer(serializers.Serializer):
    config = serializers.JSONField(help_text="The whole project configuration (see the README's keys); "
                                             "a wrong key is refused with its full path")


# --- clips ------------------------------------------------------------------------------------------------
class ClipSerializer(serializers.ModelSerializer):
    project = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    media_url = serializers.SerializerMethodField(help_text="Signed link to the video; expires "
                                                            "(settings.SIGNED_MEDIA_SECONDS)")
    thumbnail_url = serializers.SerializerMethodField(help_text="Signed link to the thumbnail, if any")

    class Meta:
        model = Clip
        fields = ["id", "project", "name", "original_name", "source", "sha256", "size_bytes", "container",
                  "duration", "fps", "width", "height", "video_codec", "audio_codec", "has_audio", "transcript",
                  "language", "metadata", "status", "label_state", "split", "priority", "error", "created_at",
                  "ready_at", "verified_at", "media_url", "thumbnail_url"]
        read_only_fields = fields

    @extend_schema_field(OpenApiTypes.URI)
    def get_media_url(self, clip) -> str | None:
        return signed_media.url_for(self.context.get("request"), clip)

    @extend_schema_field(OpenApiTypes.URI)
    def get_thumbnail_url(self, clip) -> str | None:
        return signed_media.url_for(self.context.get("request"), clip, thumbnail=True)


class ClipCreateSerializer(serializers.Serializer):
    """Either `file` (multipart upload) or `path` (a file under the server's import root), never a URL."""

    file = serializers.FileField(required=False, help_text="The video, as a multipart upload")
    path = serializers.CharField(required=False, max_length=1000,
                                 help_text="A file under the configured import root (AFFECTLOOP_IMPORT_ROOT), "
                                           "relative to it")
    transcript = serializers.CharField(required=False, allow_blank=True, default="", max_length=100_000)
    language = serializers.CharField(required=False, allow_blank=True, default="", max_length=16)

    def validate(self, attrs):
        if bool(attrs.get("file")) == bool(attrs.get("path")):
            raise serializers.ValidationError("Send either a file (multipart) or a path under the import root.")
        return attrs


class IngestResultSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=["imported", "duplicate", "rejected"])
    file = serializers.CharField()
    line = serializers.CharField()
    clip = ClipSerializer(allow_null=True)


# --- predictions ------------------------------------------------------------------------------------------
class PredictionSerializer(serializers.ModelSerializer):
    class Meta:
        model = Prediction
        fields = ["id", "clip", "backend", "model_version", "labels", "flags", "prompt_version", "created_at"]
        read_only_fields = fields


# --- annotations ------------------------------------------------------------------------------------------
class AnnotationSerializer(serializers.ModelSerializer):
    class Meta:
        model = Annotation
        fields = ["id", "clip", "status", "version", "labels", "lead_time", "created_at", "updated_at",
                  "submitted_at"]
        read_only_fields = fields


class LabelsField(serializers.ListField):
    child = serializers.JSONField()
    help_text = ('Labels: ["anxious", ...] or [{"term": "anxious", "note": "...", "evidence": ["face"]}]; '
                 "the server checks them and sets each label's source")


class DraftSerializer(serializers.Serializer):
    labels = LabelsField(max_length=200)
    version = serializers.IntegerField(min_value=0, help_text="The version this write is based on: a stale one "
                                                              "is answered 409 with the stored annotation")
    lead_time = serializers.FloatField(required=False, default=0.0, help_text="Seconds of work since the last save")


class SubmitSerializer(DraftSerializer):
    key = serializers.CharField(required=False, allow_blank=True, default="", max_length=64,
                                help_text="Idempotency key: a retry with the same key returns the stored result")


class ConflictSerializer(serializers.Serializer):
    error = serializers.CharField()
    stored = AnnotationSerializer(required=False)


# --- reviews ----------------------------------------------------------------------------------------------
class ReviewSerializer(serializers.ModelSerializer):
    class Meta:
        model = Review
        fields = ["id", "annotation", "reviewer", "decision", "fixed_labels", "reason", "annotation_version",
                  "automatic", "created_at"]
        read_only_fields = fields


class SubmittedAnnotationSerializer(AnnotationSerializer):
    annotator = serializers.IntegerField(source="annotator_id", read_only=True)

    class Meta(AnnotationSerializer.Meta):
        fields = AnnotationSerializer.Meta.fields + ["annotator"]
        read_only_fields = fields


class ReviewCreateSerializer(serializers.Serializer):
    annotation = serializers.IntegerField(help_text="The submitted annotation judged")
    version = serializers.IntegerField(min_value=1, help_text="The annotation version judged")
    decision = serializers.ChoiceField(choices=Review.Decision.choices)
    reason = serializers.CharField(required=False, allow_blank=True, default="", max_length=5000)
    labels = LabelsField(required=False, max_length=200, help_text="The corrected labels, for a fix")


# --- vocabulary -------------------------------------------------------------------------------------------
class TermSerializer(serializers.ModelSerializer):
    canonical = serializers.SlugRelatedField(slug_field="term", read_only=True)

    class Meta:
        model = EmotionTerm
        fields = ["id", "term", "kind", "canonical", "family", "valence", "source", "flagged"]
        read_only_fields = fields


class ProposeSerializer(serializers.Serializer):
    word = serializers.CharField(max_length=64)


class ProposedSerializer(serializers.Serializer):
    word = serializers.CharField()
    term = serializers.CharField()
    family = serializers.CharField()
    pending = serializers.BooleanField()


# --- models, training, snapshots, exports -----------------------------------------------------------------
class ModelVersionSerializer(serializers.ModelSerializer):
    class Meta:
        model = ModelVersion
        fields = ["id", "backend", "name", "base_model", "adapter_path", "adapter_sha256", "checkpoint_sha256",
                  "prompt_version", "parent", "training_run", "metrics", "status", "created_at", "promoted_at",
                  "retired_at", "erased_data_at"]
        read_only_fields = fields


class TrainingRunSerializer(serializers.ModelSerializer):
    class Meta:
        model = TrainingRun
        fields = ["id", "snapshot", "base_model", "config", "status", "progress", "metrics", "eval_metrics",
                  "error", "cancel_requested", "attempts", "created_at", "started_at", "finished_at",
                  "heartbeat_at"]
        read_only_fields = fields


class TrainingStartSerializer(serializers.Serializer):
    snapshot = serializers.IntegerField(required=False, allow_null=True, default=None,
                                        help_text="A snapshot of this project; none: freeze the verified clips now")
    overrides = serializers.DictField(required=False, default=dict,
                                      help_text="config.training keys for this run only")


class SnapshotSerializer(serializers.ModelSerializer):
    class Meta:
        model = DatasetSnapshot
        fields = ["id", "name", "content_hash", "clip_count", "vocabulary_version", "split_config", "split_counts",
                  "filters", "note", "erased_count", "created_at"]
        read_only_fields = fields


class FreezeSerializer(serializers.Serializer):
    name = serializers.CharField(required=False, allow_blank=True, default="", max_length=120)
    filters = serializers.DictField(required=False, default=dict,
                                    help_text="ClipFilter arguments (the clip list's filters)")


class ExportSerializer(serializers.ModelSerializer):
    format_name = serializers.SerializerMethodField(help_text="The format's name as requested (merov-csv, ...)")
    download_url = serializers.SerializerMethodField(help_text="The web download (a manager's session)")
    api_download_url = serializers.SerializerMethodField(help_text="The same file through the API (a token)")

    class Meta:
        model = Export
        fields = ["id", "snapshot", "format", "format_name", "options", "options_hash", "status", "progress", "checksum",
                  "size_bytes", "row_count", "error", "created_at", "finished_at", "expires_at", "download_url",
                  "api_download_url"]
        read_only_fields = fields

    def get_format_name(self, export) -> str:
        from ..services.exports import FORMAT_NAMES

        return FORMAT_NAMES.get(export.format, export.format)

    @extend_schema_field(OpenApiTypes.URI)
    def get_download_url(self, export) -> str | None:
        """The web download (managers' session; expires with the export), while the file is there."""
        from django.urls import reverse

        from ..services.exports import downloadable

        if not downloadable(export):
            return None
        path = reverse("annotations:export-download", args=[export.snapshot.project.slug, export.pk])
        request = self.context.get("request")
        return request.build_absolute_uri(path) if request is not None else path

    @extend_schema_field(OpenApiTypes.URI)
    def get_api_download_url(self, export) -> str | None:
        from django.urls import reverse

        from ..services.exports import downloadable

        if not downloadable(export):
            return None
        path = reverse("api:export-download", args=[export.pk])
        request = self.context.get("request")
        return request.build_absolute_uri(path) if request is not None else path


class ExportCreateSerializer(serializers.Serializer):
    snapshot = serializers.IntegerField()
    format = serializers.CharField(max_length=32, help_text="merov-csv, train-jsonl, internvl-jsonl, swift-jsonl, "
                                                            "parquet or labelstudio-json (exports.FORMATS)")
    options = serializers.DictField(required=False, default=dict)


class ErrorSerializer(serializers.Serializer):
    error = serializers.CharField()
    errors = serializers.ListField(child=serializers.CharField(), required=False)
