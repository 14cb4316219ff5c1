"""Every change made through the Django admin lands in the audit log, in the transaction that makes it.

The admin already reports each addition, change, deletion and action to its log_* hooks; AuditedAdmin
writes an AuditEvent there too, with the changed fields' old and new values. Every ModelAdmin on the site
gets it (apps.py wraps the ones other apps register), so nothing changed in the admin goes unrecorded.
"""

from __future__ import annotations

import re

from django.contrib import admin
from django.db import models, transaction

from .services import audit

# Field values never copied into the log, only the fact that they changed.
_SENSITIVE = re.compile(r"password|secret|token|key", re.I)
_MAX_TEXT = 2000
# Rows that hold a subject's data (names, transcripts, metadata, labels, free text): their values never enter
# the log, only the hashes of the old and new values; the object is named by its id, not by str() (a clip's
# str() is its name). See services.audit and erasure on request.
PERSONAL_MODELS = {"annotations.clip", "annotations.annotation", "annotations.annotationrevision",
                   "annotations.review", "annotations.prediction", "annotations.caption", "annotations.clipskip",
                   "annotations.snapshotitem", "annotations.cliplabel"}


def _value(value):
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, models.Model):
        return f"{value._meta.label_lower}:{value.pk}"
    if isinstance(value, (list, tuple, set, models.QuerySet)):
        return [_value(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _value(v) for k, v in value.items()}
    return str(value)[:_MAX_TEXT]


def _personal(model) -> bool:
    return model is not None and model._meta.label_lower in PERSONAL_MODELS


def form_changes(form) -> dict:
    """{field: [old, new]} for the fields a bound form changed; {field: {"sha256": [old, new]}} for a row of
    PERSONAL_MODELS."""
    out = {}
    personal = _personal(getattr(getattr(form, "_meta", None), "model", None))
    for name in form.changed_data:
        if _SENSITIVE.search(name):
            out[name] = "(changed)"
            continue
        old, new = _value(form.initial.get(name)), _value(form.cleaned_data.get(name))
        out[name] = {"sha256": [audit.digest(old), audit.digest(new)]} if personal else [old, new]
    return out


def _inline_changes(formsets) -> list[dict]:
    out = []
    for formset in formsets or []:
        for form in formset.forms:
            if not form.has_changed() or not hasattr(form, "cleaned_data"):
                continue
            deleted = formset.can_delete and formset._should_delete_form(form)
            out.append({"model": formset.model._meta.label_lower, "id": _value(form.instance.pk),
                        "action": "deleted" if deleted else ("changed" if form.initial else "added"),
                        "fields": {} if deleted else form_changes(form)})
    return out


def project_of(obj):
    """The project an object belongs to, through the usual paths (clip, annotation, snapshot), or None."""
    from .models import Project

    for _ in range(4):
        if obj is None or isinstance(obj, Project):
            return obj
        for attr in ("project", "clip", "annotation", "snapshot"):
            if getattr(type(obj), attr, None) is not None and getattr(obj, f"{attr}_id", None) is not None:
                obj = getattr(obj, attr)
                break
        else:
            return None
    return None


class AuditedAdmin(admin.ModelAdmin):
    def _audit(self, request, action: str, obj, extra: dict | None = None):
        shown = f"{obj._meta.label_lower}:{obj.pk}" if _personal(type(obj)) else str(obj)[:200]
        changes = {"model": obj._meta.label_lower, "object": shown, **(extra or {})}
        audit.record(action, obj, actor=request.user, project=project_of(obj), changes=changes)

    def construct_change_message(self, request, form, formsets, add=False):
        # Called after the save, before log_*; the bound forms still hold the old and new values.
        request._affectloop_admin_changes = {"fields": form_changes(form), "inlines": _inline_changes(formsets)}
        return super().construct_change_message(request, form, formsets, add)

    def _pending_changes(self, request, message) -> dict:
        changes = getattr(request, "_affectloop_admin_changes", None) or {}
        request._affectloop_admin_changes = None
        return {**changes, "message": message if isinstance(message, (list, str)) else str(message)}

    def log_addition(self, request, obj, message):
        self._audit(request, "admin.added", obj, self._pending_changes(request, message))
        return super().log_addition(request, obj, message)

    def log_change(self, request, obj, message):
        self._audit(request, "admin.changed", obj, self._pending_changes(request, message))
        return super().log_change(request, obj, message)

    def log_deletions(self, request, queryset):
        for obj in queryset:
            self._audit(request, "admin.deleted", obj)
        return super().log_deletions(request, queryset)

    def response_action(self, request, queryset):
        # The changelist is not atomic: the action's changes and their audit event commit together here.
        action = request.POST.get("action", "")
        selected = request.POST.getlist(admin.helpers.ACTION_CHECKBOX_NAME)
        select_across = request.POST.get("select_across") == "1"
        with transaction.atomic():
            response = super().response_action(request, queryset)
            # Only an action that exists and had rows to act on ran; deletions are logged row by row above.
            ran = action in self.get_actions(request) and (selected or select_across)
            if ran and action != "delete_selected":
                audit.record("admin.action", self.model, actor=request.user,
                             changes={"model": self.model._meta.label_lower, "action": action,
                                      "selected": selected[:1000], "all_matching": select_across})
        return response


def audit_every_admin(site) -> None:
    """Give every registered ModelAdmin (other apps' included) the audit hooks."""
    for model, model_admin in list(site._registry.items()):
        if isinstance(model_admin, AuditedAdmin):
            continue
        cls = type(f"Audited{type(model_admin).__name__}", (AuditedAdmin, type(model_admin)), {})
        site.unregister(model)
        site.register(model, cls)
