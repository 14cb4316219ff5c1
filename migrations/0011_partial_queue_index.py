"""The queue's index covers only the clips the queue can hand out.

Measured on 1,000,000 clips with the first 200,000 in queue order already done: the full index made the
candidate query walk past every done clip (185-265 ms, p95 claim 1.9 s); this partial one answers in
0.35-0.5 ms. Its WHERE must say exactly what services.queue filters on (status ready, a label state that
still needs humans: selectors.NEEDS_HUMANS), or the planner will not use it.

Not atomic: on PostgreSQL the new index is built with CREATE INDEX CONCURRENTLY (a plain build would block
writes to every clip for its whole run) under a temporary name, and takes the old one's place only once it
is ready, so the queue is never without an index. SQLite swaps them in place.
"""

from django.db import migrations

WHERE = "WHERE status = 'ready' AND label_state IN ('unlabeled', 'prelabeled', 'in_progress')"
PG_COLUMNS = "ON annotations_clip (project_id, priority DESC NULLS LAST, id)"
CREATE = {
    "postgresql": f"CREATE INDEX CONCURRENTLY clip_queue_order_new {PG_COLUMNS} {WHERE}",
    "sqlite": f"CREATE INDEX clip_queue_order ON annotations_clip (project_id, priority DESC, id) {WHERE}",
}
FULL = {
    "postgresql": f"CREATE INDEX CONCURRENTLY clip_queue_order_new {PG_COLUMNS}",
    "sqlite": "CREATE INDEX clip_queue_order ON annotations_clip (project_id, priority DESC, id)",
}


def _swap(statements):
    def run(apps, schema_editor):
        vendor = schema_editor.connection.vendor
        if vendor == "postgresql":
            # A failed run may have left clip_queue_order_new behind (invalid, or built but not yet renamed).
            schema_editor.execute("DROP INDEX CONCURRENTLY IF EXISTS clip_queue_order_new")
            schema_editor.execute(statements[vendor])
            schema_editor.execute("DROP INDEX CONCURRENTLY IF EXISTS clip_queue_order")
            schema_editor.execute("ALTER INDEX clip_queue_order_new RENAME TO clip_queue_order")
        elif vendor in statements:
            schema_editor.execute("DROP INDEX IF EXISTS clip_queue_order")
            schema_editor.execute(statements[vendor])
    return run


class Migration(migrations.Migration):
    atomic = False

    dependencies = [("annotations", "0010_prediction_index_scored_pool")]

    operations = [migrations.RunPython(_swap(CREATE), _swap(FULL))]
