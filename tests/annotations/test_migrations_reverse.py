"""Migrations 0008-0011 go back to 0007 and forward again with data in the tables, leaving the schema as it
was; on PostgreSQL their indexes on the big tables (clips, predictions) are built and dropped CONCURRENTLY,
so that migrating a production database never blocks writes to every clip while an index builds."""

import re
from datetime import timedelta

import pytest
from django.conf import settings
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

postgres_only = pytest.mark.skipif(connection.vendor != "postgresql",
                                   reason="PostgreSQL only (CONCURRENTLY): set DATABASE_URL=postgres://... "
                                          "(CI's second pass does)")
sqlite_only = pytest.mark.skipif(connection.vendor != "sqlite",
                                 reason=f"SQLite only (this run uses {connection.vendor})")

BEFORE = ("annotations", "0007_account_flags")
AFTER = ("annotations", "0011_partial_queue_index")
# The indexes 0008-0011 put on annotations_clip and annotations_prediction (millions of rows in production).
BIG_TABLE_INDEXES = {"clip_queue_order", "clip_queue_order_new", "annotations_clip_split_a6de0f3a",
                     "annotations_clip_split_a6de0f3a_like", "prediction_model_version"}
# As the original migrations (plain CREATE INDEX, in one transaction) left them.
POSTGRES_DEFINITIONS = {
    "clip_queue_order": (
        "CREATE INDEX clip_queue_order ON public.annotations_clip USING btree (project_id, priority DESC "
        "NULLS LAST, id) WHERE (((status)::text = 'ready'::text) AND ((label_state)::text = ANY "
        "((ARRAY['unlabeled'::character varying, 'prelabeled'::character varying, "
        "'in_progress'::character varying])::text[])))"),
    "annotations_clip_split_a6de0f3a": (
        "CREATE INDEX annotations_clip_split_a6de0f3a ON public.annotations_clip USING btree (split)"),
    "annotations_clip_split_a6de0f3a_like": (
        "CREATE INDEX annotations_clip_split_a6de0f3a_like ON public.annotations_clip USING btree "
        "(split varchar_pattern_ops)"),
    "prediction_model_version": (
        "CREATE INDEX prediction_model_version ON public.annotations_prediction USING btree "
        "(model_version, clip_id)"),
}
SQLITE_DEFINITIONS = {
    "clip_queue_order": (
        "CREATE INDEX clip_queue_order ON annotations_clip (project_id, priority DESC, id) "
        "WHERE status = 'ready' AND label_state IN ('unlabeled', 'prelabeled', 'in_progress')"),
    "annotations_clip_split_a6de0f3a": (
        'CREATE INDEX "annotations_clip_split_a6de0f3a" ON "annotations_clip" ("split")'),
    "prediction_model_version": (
        'CREATE INDEX "prediction_model_version" ON "annotations_prediction" ("model_version", "clip_id")'),
}


def migrate(*targets):
    executor = MigrationExecutor(connection)  # a fresh one: the loader caches what is applied
    executor.migrate(list(targets) or executor.loader.graph.leaf_nodes())
    return executor


@pytest.fixture
def back_to_latest():
    """Every test here leaves the database fully migrated, whatever happens, for the tests after it."""
    yield
    migrate()


def index_definitions() -> dict[str, tuple[str, bool]]:
    """Every index on the app's tables: name -> (definition, valid)."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SELECT c.relname, pg_get_indexdef(i.indexrelid), i.indisvalid FROM pg_index i "
                           "JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_class t ON t.oid = i.indrelid "
                           "WHERE t.relname LIKE 'annotations_%%'")
            return {name: (sql, valid) for name, sql, valid in cursor.fetchall()}
        cursor.execute("SELECT name, sql FROM sqlite_master WHERE type = 'index' "
                       "AND tbl_name LIKE 'annotations_%'")
        return {name: (sql, True) for name, sql in cursor.fetchall()}


def statements_while(*targets) -> list[str]:
    seen = []

    def record(execute, sql, params, many, context):
        seen.append(" ".join(str(sql).split()))
        return execute(sql, params, many, context)

    with connection.execute_wrapper(record):
        migrate(*targets)
    return seen


def index_statements(statements) -> list[tuple[str, str, bool]]:
    """(CREATE | DROP, index name, concurrently) for each statement on one of the big tables' indexes."""
    out = []
    for sql in statements:
        match = re.match(r'(CREATE|DROP) INDEX (CONCURRENTLY )?(?:IF EXISTS )?"?(\w+)"?', sql, re.IGNORECASE)
        if match and match.group(3) in BIG_TABLE_INDEXES:
            out.append((match.group(1).upper(), match.group(3), bool(match.group(2))))
    return out


