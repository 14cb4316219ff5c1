"""Indexes for the managers' clip list (filters.ClipFilter, selectors.clip_page) at a million clips.

Measured with bench/clip_list.py (1,000,000 clips, 2.3 million label rows, PostgreSQL 15):
- clip_list_priority: the "priority" order over all clips. The queue's clip_queue_order (0011) is partial,
  so no list query could use it: every priority page sorted the whole table (0.6-1.3 s).
- clip_list_state_priority, clip_list_status_priority: a label state or a status in priority order. The
  head of the priority order is done work and failed clips have no priority, so walking the index above
  for "pre-labeled" or "failed" passed 160,000 to 900,000 entries before its first row (1-1.7 s).
- clip_list_name_prefix: "name starts with". The database's collation is not C, so LIKE 'x%' cannot use
  the (project, name) unique index; the pattern-ops one can (450 ms -> 5 ms).
- cliplabel_clip_cover: the per-clip probe of a label, score or source filter answered from the index
  alone (no heap visit per clip passed over).
- term and family statistics: with the default 100 most common values a vocabulary of a few hundred terms
  leaves every other term estimated at thousands of rows, so a rare or unknown label was searched clip by
  clip through the whole order (up to 6 s); with 1000 it is estimated as rare and looked up by its index.
The last three are PostgreSQL only (SQLite has no INCLUDE, no pattern ops, and its LIKE is case-insensitive).

Built CONCURRENTLY on PostgreSQL (no write lock on a live table), hence atomic = False. SQLite has no NULLS
LAST in an index; its DESC already puts NULLs last.
"""

from django.db import migrations

PRIORITY = "priority DESC NULLS LAST"
INDEXES = [
    ("clip_list_priority", "annotations_clip", {
        "postgresql": f"(project_id, {PRIORITY}, id)",
        "sqlite": "(project_id, priority DESC, id)"}),
    ("clip_list_state_priority", "annotations_clip", {
        "postgresql": f"(project_id, label_state, {PRIORITY}, id)",
        "sqlite": "(project_id, label_state, priority DESC, id)"}),
    ("clip_list_status_priority", "annotations_clip", {
        "postgresql": f"(project_id, status, {PRIORITY}, id)",
        "sqlite": "(project_id, status, priority DESC, id)"}),
    ("clip_list_name_prefix", "annotations_clip", {
        "postgresql": "(project_id, name varchar_pattern_ops)"}),
    ("cliplabel_clip_cover", "annotations_cliplabel", {
        "postgresql": "(clip_id) INCLUDE (project_id, source, term, family, score)"}),
]
STATISTICS = ("term", "family")  # annotations_cliplabel columns


def _concurrently(schema_editor) -> str:
    return "CONCURRENTLY " if schema_editor.connection.vendor == "postgresql" else ""


def _statistics(schema_editor, target: int) -> None:
    if schema_editor.connection.vendor == "postgresql":
        columns = ", ".join(f"ALTER COLUMN {c} SET STATISTICS {target}" for c in STATISTICS)
        schema_editor.execute(f"ALTER TABLE annotations_cliplabel {columns}")
        schema_editor.execute("ANALYZE annotations_cliplabel")  # not wait for autovacuum to use them


def create(apps, schema_editor):
    vendor, how = schema_editor.connection.vendor, _concurrently(schema_editor)
    for name, table, columns in INDEXES:
        if vendor in columns:
            # An interrupted concurrent build leaves an invalid index behind: rebuilt, not kept.
            schema_editor.execute(f"DROP INDEX {how}IF EXISTS {name}")
            schema_editor.execute(f"CREATE INDEX {how}{name} ON {table} {columns[vendor]}")
    _statistics(schema_editor, 1000)


def drop(apps, schema_editor):
    how = _concurrently(schema_editor)
    for name, _, _ in reversed(INDEXES):
        schema_editor.execute(f"DROP INDEX {how}IF EXISTS {name}")
    _statistics(schema_editor, -1)


class Migration(migrations.Migration):
    atomic = False  # CREATE INDEX CONCURRENTLY cannot run in a transaction

    dependencies = [("annotations", "0012_clip_review_request")]

    operations = [migrations.RunPython(create, drop)]
