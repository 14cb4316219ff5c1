"""The queue's index covers only the clips the queue can hand out.

Measured on 1,000,000 clips with the first 200,000 in queue order already done: the full index made the
candidate query walk past every done clip (185-265 ms, p95 claim 1.9 s); this partial one answers in
0.35-0.5 ms. Its WHERE must say exactly what services.queue filters on (status ready, a label state that
still needs humans: selectors.NEEDS_HUMANS), or the planner will not use it.
"""

from django.db import migrations

WHERE = "WHERE status = 'ready' AND label_state IN ('unlabeled', 'prelabeled', 'in_progress')"
CREATE = {
    "postgresql": f"CREATE INDEX clip_queue_order ON annotations_clip (project_id, priority DESC NULLS LAST, id) {WHERE}",
    "sqlite": f"CREATE INDEX clip_queue_order ON annotations_clip (project_id, priority DESC, id) {WHERE}",
}
FULL = {
    "postgresql": "CREATE INDEX clip_queue_order ON annotations_clip (project_id, priority DESC NULLS LAST, id)",
    "sqlite": "CREATE INDEX clip_queue_order ON annotations_clip (project_id, priority DESC, id)",
}


def _swap(statements):
    def run(apps, schema_editor):
        vendor = schema_editor.connection.vendor
        if vendor in statements:
            schema_editor.execute("DROP INDEX IF EXISTS clip_queue_order")
            schema_editor.execute(statements[vendor])
    return run


class Migration(migrations.Migration):
    dependencies = [("annotations", "0010_prediction_index_scored_pool")]

    operations = [migrations.RunPython(_swap(CREATE), _swap(FULL))]
