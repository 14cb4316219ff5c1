"""Close the ways around 0002's append-only triggers.

SQLite: INSERT OR REPLACE / REPLACE INTO with an existing id deletes the old row without firing the delete
trigger (recursive_triggers is off), so inserts reusing an id are refused before they happen.
PostgreSQL: row triggers do not fire on TRUNCATE nor, by default, under session_replication_role = replica;
a statement trigger refuses TRUNCATE and every audit trigger is made ALWAYS. Privileges (the app role holds
only SELECT and INSERT here: `manage.py grant_app_privileges`) are the boundary; the triggers stop the owner's
accidents and whatever slips past privileges.
"""

from django.db import migrations

TABLE = "annotations_auditevent"

SQLITE = [
    (f"CREATE TRIGGER auditevent_no_replace BEFORE INSERT ON {TABLE} "
     f"WHEN EXISTS (SELECT 1 FROM {TABLE} WHERE id = NEW.id) "
     "BEGIN SELECT RAISE(ABORT, 'audit events are append-only'); END;"),
    # In a BEFORE INSERT trigger an id still to be generated reads as -1, so a stored row with id -1 would
    # make every later insert look like a replace. Generated ids start at 1: refuse any other.
    (f"CREATE TRIGGER auditevent_positive_id AFTER INSERT ON {TABLE} WHEN NEW.id < 1 "
     "BEGIN SELECT RAISE(ABORT, 'audit event ids are generated'); END;"),
]
SQLITE_REVERSE = ["DROP TRIGGER IF EXISTS auditevent_no_replace;", "DROP TRIGGER IF EXISTS auditevent_positive_id;"]

POSTGRES = [
    # Django's test flush empties tables with TRUNCATE: config/test_settings.py turns this setting on for its
    # connections. Anyone may set a custom setting, so it guards against accidents, not against an attacker:
    # TRUNCATE itself is a privilege the app role does not hold.
    """CREATE OR REPLACE FUNCTION affectloop_audit_no_truncate() RETURNS trigger AS $$
       BEGIN
         IF coalesce(current_setting('affectloop.audit_purge', true), '') = 'on' THEN RETURN NULL; END IF;
         RAISE EXCEPTION 'audit events are append-only';
       END; $$ LANGUAGE plpgsql;""",
    (f"CREATE TRIGGER auditevent_no_truncate BEFORE TRUNCATE ON {TABLE} "
     "FOR EACH STATEMENT EXECUTE FUNCTION affectloop_audit_no_truncate();"),
    # ALWAYS: fire under session_replication_role = replica too (ordinary triggers are skipped there).
    f"ALTER TABLE {TABLE} ENABLE ALWAYS TRIGGER auditevent_append_only;",
    f"ALTER TABLE {TABLE} ENABLE ALWAYS TRIGGER auditevent_no_truncate;",
]
POSTGRES_REVERSE = [
    f"ALTER TABLE {TABLE} ENABLE TRIGGER auditevent_append_only;",
    f"DROP TRIGGER IF EXISTS auditevent_no_truncate ON {TABLE};",
    "DROP FUNCTION IF EXISTS affectloop_audit_no_truncate();",
]


def _run(statements):
    def apply(apps, schema_editor):
        for sql in statements.get(schema_editor.connection.vendor, []):
            schema_editor.execute(sql)
    return apply


class Migration(migrations.Migration):
    dependencies = [("annotations", "0005_vocabulary_rows")]

    operations = [
        migrations.RunPython(_run({"sqlite": SQLITE, "postgresql": POSTGRES}),
                             _run({"sqlite": SQLITE_REVERSE, "postgresql": POSTGRES_REVERSE})),
    ]
