"""Django admin for every table. Staff who are not superusers see only the projects they manage."""

from django import forms
from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin
from django.contrib.auth.forms import AdminPasswordChangeForm
from django.db import transaction

from . import accounts, selectors
from .admin_audit import AuditedAdmin
from .models import (
    AccountFlags, Annotation, AnnotationRevision, AuditEvent, Caption, ClipLabel, ClipSkip, Clip, ClipLease, DashboardFigures, DatasetSnapshot, DismissedSuggestion, EmotionTerm, Export, Membership, ModelVersion,
    GoldAnswer, GoldClip, LabelStudioTask, Prediction, Project, Review, SnapshotItem, TrainingRun,
)
from .project_config import ConfigError, admin_help, parse
from .services import projects as project_services, registry, vocabulary


class UsernameField(forms.ModelChoiceField):
    """A user typed by exact username: managers add members without being shown a list of every account.
    One message for "no such user" and "not one you may pick", so the field tells nothing more."""

    def __init__(self, queryset, **kwargs):
        kwargs.setdefault("widget", forms.TextInput(attrs={"autocomplete": "off"}))
        kwargs.setdefault("help_text", "Exact username")
        kwargs.setdefault("error_messages", {"invalid_choice": "No user by that name that you can choose here."})
        super().__init__(queryset=queryset, to_field_name="username", **kwargs)

    def prepare_value(self, value):
        if isinstance(value, int):  # a saved row's initial value is the user's id
            return self.queryset.filter(pk=value).values_list("username", flat=True).first() or value
        return super().prepare_value(value)


def _user_field(request, db_field):
    if db_field.model is Membership:
        return UsernameField(selectors.addable_members(request.user), label="User")
    return UsernameField(selectors.co_members(request.user), label=db_field.verbose_name.capitalize(),
                         required=not db_field.blank)


class ProjectScopedAdmin(AuditedAdmin):
    """Limits rows (and foreign-key choices) to projects where the staff user is a manager."""

    project_path = "project"  # lookup from this model to Project

    def _managed(self, request):
        return selectors.managed_projects(request.user)

    def get_queryset(self, request):
        qs = super().get_queryset(request)
        if request.user.is_superuser:
            return qs
        return qs.filter(**{f"{self.project_path}__in": self._managed(request)})

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        # Every choice of a project-owned object is limited to the manager's projects, not only Project
        # itself: otherwise a run could be pointed at another project's snapshot.
        if db_field.related_model is get_user_model() and not request.user.is_superuser:
            return _user_field(request, db_field)
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


