"""Audit events carry ids and hashes, not personal data; one change to a stored event is allowed: redaction.

(a) The events already stored are rewritten into the form the services now write (services.audit): label
lists become their count and sha256, free-text reasons their sha256; clip.imported loses the clip's name,
predictions.imported the uploaded file's name, snapshot.frozen its filter values (a clip name prefix); the
admin's events about clips, annotations, reviews, predictions, captions, skips, snapshot items and the label
index name the object by id and keep only hashes of old and new values. The append-only rule is switched off
for the rewrite and back on in the same transaction (PostgreSQL: DISABLE/ENABLE ALWAYS of 0002's trigger;
SQLite: 0002's update trigger dropped and created again), so nothing else can slip in meanwhile.

(b) The rule itself: an UPDATE is allowed only when every column but `changes` stays as it was and the new
`changes` is exactly the redaction marker {"redacted": true} (services.audit.redact, the one audited path).
Every other UPDATE, every DELETE and TRUNCATE is refused as before. On PostgreSQL the app role is also given
UPDATE on the `changes` column only (`manage.py grant_app_privileges`); the trigger decides what it may hold.

Reversing restores 0002's rule; the rewritten payloads stay rewritten (the data they held is gone by design).
"""

import hashlib
import json

from django.db import migrations

TABLE = "annotations_auditevent"
MARKER = '{"redacted":true}'  # canonical (minified) JSON of services.audit.REDACTED

# --- (b) the rule -------------------------------------------------------------------------------------------
# SQLite: each column named (a trigger cannot compare whole rows); a column added to the table later must be
# added here. json() minifies, so any spelling of the marker's JSON is accepted, and nothing else.
SQLITE_RULE = (
    f"CREATE TRIGGER auditevent_no_update BEFORE UPDATE ON {TABLE} WHEN NOT ("
    "NEW.id IS OLD.id AND NEW.created_at IS OLD.created_at AND NEW.actor_id IS OLD.actor_id "
    "AND NEW.project_id IS OLD.project_id AND NEW.action IS OLD.action AND NEW.object_type IS OLD.object_type "
    "AND NEW.object_id IS OLD.object_id AND coalesce(json_valid(NEW.changes), 0) = 1 "
    f"AND json(NEW.changes) = '{MARKER}') "
    "BEGIN SELECT RAISE(ABORT, 'audit events are append-only'); END;"
)
SQLITE_0002 = (f"CREATE TRIGGER auditevent_no_update BEFORE UPDATE ON {TABLE} "
               "BEGIN SELECT RAISE(ABORT, 'audit events are append-only'); END;")
SQLITE_DROP = "DROP TRIGGER IF EXISTS auditevent_no_update;"

# PostgreSQL: the whole row but `changes` compared as jsonb, so a later column is covered without a change here.
POSTGRES_RULE = """CREATE OR REPLACE FUNCTION affectloop_audit_append_only() RETURNS trigger AS $$
   BEGIN
     IF TG_OP = 'UPDATE' AND (to_jsonb(NEW) - 'changes') = (to_jsonb(OLD) - 'changes')
        AND NEW.changes = '{"redacted": true}'::jsonb THEN
       RETURN NEW;
     END IF;
     RAISE EXCEPTION 'audit events are append-only';
   END; $$ LANGUAGE plpgsql;"""
POSTGRES_0002 = """CREATE OR REPLACE FUNCTION affectloop_audit_append_only() RETURNS trigger AS $$
       BEGIN RAISE EXCEPTION 'audit events are append-only'; END; $$ LANGUAGE plpgsql;"""
POSTGRES_OFF = f"ALTER TABLE {TABLE} DISABLE TRIGGER auditevent_append_only;"
POSTGRES_ON = f"ALTER TABLE {TABLE} ENABLE ALWAYS TRIGGER auditevent_append_only;"  # as 0006 left it

# --- (a) the payloads ---------------------------------------------------------------------------------------
# A frozen copy of what services.audit and admin_audit do now (a migration must not follow later code).
PERSONAL_MODELS = {"annotations.clip", "annotations.annotation", "annotations.annotationrevision",
                   "annotations.review", "annotations.prediction", "annotations.caption", "annotations.clipskip",
                   "annotations.snapshotitem", "annotations.cliplabel"}