def test_leases_of_several_people_on_one_clip_migrate_back_to_one_per_clip(back_to_latest):
    """0008 made several leases per clip possible; going back keeps each clip's newest annotation lease."""
    state = migrate(AFTER).loader.project_state([AFTER]).apps
    User = state.get_model(*settings.AUTH_USER_MODEL.split("."))
    Project, Clip, ClipLease = (state.get_model("annotations", m) for m in ("Project", "Clip", "ClipLease"))
    alice, bob, rita = (User.objects.create(username=name) for name in ("alice", "bob", "rita"))
    project = Project.objects.create(name="Interviews", slug="interviews")
    shared, single = (Clip.objects.create(project=project, file=f"clips/{n}.mp4", original_name=f"{n}.mp4",
                                          name=f"clip-{n}", sha256=f"{n:064x}", size_bytes=1) for n in (1, 2))
    now = timezone.now()

    def lease(clip, user, kind, minutes_ago):
        return ClipLease.objects.create(clip=clip, user=user, kind=kind,
                                        acquired_at=now - timedelta(minutes=minutes_ago),
                                        expires_at=now + timedelta(minutes=30))

    lease(shared, alice, "annotate", 10)
    newest = lease(shared, bob, "annotate", 5)
    lease(shared, rita, "review", 1)  # review leases did not exist before 0008
    kept_single = lease(single, alice, "annotate", 20)

    state = migrate(BEFORE).loader.project_state([BEFORE]).apps
    old = state.get_model("annotations", "ClipLease")
    assert sorted(old.objects.values_list("pk", "clip_id", "user_id")) == sorted(
        [(newest.pk, shared.pk, bob.pk), (kept_single.pk, single.pk, alice.pk)])

    state = migrate(AFTER).loader.project_state([AFTER]).apps
    again = state.get_model("annotations", "ClipLease")
    assert sorted(again.objects.values_list("pk", "kind")) == sorted([(newest.pk, "annotate"),
                                                                      (kept_single.pk, "annotate")])
    assert state.get_model("annotations", "Clip").objects.get(pk=shared.pk).split in ("train", "val", "test")


def test_back_to_0007_and_forward_again_leaves_the_same_indexes(back_to_latest):
    before = index_definitions()
    expected = POSTGRES_DEFINITIONS if connection.vendor == "postgresql" else SQLITE_DEFINITIONS
    for name, definition in expected.items():
        assert before[name] == (definition, True), name
    migrate(BEFORE)
    assert not BIG_TABLE_INDEXES & set(index_definitions())
    migrate()
    assert index_definitions() == before


@postgres_only
def test_big_table_indexes_are_built_and_dropped_concurrently_on_postgresql(back_to_latest):
    migrate(AFTER)
    backward = index_statements(statements_while(BEFORE))
    forward = index_statements(statements_while(AFTER))
    plain = [(op, name) for op, name, concurrently in forward + backward if not concurrently]
    assert plain == []
    # 0011 builds the partial index under a temporary name, so the queue always has one.
    assert {name for op, name, _ in forward if op == "CREATE"} == BIG_TABLE_INDEXES
    assert {name for op, name, _ in backward if op == "DROP"} >= BIG_TABLE_INDEXES - {"clip_queue_order_new"}
    assert all(valid for _, valid in index_definitions().values())


@sqlite_only
def test_sqlite_builds_the_same_indexes_with_plain_create_index(back_to_latest):
    migrate(AFTER)
    statements_while(BEFORE)
    forward = index_statements(statements_while(AFTER))
    assert {name for op, name, _ in forward if op == "CREATE"} == BIG_TABLE_INDEXES - {
        "clip_queue_order_new", "annotations_clip_split_a6de0f3a_like"}  # no LIKE index, no swap on SQLite
    assert not any(concurrently for _, _, concurrently in forward)


def test_raw_sql_indexes_are_there_after_every_migration():
    """The queue's and the clip list's indexes are raw SQL (no Django Index says NULLS LAST, pattern ops or
    INCLUDE), so the migration state does not know them: a later migration that makes SQLite rebuild the
    clip table (an AlterField on Clip) would drop them without a word. Fully migrated, they must all be
    there, as their migrations wrote them."""
    import importlib

    list_indexes = importlib.import_module("migrations.0013_clip_list_indexes").INDEXES
    found = index_definitions()
    vendor = connection.vendor
    expected = {name for name, _, columns in list_indexes if vendor in columns} | {"clip_queue_order"}
    assert expected <= set(found), f"dropped by a later migration: {sorted(expected - set(found))}"
    definitions = POSTGRES_DEFINITIONS if vendor == "postgresql" else SQLITE_DEFINITIONS
    assert found["clip_queue_order"][0] == definitions["clip_queue_order"]