class ReadOnlyScopedAdmin(ProjectScopedAdmin):
    """Rows written only by services (derived or append-only): visible, never added, changed or deleted here."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0

    def get_autocomplete_fields(self, request):
        return ["user"] if request.user.is_superuser else []

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if db_field.name == "user" and not request.user.is_superuser:
            return _user_field(request, db_field)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)


class ProjectForm(forms.ModelForm):
    class Meta:
        model = Project
        fields = ["name", "slug", "description", "archived", "config"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["config"].help_text = admin_help()

    def clean_config(self):
        raw = self.cleaned_data.get("config")
        try:
            if self.instance.pk:
                project_services.check_config_change(self.instance, raw)  # frozen keys included
            else:
                parse(raw)
        except ConfigError as exc:
            raise forms.ValidationError(exc.errors) from None
        return raw


@admin.register(Project)
class ProjectAdmin(ProjectScopedAdmin):
    project_path = "pk"
    form = ProjectForm
    list_display = ["name", "slug", "archived", "created_at"]
    search_fields = ["name", "slug"]
    list_filter = ["archived"]
    prepopulated_fields = {"slug": ["name"]}
    readonly_fields = ["vocabulary_version"]
    inlines = [MembershipInline]

    def get_queryset(self, request):
        qs = admin.ModelAdmin.get_queryset(self, request)
        return qs if request.user.is_superuser else qs.filter(pk__in=self._managed(request))

    def save_model(self, request, obj, form, change):
        # The configuration goes through its service (validation, audit with the diff, re-queueing).
        config = form.cleaned_data.get("config")
        if change:
            obj.config = Project.objects.get(pk=obj.pk).config
        else:
            obj.config = {}
        super().save_model(request, obj, form, change)
        if not change:
            project_services.project_created(obj, actor=request.user)
        # Validated in the form: a failure here (a snapshot made meanwhile) rolls the whole save back.
        project_services.update_config(obj, config, actor=request.user)

    def save_formset(self, request, form, formset, change):
        if formset.model is not Membership:
            return super().save_formset(request, form, formset, change)
        _save_memberships(request, formset)


def _save_memberships(request, formset) -> None:
    """Membership rows from the admin go through set_membership/remove_membership: staff flag, group, audit."""
    formset.new_objects, formset.changed_objects, formset.deleted_objects = [], [], []  # read by the admin log
    for inline in formset.forms:
        if not inline.has_changed() and not formset._should_delete_form(inline):
            continue
        data = inline.cleaned_data
        if not data:
            continue
        instance = inline.instance
        if formset._should_delete_form(inline):
            if instance.pk:
                project_services.remove_membership(project=instance.project, user=instance.user, actor=request.user)
            continue
        project = instance.project if instance.project_id else formset.instance
        project_services.set_membership(project=project, user=data["user"], role=data["role"],
                                        trusted=data.get("trusted", False), actor=request.user)


class MembershipForm(forms.ModelForm):
    class Meta:
        model = Membership
        fields = ["project", "user", "role", "trusted"]


@admin.register(Membership)
class MembershipAdmin(ProjectScopedAdmin):
    form = MembershipForm
    list_display = ["user", "project", "role", "trusted", "created_at"]
    list_filter = ["role", "trusted", "project"]
    search_fields = ["user__username", "project__name"]

    def get_autocomplete_fields(self, request):
        return ["user"] if request.user.is_superuser else []

    def save_model(self, request, obj, form, change):
        saved = project_services.set_membership(project=form.cleaned_data["project"], user=form.cleaned_data["user"],
                                                role=form.cleaned_data["role"], trusted=form.cleaned_data["trusted"],
                                                actor=request.user)
        obj.pk = saved.pk  # the admin's log (and audit event) name the row the service wrote

    def delete_model(self, request, obj):
        project_services.remove_membership(project=obj.project, user=obj.user, actor=request.user)

    def delete_queryset(self, request, queryset):
        for obj in queryset:
            self.delete_model(request, obj)


@admin.register(Clip)
class ClipAdmin(ProjectScopedAdmin):
    list_display = ["id", "name", "project", "status", "label_state", "priority", "duration", "has_audio",
                    "created_at"]
    list_filter = ["status", "label_state", "has_audio", "project"]
    actions = ["rerun_prelabel"]
    search_fields = ["name", "original_name", "sha256", "transcript"]
    # The files are content-addressed and validated on ingest: never replaced by hand.
    # The files are content-addressed and validated on ingest: never replaced by hand. States change only
    # through services (ingest, review, pre-labeling).
    readonly_fields = ["file", "thumbnail", "name", "original_name", "source", "sha256", "size_bytes", "container",
                       "duration", "fps", "width", "height", "video_codec", "audio_codec", "has_audio", "status",
                       "label_state", "error", "priority", "al_signals", "prelabel_queued_at", "prelabel_error",
                       "created_at", "updated_at", "ready_at", "verified_at"]
    date_hierarchy = "created_at"

    def has_add_permission(self, request):
        return False  # clips enter only through the ingest service (upload form or import_clips)

    @admin.action(description="Re-run pre-labeling (keeps human labels)", permissions=["change"])
    def rerun_prelabel(self, request, queryset):
        from .services import prelabel

        try:
            result = prelabel.rerun_prelabel(list(queryset.values_list("pk", flat=True)), actor=request.user)
        except ConfigError as exc:
            self.message_user(request, f"Pre-label configuration: {exc}", level="error")
            return
        self.message_user(request, result.message(), level=messages.SUCCESS if result.queued else messages.WARNING)


@admin.register(Prediction)
class PredictionAdmin(ProjectScopedAdmin):
    project_path = "clip__project"
    list_display = ["id", "clip", "backend", "model_version", "created_at"]
    list_filter = ["backend"]
    search_fields = ["model_version", "raw_text"]
    raw_id_fields = ["clip", "model"]

    # Machine output: written by the pre-labeling task only.
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


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
    list_display = ["id", "annotation", "reviewer", "decision", "automatic", "created_at"]
    list_filter = ["decision", "automatic"]
    raw_id_fields = ["annotation", "reviewer"]


@admin.register(ClipLease)
class ClipLeaseAdmin(ProjectScopedAdmin):
    project_path = "clip__project"
    list_display = ["clip", "user", "kind", "acquired_at", "expires_at"]
    list_filter = ["kind"]
    raw_id_fields = ["clip", "user"]
    actions = ["release"]

    def has_add_permission(self, request):
        return False  # claims come from the queue (services.queue)

    def has_change_permission(self, request, obj=None):
        return False

    @admin.action(description="Release (the clip goes back to the queue)", permissions=["delete"])
    def release(self, request, queryset):
        from .services import queue

        n = queue.release_selected(queryset, actor=request.user)
        self.message_user(request, f"Released {n} lease{'s' if n != 1 else ''}.")


@admin.register(ClipSkip)
class ClipSkipAdmin(ProjectScopedAdmin):
    """Why annotators passed on clips: data for managers."""

    project_path = "clip__project"
    list_display = ["clip", "user", "reason", "created_at"]
    search_fields = ["reason", "clip__name", "user__username"]
    raw_id_fields = ["clip", "user"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(ClipLabel)
class ClipLabelAdmin(ReadOnlyScopedAdmin):
    """Derived (services.clip_index): read-only; `manage.py reindex_clips` rebuilds it."""

    list_display = ["clip", "term", "family", "source", "score"]
    list_filter = ["source", "family"]
    search_fields = ["term", "clip__name"]
    raw_id_fields = ["clip"]


@admin.register(AnnotationRevision)
class AnnotationRevisionAdmin(ReadOnlyScopedAdmin):
    """Append-only: every submitted version as it was submitted."""

    project_path = "annotation__clip__project"
    list_display = ["annotation", "version", "created_at"]
    raw_id_fields = ["annotation"]


@admin.register(GoldClip)
class GoldClipAdmin(ReadOnlyScopedAdmin):
    """Marked and unmarked on the clip's history page (services.gold, audited): read-only here."""

    list_display = ["clip", "project", "active", "created_by", "created_at"]
    list_filter = ["active", "project"]
    search_fields = ["clip__name"]
    raw_id_fields = ["clip"]


