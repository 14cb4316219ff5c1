"""The audit log: append one event per change, inside the transaction that makes it.

Events carry ids and hashes, never personal data: no clip names, labels, transcripts, metadata values or
free-text reasons (a subject's erasure must not leave their data behind in the one table nothing may
delete). Where a payload needs a value's identity, `digest` gives the sha256 of its canonical JSON.

The database refuses UPDATE, DELETE and TRUNCATE of events (migrations 0002, 0006, 0018), with one
exception: `redact` may replace an event's payload with REDACTED, changing nothing else, and is itself
audited.
"""

import hashlib
import json

from django.db import transaction

from ..models import AuditEvent

# The only payload an existing event may be given (the database rule of migration 0018 checks for exactly this).
REDACTED = {"redacted": True}


class AuditError(ValueError):
    """Bad input to redact (safe to show)."""


def digest(value) -> str:
    """sha256 of the canonical JSON of `value` (sorted keys, no spaces): the same value, the same hash."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def labels_summary(labels, prefix: str = "labels") -> dict:
    """{prefix_count, prefix_sha256} for a label list (words or {"term": ...} dicts): what an event keeps of
    labels instead of the labels themselves."""
    terms = [lab["term"] if isinstance(lab, dict) else lab for lab in (labels or [])]
    return {f"{prefix}_count": len(terms), f"{prefix}_sha256": digest(terms)}


def text_summary(text: str, name: str) -> dict:
    """{name_sha256} for a non-empty free text (a reason), {} for an empty one."""
    return {f"{name}_sha256": hashlib.sha256(text.encode("utf-8")).hexdigest()} if text else {}


def record(action: str, obj, *, actor=None, project=None, changes: dict | None = None) -> AuditEvent:
    """Append one audit event. Call it inside the transaction that makes the change, so both land or neither.
    `obj` may be a model class, for an event about several rows of it (their ids go in `changes`)."""
    is_class = isinstance(obj, type)
    return AuditEvent.objects.create(
        actor=actor if getattr(actor, "pk", None) else None,
        project=project,
        action=action,
        object_type=obj._meta.model_name,
        object_id="" if is_class else str(obj.pk),
        changes=changes or {},
    )


def redact(event: AuditEvent, *, actor, reason: str) -> AuditEvent:
    """Replace one event's payload with REDACTED (the one change the database allows to an event) and record
    audit.redacted with the redacted event's id. The reason is kept as a hash only, like every free text.
    Returns the audit.redacted event. Redacting an event twice changes nothing more (no second event)."""
    if not (reason or "").strip():
        raise AuditError("Say why this event is redacted.")
    with transaction.atomic():
        current = AuditEvent.objects.select_for_update().filter(pk=event.pk).first()
        if current is None:
            raise AuditError(f"No audit event {event.pk}.")
        if current.changes == REDACTED:
            existing = AuditEvent.objects.filter(action="audit.redacted", object_id=str(current.pk)).first()
            if existing is not None:
                return existing
        # QuerySet.update, not save(): AuditEvent.save refuses every change to a stored event.
        AuditEvent.objects.filter(pk=current.pk).update(changes=REDACTED)
        # project_id, not project: the event's project may be gone (ids without a foreign-key constraint).
        return AuditEvent.objects.create(
            actor=actor if getattr(actor, "pk", None) else None, project_id=current.project_id,
            action="audit.redacted", object_type=AuditEvent._meta.model_name, object_id=str(current.pk),
            changes={"event": current.pk, "action": current.action, **text_summary(reason.strip(), "reason")})
