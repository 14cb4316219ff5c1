"""Operations shared by the migrations that build indexes CONCURRENTLY (not a migration: Django's loader
skips modules whose name starts with an underscore)."""

from django.db import migrations


def run_deferred_sql(schema_editor):
    while schema_editor.deferred_sql:
        schema_editor.execute(schema_editor.deferred_sql.pop(0))


class InOneTransaction(migrations.SeparateDatabaseAndState):
    """Its operations in one transaction inside a non-atomic migration (Migration.apply wraps an operation
    whose `atomic` is true), with the index SQL they defer to the migration's end: all of them or none."""

    atomic = True

    def __init__(self, operations):
        super().__init__(database_operations=operations, state_operations=operations)

    def deconstruct(self):
        return self.__class__.__qualname__, [self.database_operations], {}

    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        super().database_forwards(app_label, schema_editor, from_state, to_state)
        run_deferred_sql(schema_editor)

    def database_backwards(self, app_label, schema_editor, from_state, to_state):
        super().database_backwards(app_label, schema_editor, from_state, to_state)
        run_deferred_sql(schema_editor)

    def describe(self):
        return "In one transaction: " + "; ".join(op.describe() for op in self.database_operations)