@admin.register(GoldAnswer)
class GoldAnswerAdmin(ReadOnlyScopedAdmin):
    """Annotators' scored answers to gold clips (services.gold): read-only."""

    project_path = "gold__project"
    list_display = ["gold", "annotator", "status", "score", "f", "family_f", "served_at", "submitted_at"]
    list_filter = ["status"]
    raw_id_fields = ["gold"]


@admin.register(DismissedSuggestion)
class DismissedSuggestionAdmin(ReadOnlyScopedAdmin):
    """Pairs of terms a manager judged distinct on the suggestions page (services.vocabulary_governance,
    audited; "Suggest again" there restores one): read-only here."""

    list_display = ["term_a", "term_b", "project", "dismissed_by", "created_at"]
    list_filter = ["project"]
    search_fields = ["term_a", "term_b"]


@admin.register(EmotionTerm)
class EmotionTermAdmin(ProjectScopedAdmin):
    list_display = ["term", "kind", "canonical", "family", "valence", "source", "flagged", "project"]
    list_filter = ["kind", "family", "valence", "source", "flagged", "project"]
    search_fields = ["term", "family"]
    raw_id_fields = ["canonical"]

    def save_model(self, request, obj, form, change):
        # Terms are plain rows, but every change bumps the project's vocabulary version (and is audited).
        super().save_model(request, obj, form, change)
        vocabulary.vocabulary_changed(obj.project, obj, actor=request.user)

    def delete_model(self, request, obj):
        project = obj.project
        super().delete_model(request, obj)
        vocabulary.vocabulary_changed(project, obj, actor=request.user, action="vocabulary.deleted")

    def delete_queryset(self, request, queryset):
        # The bulk "delete selected" action bypasses delete_model: audit and reindex each row all the same.
        with transaction.atomic():
            rows = list(queryset.select_related("project"))
            super().delete_queryset(request, queryset)
            vocabulary.vocabulary_rows_deleted(rows, actor=request.user)


