"""Django admin for every table. Staff who are not superusers see only the projects they manage."""

from django.contrib import admin

from .models import (
    Annotation, AuditEvent, Clip, ClipLease, DatasetSnapshot, EmotionTerm, Export, Membership, ModelVersion,
    Prediction, Project, Review, Role, SnapshotItem, TrainingRun,
)


class ProjectScopedAdmin(admin.ModelAdmin):
    """Limits rows (and foreign-key choices) to projects where the staff user is a manager."""

    project_path = "project"  # lookup from this model to Project

    def _managed(self, request):
        return Project.objects.filter(memberships__user=request.user, memberships__role=Role.MANAGER)

    def get_queryset(self, request):
        qs = super().get_queryset(request)
        if request.user.is_superuser:
            return qs
        return qs.filter(**{f"{self.project_path}__in": self._managed(request)})

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        # Every choice of a project-owned object is limited to the manager's projects, not only Project
        # itself: otherwise a run could be pointed at another project's snapshot.
        path = _PROJECT_PATHS.get(db_field.related_model)
        if path is not None and not request.user.is_superuser:
            managed = self._managed(request)
            kwargs["queryset"] = (managed if path == "pk" else
                                  db_field.related_model.objects.filter(**{f"{path}__in": managed}))
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def get_list_filter(self, request):
        # The plain project filter would list every project's name.
        return [("project", admin.RelatedOnlyFieldListFilter) if f == "project" else f
                for f in super().get_list_filter(request)]


# How each project-owned model reaches its project (for scoping foreign-key choices).
_PROJECT_PATHS = {
    Project: "pk", Clip: "project", ModelVersion: "project", TrainingRun: "project", DatasetSnapshot: "project",
    EmotionTerm: "project", Annotation: "clip__project", SnapshotItem: "snapshot__project",
}


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ["user"]


@admin.register(Project)
class ProjectAdmin(ProjectScopedAdmin):
    project_path = "pk"
    list_display = ["name", "slug", "archived", "created_at"]
    search_fields = ["name", "slug"]
    list_filter = ["archived"]
    prepopulated_fields = {"slug": ["name"]}
    inlines = [MembershipInline]

    def get_queryset(self, request):
        qs = admin.ModelAdmin.get_queryset(self, request)
        return qs if request.user.is_superuser else qs.filter(pk__in=self._managed(request))


@admin.register(Membership)
class MembershipAdmin(ProjectScopedAdmin):
    list_display = ["user", "project", "role", "trusted", "created_at"]
    list_filter = ["role", "trusted", "project"]
    search_fields = ["user__username", "project__name"]
    autocomplete_fields = ["user"]


@admin.register(Clip)
class ClipAdmin(ProjectScopedAdmin):
    list_display = ["id", "original_name", "project", "status", "label_state", "priority", "duration", "has_audio",
                    "created_at"]
    list_filter = ["status", "label_state", "has_audio", "project"]
    actions = ["rerun_prelabel"]
    search_fields = ["original_name", "sha256", "transcript"]
    # The files are content-addressed and validated on ingest: never replaced by hand.
    readonly_fields = ["file", "thumbnail", "sha256", "size_bytes", "container", "duration", "fps", "width",
                       "height", "video_codec", "audio_codec", "has_audio", "created_at", "updated_at", "ready_at",
                       "verified_at"]
    date_hierarchy = "created_at"

    @admin.action(description="Re-run pre-labeling (keeps human labels)", permissions=["change"])
    def rerun_prelabel(self, request, queryset):
        from .services import prelabel

        try:
            n = prelabel.rerun_prelabel(list(queryset.values_list("pk", flat=True)), actor=request.user)
        except prelabel.ConfigError as exc:
            self.message_user(request, f"Pre-label configuration: {exc}", level="error")
            return
        self.message_user(request, f"{n} clip(s) queued for pre-labeling.")


@admin.register(Prediction)
class PredictionAdmin(ProjectScopedAdmin):
    project_path = "clip__project"
    list_display = ["id", "clip", "backend", "model_version", "created_at"]
    list_filter = ["backend"]
    search_fields = ["model_version", "raw_text"]
    raw_id_fields = ["clip", "model"]


class ReviewInline(admin.TabularInline):
    model = Review
    extra = 0
    raw_id_fields = ["reviewer"]


@admin.register(Annotation)
class AnnotationAdmin(ProjectScopedAdmin):
    project_path = "clip__project"
    list_display = ["id", "clip", "annotator", "status", "version", "lead_time", "updated_at"]
    list_filter = ["status"]
    search_fields = ["annotator__username"]
    raw_id_fields = ["clip", "annotator"]
    inlines = [ReviewInline]


@admin.register(Review)
class ReviewAdmin(ProjectScopedAdmin):
    project_path = "annotation__clip__project"
    list_display = ["id", "annotation", "reviewer", "decision", "created_at"]
    list_filter = ["decision"]
    raw_id_fields = ["annotation", "reviewer"]


@admin.register(ClipLease)
class ClipLeaseAdmin(ProjectScopedAdmin):
    project_path = "clip__project"
    list_display = ["clip", "user", "acquired_at", "expires_at"]
    raw_id_fields = ["clip", "user"]


@admin.register(EmotionTerm)
class EmotionTermAdmin(ProjectScopedAdmin):
    list_display = ["term", "canonical", "family", "valence", "source", "flagged", "project"]
    list_filter = ["valence", "source", "flagged", "project"]
    search_fields = ["term", "family"]
    raw_id_fields = ["canonical"]


@admin.register(ModelVersion)
class ModelVersionAdmin(ProjectScopedAdmin):
    list_display = ["name", "project", "backend", "status", "created_at", "promoted_at"]
    list_filter = ["backend", "status", "project"]
    search_fields = ["name", "base_model"]
    raw_id_fields = ["parent", "training_run"]

    def get_readonly_fields(self, request, obj=None):
        # GPU workers load whatever these name: only a superuser may point them at server paths.
        if request.user.is_superuser:
            return super().get_readonly_fields(request, obj)
        return ["base_model", "adapter_path", "adapter_sha256"]


@admin.register(TrainingRun)
class TrainingRunAdmin(ProjectScopedAdmin):
    list_display = ["id", "project", "status", "progress", "created_at", "finished_at"]
    list_filter = ["status", "project"]
    raw_id_fields = ["base_model", "snapshot"]


class SnapshotItemInline(admin.TabularInline):
    model = SnapshotItem
    extra = 0
    raw_id_fields = ["clip"]


@admin.register(SnapshotItem)
class SnapshotItemAdmin(ProjectScopedAdmin):
    project_path = "snapshot__project"
    list_display = ["id", "snapshot", "clip", "split"]
    list_filter = ["split"]
    raw_id_fields = ["snapshot", "clip"]


@admin.register(DatasetSnapshot)
class DatasetSnapshotAdmin(ProjectScopedAdmin):
    list_display = ["name", "project", "clip_count", "content_hash", "created_at"]
    list_filter = ["project"]
    search_fields = ["name", "content_hash"]
    inlines = [SnapshotItemInline]


@admin.register(Export)
class ExportAdmin(ProjectScopedAdmin):
    project_path = "snapshot__project"
    list_display = ["id", "snapshot", "format", "status", "size_bytes", "created_at"]
    list_filter = ["format", "status"]


@admin.register(AuditEvent)
class AuditEventAdmin(ProjectScopedAdmin):
    """Read-only: the table is append-only (the database refuses updates and deletes)."""

    list_display = ["created_at", "actor", "project", "action", "object_type", "object_id"]
    list_filter = ["action", "object_type"]
    search_fields = ["object_id", "action"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
