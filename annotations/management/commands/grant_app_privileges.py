"""Give the platform's database role what it needs and no more; on the audit table only SELECT and INSERT, and
UPDATE of the `changes` column, which the table's trigger (migration 0018) lets hold only the redaction marker.

On PostgreSQL the platform connects as an app role that owns nothing, while a separate owner role runs the
migrations (an owner may ALTER, TRUNCATE or drop its tables and triggers whatever the triggers say). Run this
as the owner after every `migrate`: default privileges cover tables that later migrations create, but only
this command narrows the audit table again. Idempotent: it sets the app role's table privileges to exactly
this set, whatever was granted before.
"""

import os

from django.core.management.base import BaseCommand, CommandError
from django.db import DEFAULT_DB_ALIAS, connections, transaction

ROLE_ENV = "AFFECTLOOP_DB_APP_ROLE"
SCHEMA = "public"


class Command(BaseCommand):
    help = ("Grant the app's PostgreSQL role SELECT/INSERT/UPDATE/DELETE on the tables, and only SELECT/INSERT "
            "on the audit log. Run as the owner role after migrate. Nothing to do on SQLite.")

    def add_arguments(self, parser):
        parser.add_argument("--role", help=f"the app's role (default: ${ROLE_ENV})")
        parser.add_argument("--database", default=DEFAULT_DB_ALIAS)

    def handle(self, *args, role=None, database=DEFAULT_DB_ALIAS, **options):
        connection = connections[database]
        if connection.vendor == "sqlite":
            self.stdout.write("SQLite has no database roles: nothing to do.")
            return
        if connection.vendor != "postgresql":
            raise CommandError(f"unsupported database vendor: {connection.vendor}")
        role = (role or os.environ.get(ROLE_ENV, "")).strip()
        if not role:
            raise CommandError(f"no app role given: pass --role NAME or set {ROLE_ENV}")

        from psycopg import sql

        from annotations.models import AuditEvent

        audit_table = AuditEvent._meta.db_table
        app, schema, audit = sql.Identifier(role), sql.Identifier(SCHEMA), sql.Identifier(SCHEMA, audit_table)
        statements = [
            # USAGE to reach the tables, never CREATE: a table the app creates would be the app's to alter.
            sql.SQL("REVOKE CREATE ON SCHEMA {} FROM {}").format(schema, app),
            sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(schema, app),
            sql.SQL("REVOKE ALL ON ALL TABLES IN SCHEMA {} FROM {}").format(schema, app),
            sql.SQL("GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {} TO {}").format(schema, app),
            # ALL includes UPDATE, DELETE and TRUNCATE; PUBLIC too, as every role holds what PUBLIC holds.
            sql.SQL("REVOKE ALL ON TABLE {} FROM {}, PUBLIC").format(audit, app),
            sql.SQL("GRANT SELECT, INSERT ON TABLE {} TO {}").format(audit, app),
            # Redaction (services.audit.redact): the column only; the trigger refuses any value but the marker.
            sql.SQL("GRANT UPDATE (changes) ON TABLE {} TO {}").format(audit, app),
            # The migration record is the owner's: the app only reads it (Django checks it at start-up).
            sql.SQL("REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON TABLE django_migrations FROM {}").format(app),
            sql.SQL("REVOKE ALL ON ALL SEQUENCES IN SCHEMA {} FROM {}").format(schema, app),
            sql.SQL("GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {} TO {}").format(schema, app),
            # For the current (owner) role: tables from later migrations. The audit table is not narrowed by
            # these if it is ever recreated: hence "run after every migrate".
            sql.SQL("ALTER DEFAULT PRIVILEGES IN SCHEMA {} GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {}")
            .format(schema, app),
            sql.SQL("ALTER DEFAULT PRIVILEGES IN SCHEMA {} GRANT USAGE, SELECT ON SEQUENCES TO {}").format(schema, app),
        ]

        with transaction.atomic(using=database), connection.cursor() as cursor:
            self._check_roles(cursor, role, audit_table)
            for statement in statements:
                cursor.execute(statement.as_string(connection.connection))

        with connection.cursor() as cursor:
            qualified = f"{SCHEMA}.{audit_table}"
            # Through any role it may SET ROLE to (NOINHERIT hides those from a plain has_table_privilege).
            cursor.execute(
                "SELECT DISTINCT p FROM pg_roles r, unnest(ARRAY['UPDATE', 'DELETE', 'TRUNCATE']) AS p "
                "WHERE pg_has_role(%s, r.oid, 'MEMBER') AND has_table_privilege(r.oid, %s::regclass, p) ORDER BY p",
                [role, qualified])
            leaked = [row[0] for row in cursor.fetchall()]
            cursor.execute("SELECT has_schema_privilege(%s, %s, 'CREATE')", [role, SCHEMA])
            can_create = cursor.fetchone()[0]
        if leaked:
            raise CommandError(
                f"granted, but role {role} still holds {', '.join(leaked)} on {audit_table} through a role it "
                f"belongs to (e.g. pg_write_all_data); revoke that membership")
        if can_create:
            self.stderr.write(
                f"warning: role {role} may still CREATE in schema {SCHEMA} through PUBLIC (PostgreSQL before 15); "
                f"consider REVOKE CREATE ON SCHEMA {SCHEMA} FROM PUBLIC")
        self.stdout.write(self.style.SUCCESS(
            f"Granted role {role}: SELECT, INSERT, UPDATE, DELETE on the tables of schema {SCHEMA} "
            f"(and on tables later migrations create); SELECT, INSERT only on {audit_table} (and UPDATE of its "
            f"changes column, for redaction)."))

    def _check_roles(self, cursor, role, audit_table):
        """Refuse setups where the grants would not be the boundary they are meant to be."""
        cursor.execute("SELECT current_user")
        current = cursor.fetchone()[0]
        if current == role:
            raise CommandError(f"connected as the app role {role}: run this as the owner role that runs migrations")
        cursor.execute("SELECT oid, rolsuper FROM pg_roles WHERE rolname = %s", [role])
        row = cursor.fetchone()
        if row is None:
            raise CommandError(f"role {role} does not exist; create it first (CREATE ROLE ... LOGIN)")
        oid, superuser = row
        if superuser:
            raise CommandError(f"role {role} is a superuser, which bypasses every privilege: use a NOSUPERUSER role")
        cursor.execute("SELECT pg_has_role(%s, current_user, 'MEMBER')", [role])
        if cursor.fetchone()[0]:
            raise CommandError(f"role {role} is a member of the owner role {current} and so holds its rights")
        cursor.execute("SELECT pg_get_userbyid(relowner) = current_user FROM pg_class WHERE oid = to_regclass(%s)",
                       [f"{SCHEMA}.{audit_table}"])
        row = cursor.fetchone()
        if row is None:
            raise CommandError(f"table {SCHEMA}.{audit_table} does not exist: run migrate first")
        owns_audit = row[0]
        cursor.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
        if not owns_audit and not cursor.fetchone()[0]:
            raise CommandError(f"connected as {current}, which does not own {audit_table}: run this as the owner "
                               "role that runs migrations")
        cursor.execute(
            "SELECT 'database ' || datname FROM pg_database WHERE datname = current_database() AND datdba = %(oid)s "
            "UNION ALL SELECT 'schema ' || nspname FROM pg_namespace WHERE nspowner = %(oid)s "
            "UNION ALL SELECT 'relation ' || c.oid::regclass::text FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relowner = %(oid)s "
            "AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%%'",
            {"oid": oid})
        owned = [r[0] for r in cursor.fetchall()]
        if owned:
            shown = ", ".join(owned[:5]) + (f" and {len(owned) - 5} more" if len(owned) > 5 else "")
            raise CommandError(f"role {role} owns {shown}; an owner can alter or drop them whatever its grants. "
                               f"Reassign them to the owner role (REASSIGN OWNED BY ... TO ...) first")