@admin.register(ModelVersion)
class ModelVersionAdmin(ProjectScopedAdmin):
    list_display = ["name", "project", "backend", "status", "created_at", "promoted_at", "retired_at"]
    list_filter = ["backend", "status", "project"]
    search_fields = ["name", "base_model"]
    raw_id_fields = ["parent", "training_run"]
    actions = ["promote", "roll_back", "retire"]
    # Identity is recorded by register_model where the files are; status changes only through the actions.
    readonly_fields = ["project", "backend", "name", "base_model", "base_fingerprint", "adapter_path",
                       "adapter_sha256", "checkpoint_path", "checkpoint_sha256", "prompt_version", "parent",
                       "training_run", "status", "created_at", "promoted_at", "retired_at"]

    def has_add_permission(self, request):
        return False  # registration hashes the files: manage.py register_model on a worker

    def _each(self, request, queryset, action, verb):
        for version in queryset:
            try:
                action(version)
            except registry.RegistryError as exc:
                self.message_user(request, str(exc), level=messages.ERROR)
            else:
                # Verb first: the admin capitalises messages, and identities are case-sensitive.
                self.message_user(request, f"{verb} {version.name}.")

    @admin.action(description="Promote to active (retires the current one)", permissions=["change"])
    def promote(self, request, queryset):
        self._each(request, queryset, lambda v: registry.promote(v, actor=request.user), "Promoted")

    @admin.action(description="Roll back this backend to its previous active version", permissions=["change"])
    def roll_back(self, request, queryset):
        pairs = {(v.project, v.backend) for v in queryset.select_related("project")}
        for project, backend in pairs:
            try:
                version = registry.roll_back(project, backend, actor=request.user)
            except registry.RegistryError as exc:
                self.message_user(request, str(exc), level=messages.ERROR)
            else:
                self.message_user(request, f"{project.name}: {backend} rolled back to {version.name}.")

    @admin.action(description="Retire", permissions=["change"])
    def retire(self, request, queryset):
        self._each(request, queryset, lambda v: registry.retire(v, actor=request.user), "Retired")


@admin.register(TrainingRun)
class TrainingRunAdmin(ProjectScopedAdmin):
    list_display = ["id", "project", "status", "progress", "created_at", "finished_at"]
    list_filter = ["status", "project"]
    raw_id_fields = ["base_model", "snapshot"]


class SnapshotItemInline(admin.TabularInline):
    """Frozen: services.snapshots writes items, and only erasure removes one."""
    model = SnapshotItem
    extra = 0
    raw_id_fields = ["clip"]

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(SnapshotItem)
class SnapshotItemAdmin(ReadOnlyScopedAdmin):
    project_path = "snapshot__project"
    list_display = ["id", "snapshot", "clip", "split"]
    list_filter = ["split"]
    raw_id_fields = ["snapshot", "clip"]


