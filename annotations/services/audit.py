from ..models import AuditEvent


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
