from django.core.management.base import BaseCommand, CommandError

from annotations import selectors
from annotations.services import registry


class Command(BaseCommand):
    help = ("Verify that this worker's model files match every active model's registered identity. Run it on "
            "each GPU or training worker; exits 1 when any model is missing or different.")

    def add_arguments(self, parser):
        parser.add_argument("--project", help="project name or slug (default: every project)")

    def handle(self, *args, project, **options):
        proj = None
        if project:
            proj = selectors.project_by_ref(project)
            if proj is None:
                raise CommandError(f"no project named {project!r}")
        results = registry.check_models(proj)
        for version, verdict in results:
            self.stdout.write(f"{version.project.slug} {version.backend} {version.name}: {verdict}")
        if not results:
            self.stdout.write("no active models")
        if any(verdict != "ok" for _, verdict in results):
            raise SystemExit(1)