@admin.register(DatasetSnapshot)
class DatasetSnapshotAdmin(ReadOnlyScopedAdmin):
    list_display = ["name", "project", "clip_count", "content_hash", "created_at"]
    list_filter = ["project"]
    search_fields = ["name", "content_hash"]
    inlines = [SnapshotItemInline]


@admin.register(Caption)
class CaptionAdmin(ReadOnlyScopedAdmin):
    """Written by the captioning task; kept or dropped by agreement with the fused pre-labels."""
    project_path = "clip__project"
    list_display = ["clip", "model_version", "prompt_version", "agreement", "kept", "created_at"]
    list_filter = ["kept", "prompt_version"]
    search_fields = ["clip__name", "text"]


@admin.register(Export)
class ExportAdmin(ProjectScopedAdmin):
    project_path = "snapshot__project"
    list_display = ["id", "snapshot", "format", "status", "progress", "row_count", "size_bytes", "created_at",
                    "expires_at"]
    list_filter = ["format", "status"]
    # Written by services.exports only: the build records these, and an edit would make the checksum lie.
    readonly_fields = ["snapshot", "format", "options", "options_hash", "status", "progress", "file", "checksum",
                       "size_bytes", "row_count", "error", "created_by", "created_at", "started_at",
                       "finished_at", "expires_at"]

    def has_add_permission(self, request):
        return False  # requested on the exports page or through the API, which build it


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyScopedAdmin):
    """Read-only: the table is append-only (the database refuses updates and deletes)."""

    list_display = ["created_at", "actor", "project", "action", "object_type", "object_id"]
    list_filter = ["action", "object_type"]
    search_fields = ["object_id", "action"]


# --- users ------------------------------------------------------------------------------------------------
@admin.register(AccountFlags)
class AccountFlagsAdmin(AuditedAdmin):
    """Superusers only (no manager permission): tick must_change_password to force a new password."""

    list_display = ["user", "must_change_password", "updated_at"]
    list_filter = ["must_change_password"]
    search_fields = ["user__username"]
    raw_id_fields = ["user"]


User = get_user_model()
admin.site.unregister(User)


@admin.register(User)
class ScopedUserAdmin(AuditedAdmin, UserAdmin):
    """Managers see themselves and the members of the projects they manage, nobody else: no list of every
    account, no superuser filter, no autocomplete over all usernames."""

    def get_queryset(self, request):
        qs = super().get_queryset(request)
        return qs if request.user.is_superuser else qs.filter(pk__in=selectors.co_members(request.user).values("pk"))

    def get_list_filter(self, request):
        return super().get_list_filter(request) if request.user.is_superuser else ("is_active",)

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        if not change:
            # The admin chose this password: its owner replaces it at the first login.
            accounts.require_password_change(obj, actor=request.user)

    def user_change_password(self, request, id, form_url=""):
        with transaction.atomic():  # the password and its audit event land together (the admin's view is not atomic)
            return super().user_change_password(request, id, form_url)

    def construct_change_message(self, request, form, formsets, add=False):
        if isinstance(form, AdminPasswordChangeForm) and form.user != request.user:
            accounts.require_password_change(form.user, actor=request.user)  # a password set for someone else
        return super().construct_change_message(request, form, formsets, add)


@admin.register(LabelStudioTask)
class LabelStudioTaskAdmin(ReadOnlyScopedAdmin):
    """Written by services.labelstudio: which Label Studio task holds which clip."""

    project_path = "clip__project"
    list_display = ["clip", "ls_project", "task_id", "prediction_version", "created_at"]
    search_fields = ["clip__name"]
    raw_id_fields = ["clip"]


@admin.register(DashboardFigures)
class DashboardFiguresAdmin(ReadOnlyScopedAdmin):
    """Written by the dashboard's beat task (services.dashboard): the stored figures, for inspection."""

    list_display = ["project", "computed_at", "seconds"]
