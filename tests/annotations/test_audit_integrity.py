"""The ways around the audit log's append-only triggers stay closed (migration 0006), and on PostgreSQL the
platform's role can only read and append to it, and redact (`manage.py grant_app_privileges`; migration 0018,
tests/annotations/test_audit_redaction.py)."""

import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import call_command
from django.db import DatabaseError, connection, transaction

from annotations.models import AuditEvent
from annotations.services import audit

REPO = Path(__file__).resolve().parents[2]
TABLE = AuditEvent._meta.db_table
COLUMNS = "created_at, action, object_type, object_id, changes"

sqlite_only = pytest.mark.skipif(connection.vendor != "sqlite", reason="SQLite only (this run uses "
                                 f"{connection.vendor})")
postgres_only = pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL only: set DATABASE_URL="
                                   "postgres://... (CI's second pass does)")


class _Rollback(Exception):
    pass


def _raw(statement, params=None):
    with connection.cursor() as cursor:  # raw SQL: the ORM's own guard is not what is tested here
        cursor.execute(statement, params)


# --- SQLite --------------------------------------------------------------------------------------------
@sqlite_only
@pytest.mark.django_db
@pytest.mark.parametrize("verb", ["INSERT OR REPLACE", "REPLACE"])
def test_sqlite_refuses_replacing_an_event_by_id(project, manager, verb):
    event = audit.record("test.event", project, actor=manager, project=project)
    count = AuditEvent.objects.count()
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        _raw(f"{verb} INTO {TABLE} (id, {COLUMNS}) VALUES (%s, '2000-01-01 00:00:00', 'tampered', 'x', '1', '{{}}')",
             [event.pk])
    event_now = AuditEvent.objects.get(pk=event.pk)
    assert (event_now.action, event_now.created_at, event_now.changes) == (event.action, event.created_at,
                                                                          event.changes)
    assert AuditEvent.objects.count() == count


@sqlite_only
@pytest.mark.django_db
def test_sqlite_refuses_ids_that_would_shadow_generated_ones(project, manager):
    # A stored id -1 would match every generated id in a BEFORE INSERT trigger (it reads as -1 there).
    with pytest.raises(DatabaseError, match="generated"), transaction.atomic():
        _raw(f"INSERT INTO {TABLE} (id, {COLUMNS}) VALUES (-1, '2000-01-01 00:00:00', 'forged', 'x', '1', '{{}}')")
    assert not AuditEvent.objects.filter(pk=-1).exists()
    audit.record("test.event", project, actor=manager, project=project)


@pytest.mark.django_db
def test_appending_still_works(project, manager):
    first = audit.record("test.event", project, actor=manager, project=project)
    second = audit.record("test.event", project, actor=manager, project=project)
    _raw(f"INSERT INTO {TABLE} ({COLUMNS}) VALUES (%s, 'raw.event', 'x', '1', '{{}}')", [first.created_at])
    assert second.pk > first.pk
    assert AuditEvent.objects.filter(action="raw.event").get().pk > second.pk


@pytest.mark.django_db(transaction=True)
def test_test_flush_still_empties_the_audit_table(project, manager):
    """Django's flush (TRUNCATE on PostgreSQL, DELETE on SQLite) is allowed through the test settings."""
    audit.record("test.event", project, actor=manager, project=project)
    call_command("flush", interactive=False, verbosity=0)
    assert not AuditEvent.objects.exists()


# --- PostgreSQL: triggers ------------------------------------------------------------------------------
@postgres_only
@pytest.mark.django_db
def test_postgres_refuses_truncate_unless_the_purge_setting_is_on(project, manager):
    event = audit.record("test.event", project, actor=manager, project=project)
    connection.check_constraints()  # TRUNCATE refuses tables with deferred checks still pending
    for statement in (f"TRUNCATE {TABLE}", f"TRUNCATE annotations_project, {TABLE} CASCADE"):
        with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
            _raw("SET LOCAL affectloop.audit_purge = 'off'")
            _raw(statement)
    assert AuditEvent.objects.filter(pk=event.pk).exists()
    # The test settings turn it on for every connection: the flush between transactional tests needs it.
    with connection.cursor() as cursor:
        cursor.execute("SHOW affectloop.audit_purge")
        assert cursor.fetchone()[0] == "on"
    with pytest.raises(_Rollback), transaction.atomic():
        _raw(f"TRUNCATE annotations_project, {TABLE} CASCADE")
        assert not AuditEvent.objects.exists()
        raise _Rollback
    assert AuditEvent.objects.filter(pk=event.pk).exists()


@postgres_only
@pytest.mark.django_db
def test_postgres_triggers_fire_in_replica_mode(project, manager):
    event = audit.record("test.event", project, actor=manager, project=project)
    for statement in (f"UPDATE {TABLE} SET action = 'tampered' WHERE id = %s", f"DELETE FROM {TABLE} WHERE id = %s",
                      f"TRUNCATE {TABLE}"):
        with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
            _raw("SET LOCAL session_replication_role = replica")  # the test user is a superuser: allowed
            _raw("SET LOCAL affectloop.audit_purge = 'off'")
            _raw(statement, [event.pk] if "%s" in statement else None)
    assert AuditEvent.objects.get(pk=event.pk).action == "test.event"


# --- PostgreSQL: an owner role migrates, the app role appends ------------------------------------------
def _manage(env, *args):
    result = subprocess.run([sys.executable, "manage.py", *args], cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=120, stdin=subprocess.DEVNULL, check=False)
    return result.returncode, result.stdout + result.stderr