def _digest(value) -> str:
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _labels(changes: dict, key: str, prefix: str) -> None:
    if key not in changes:
        return
    labels = changes.pop(key)
    if labels is None:
        return
    terms = [lab["term"] if isinstance(lab, dict) and "term" in lab else lab for lab in labels or []]
    changes[f"{prefix}_count"] = len(terms)
    changes[f"{prefix}_sha256"] = _digest(terms)


def _text(changes: dict, key: str) -> None:
    if key in changes:
        text = changes.pop(key)
        if text:
            changes[f"{key}_sha256"] = hashlib.sha256(str(text).encode("utf-8")).hexdigest()


def _fields(fields: dict) -> dict:
    return {name: value if value == "(changed)" or (isinstance(value, dict) and "sha256" in value)
            else {"sha256": [_digest(v) for v in value] if isinstance(value, list) and len(value) == 2
                  else [_digest(value)]}
            for name, value in (fields or {}).items()}


def rewritten(action: str, object_id: str, changes: dict) -> dict | None:
    """The payload in the new form, or None when it holds nothing to rewrite."""
    if not isinstance(changes, dict) or changes == {"redacted": True}:
        return None
    new = dict(changes)
    if action == "annotation.submitted":
        _labels(new, "labels", "labels")
    elif action == "review.recorded":
        _text(new, "reason")
        _labels(new, "fixed_labels", "fixed_labels")
    elif action == "clip.imported":
        new.pop("name", None)
        _labels(new, "labels", "labels")
    elif action == "clip.skipped":
        _text(new, "reason")
    elif action == "predictions.imported":
        new.pop("file", None)
    elif action == "snapshot.frozen" and "filters" in new:
        filters = new.pop("filters") or {}
        new["filter_keys"] = sorted(filters)
        if filters:
            new["filters_sha256"] = _digest(filters)
    elif action.startswith("admin.") and new.get("model") in PERSONAL_MODELS:
        if "object" in new:
            new["object"] = f"{new['model']}:{object_id}"
        if isinstance(new.get("fields"), dict):
            new["fields"] = _fields(new["fields"])
    if action.startswith("admin.") and isinstance(new.get("inlines"), list):
        new["inlines"] = [{**inline, "fields": _fields(inline.get("fields"))}
                          if isinstance(inline, dict) and inline.get("model") in PERSONAL_MODELS else inline
                          for inline in new["inlines"]]
    return new if new != changes else None


ACTIONS = ["annotation.submitted", "review.recorded", "clip.imported", "clip.skipped", "predictions.imported",
           "snapshot.frozen"]


def _rewrite(apps):
    from django.db.models import Q

    AuditEvent = apps.get_model("annotations", "AuditEvent")
    events = AuditEvent.objects.filter(Q(action__in=ACTIONS) | Q(action__startswith="admin."))
    pks = list(events.order_by("pk").values_list("pk", flat=True))
    for start in range(0, len(pks), 2000):  # read a chunk, then write it: no open cursor over the rows written
        rows = list(AuditEvent.objects.filter(pk__in=pks[start:start + 2000]).order_by("pk")
                    .values_list("pk", "action", "object_id", "changes"))
        for pk, action, object_id, changes in rows:
            new = rewritten(action, object_id, changes)
            if new is not None:
                AuditEvent.objects.filter(pk=pk).update(changes=new)


def forwards(apps, schema_editor):
    vendor, run = schema_editor.connection.vendor, schema_editor.execute
    if vendor == "postgresql":
        run(POSTGRES_OFF)
        _rewrite(apps)
        run(POSTGRES_ON)
        run(POSTGRES_RULE)
    elif vendor == "sqlite":
        run(SQLITE_DROP)
        _rewrite(apps)
        run(SQLITE_RULE)
    else:
        _rewrite(apps)


def backwards(apps, schema_editor):
    vendor, run = schema_editor.connection.vendor, schema_editor.execute
    if vendor == "postgresql":
        run(POSTGRES_0002)
    elif vendor == "sqlite":
        run(SQLITE_DROP)
        run(SQLITE_0002)


class Migration(migrations.Migration):
    dependencies = [("annotations", "0017_data_out")]

    # One transaction (the default): the rule is off only inside it.
    operations = [migrations.RunPython(forwards, backwards)]
