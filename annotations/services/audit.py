from ..models import AuditEvent


def record(action: str, obj, *, actor=None, project=None, changes: dict | None = None) -> AuditEvent:
    """Append one audit event. Call it inside the transaction that makes the change, so both land or neither."""
    return AuditEvent.objects.create(
        actor=actor if getattr(actor, "pk", None) else None,
        project=project,
        action=action,
        object_type=type(obj)._meta.model_name,
        object_id=str(obj.pk),
        changes=changes or {},
    )
