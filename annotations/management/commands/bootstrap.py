"""First-run setup for the embedded platform: database, static files, an admin login."""

import os
import secrets
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand

from annotations.accounts import require_password_change


class Command(BaseCommand):
    help = "Migrate, collect static files and make sure an admin login exists (printed once, kept in the data dir)."

    def add_arguments(self, parser):
        parser.add_argument("--url", default="http://127.0.0.1:8000/", help="URL to print")
        parser.add_argument("--admin", default="admin", help="username of the admin created on first run")

    def handle(self, *args, url, admin, **options):
        call_command("migrate", interactive=False, verbosity=0)
        call_command("collectstatic", interactive=False, verbosity=0)
        User = get_user_model()
        password_file = Path(settings.DATA_DIR) / "admin-password.txt"
        if not User.objects.filter(is_superuser=True).exists():
            password = secrets.token_urlsafe(12)
            user = User.objects.create_superuser(username=admin, email="", password=password)
            require_password_change(user)  # the printed password is only for the first login
            password_file.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(password_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.fchmod(fd, 0o600)  # O_CREAT's mode applies only to a new file; an old one keeps its mode
            with os.fdopen(fd, "w") as fh:
                fh.write(f"{admin}\n{password}\n")
            login = f"{admin} / {password}  (also saved in {password_file}; you choose a new one at first login)"
        else:
            names = ", ".join(User.objects.filter(is_superuser=True).values_list("username", flat=True)[:3])
            if password_file.exists():
                password_file.chmod(0o600)
            where = f" (first password in {password_file})" if password_file.exists() else ""
            login = f"{names}{where}; add another with `python manage.py createsuperuser`"
        self.stdout.write(f"Affectloop is starting at {url}\nAdmin login: {login}")