@postgres_only
@pytest.mark.slow
@pytest.mark.services
def test_app_role_can_only_read_and_append_to_the_audit_log(tmp_path):
    import psycopg
    from psycopg import errors, sql

    started = time.monotonic()
    db = settings.DATABASES["default"]
    host, port = db["HOST"] or "127.0.0.1", str(db["PORT"] or 5432)
    suffix = secrets.token_hex(4)
    owner, app, dbname = f"affectloop_t_owner_{suffix}", f"affectloop_t_app_{suffix}", f"affectloop_t_roles_{suffix}"
    passwords = {owner: secrets.token_urlsafe(16), app: secrets.token_urlsafe(16)}

    def connect(user, password, database, **kw):
        return psycopg.connect(host=host, port=port, user=user, password=password or None, dbname=database,
                               autocommit=True, connect_timeout=10, **kw)

    def url(role):
        return f"postgres://{role}:{passwords[role]}@{host}:{port}/{dbname}"

    admin = connect(db["USER"], db["PASSWORD"], "postgres")
    try:
        if not admin.execute("SELECT rolsuper OR (rolcreaterole AND rolcreatedb) FROM pg_roles "
                             "WHERE rolname = current_user").fetchone()[0]:
            pytest.skip(f"{db['USER']} may not create roles and databases")
        for role in (owner, app):
            admin.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(role),
                                                                            sql.Literal(passwords[role])))
        admin.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(dbname), sql.Identifier(owner)))

        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("AFFECTLOOP_", "DJANGO_", "DATABASE_", "CELERY_"))}
        env.update(DJANGO_SETTINGS_MODULE="config.settings", DJANGO_SECRET_KEY=secrets.token_urlsafe(50),
                   AFFECTLOOP_DATA_DIR=str(tmp_path / "data"), CELERY_BROKER_URL="memory://")
        as_owner = {**env, "DATABASE_URL": url(owner)}
        rc, out = _manage(as_owner, "migrate", "--noinput")
        assert rc == 0, out
        for _ in range(2):  # idempotent
            rc, out = _manage(as_owner, "grant_app_privileges", "--role", app)
            assert rc == 0, out
        rc, out = _manage({**env, "DATABASE_URL": url(app)}, "grant_app_privileges", "--role", app)
        assert rc != 0 and "connected as the app role" in out, out
        rc, out = _manage(as_owner, "grant_app_privileges")
        assert rc != 0 and "AFFECTLOOP_DB_APP_ROLE" in out, out

        with connect(app, passwords[app], dbname) as conn:
            event_id = conn.execute(f"INSERT INTO {TABLE} ({COLUMNS}) VALUES (now(), 'app.event', 'x', '1', '{{}}') "
                                    "RETURNING id").fetchone()[0]
            assert conn.execute(f"SELECT action FROM {TABLE} WHERE id = %s", [event_id]).fetchone() == ("app.event",)
            for statement in (
                f"UPDATE {TABLE} SET action = 'tampered' WHERE id = {event_id}",
                f"DELETE FROM {TABLE} WHERE id = {event_id}",
                f"TRUNCATE {TABLE}",
                (f"INSERT INTO {TABLE} (id, {COLUMNS}) VALUES ({event_id}, now(), 'tampered', 'x', '1', '{{}}') "
                 "ON CONFLICT (id) DO UPDATE SET action = excluded.action"),
                f"ALTER TABLE {TABLE} DISABLE TRIGGER ALL",
                "SET session_replication_role = replica",
                "DELETE FROM django_migrations",  # the migration record is the owner's
                # Before PostgreSQL 15 every role may create in schema public (the command warns about it).
                *(["CREATE TABLE app_owned (id int)"] if conn.info.server_version >= 150000 else []),
            ):
                with pytest.raises(errors.InsufficientPrivilege):
                    conn.execute(statement)
            # Redaction (migration 0018): the app role may set `changes` to the marker and to nothing else.
            conn.execute(f"UPDATE {TABLE} SET changes = '{{\"redacted\": true}}' WHERE id = %s", [event_id])
            with pytest.raises(errors.RaiseException, match="append-only"):
                conn.execute(f"UPDATE {TABLE} SET changes = '{{}}' WHERE id = %s", [event_id])
            # Everything else the platform writes stays writable.
            conn.execute("INSERT INTO django_session (session_key, session_data, expire_date) "
                         "VALUES ('k', 'd', now())")
            conn.execute("UPDATE django_session SET session_data = 'e' WHERE session_key = 'k'")
            conn.execute("DELETE FROM django_session WHERE session_key = 'k'")
            assert conn.execute("SELECT count(*) FROM pg_class WHERE relowner = "
                                "(SELECT oid FROM pg_roles WHERE rolname = current_user)").fetchone()[0] == 0
            assert conn.execute(f"SELECT action FROM {TABLE} WHERE id = %s", [event_id]).fetchone() == ("app.event",)

        with connect(owner, passwords[owner], dbname) as conn:
            # The owner holds TRUNCATE, but outside the test settings the trigger refuses it.
            with pytest.raises(errors.RaiseException, match="append-only"):
                conn.execute(f"TRUNCATE {TABLE}")
            # Default privileges: a table a later migration creates is the app's to use too.
            conn.execute("CREATE TABLE later_migration (id int)")
        with connect(app, passwords[app], dbname) as conn:
            conn.execute("INSERT INTO later_migration VALUES (1)")
            conn.execute("DELETE FROM later_migration")
    finally:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname)))
        for role in (app, owner):
            admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
        admin.close()
    assert time.monotonic() - started < 90, "keep this test short: it runs in every PostgreSQL pass"
