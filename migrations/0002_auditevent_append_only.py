"""Make the audit log append-only in the database itself, not only in Python."""

from django.db import migrations

TABLE = "annotations_auditevent"

SQLITE = [
    f"CREATE TRIGGER auditevent_no_update BEFORE UPDATE ON {TABLE} "
    "BEGIN SELECT RAISE(ABORT, 'audit events are append-only'); END;",
    # Django's test flush empties SQLite tables with DELETE; the function (annotations/apps.py) allows that
    # only where AUDIT_PURGE_ALLOWED is set (test settings). Any other client lacks the function: still refused.
    f"CREATE TRIGGER auditevent_no_delete BEFORE DELETE ON {TABLE} WHEN affectloop_audit_purge_allowed() = 0 "
    "BEGIN SELECT RAISE(ABORT, 'audit events are append-only'); END;",
]
SQLITE_REVERSE = ["DROP TRIGGER IF EXISTS auditevent_no_update;", "DROP TRIGGER IF EXISTS auditevent_no_delete;"]

POSTGRES = [
    """CREATE OR REPLACE FUNCTION affectloop_audit_append_only() RETURNS trigger AS $$
       BEGIN RAISE EXCEPTION 'audit events are append-only'; END; $$ LANGUAGE plpgsql;""",
    f"CREATE TRIGGER auditevent_append_only BEFORE UPDATE OR DELETE ON {TABLE} "
    "FOR EACH ROW EXECUTE FUNCTION affectloop_audit_append_only();",
    # TRUNCATE (owner-only, what Django's test flush uses) is left to the database's privileges.
]
POSTGRES_REVERSE = [
    f"DROP TRIGGER IF EXISTS auditevent_append_only ON {TABLE};",
    "DROP FUNCTION IF EXISTS affectloop_audit_append_only();",
]


def _run(statements):
    def apply(apps, schema_editor):
        vendor = schema_editor.connection.vendor
        for sql in statements.get(vendor, []):
            schema_editor.execute(sql)
    return apply


class Migration(migrations.Migration):
    dependencies = [("annotations", "0001_initial")]

    operations = [
        migrations.RunPython(_run({"sqlite": SQLITE, "postgresql": POSTGRES}),
                             _run({"sqlite": SQLITE_REVERSE, "postgresql": POSTGRES_REVERSE})),
    ]
