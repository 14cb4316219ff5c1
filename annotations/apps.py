from django.apps import AppConfig
from django.db.backends.signals import connection_created


def _register_sqlite_functions(sender, connection, **kwargs):
    if connection.vendor != "sqlite":
        return
    from django.conf import settings

    def purge_allowed():
        return 1 if getattr(settings, "AUDIT_PURGE_ALLOWED", False) else 0

    connection.connection.create_function("affectloop_audit_purge_allowed", 0, purge_allowed)


class AnnotationsConfig(AppConfig):
    name = "annotations"
    verbose_name = "Affectloop"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        connection_created.connect(_register_sqlite_functions, dispatch_uid="affectloop-sqlite-functions")
        # Register the tasks in every process (web included), so annotations.dispatch finds them by name.
        from . import accounts, tasks  # noqa: F401  (accounts: the login signal receiver)
        from django.contrib import admin

        from .admin_audit import audit_every_admin

        audit_every_admin(admin.site)  # the admin's autodiscover has run: every app's ModelAdmins exist
