"""What labelstudio_push and labelstudio_pull share: find the project, run the step, print its report."""

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from annotations import selectors
from annotations.services import labelstudio


class LabelStudioCommand(BaseCommand):
    step = None  # "push" or "pull"

    def add_arguments(self, parser):
        parser.add_argument("--project", required=True, help="project name or slug")
        parser.add_argument("--user", help="username recorded in the audit log")

    def handle(self, *args, project, user, **options):
        actor = None
        if user:
            actor = get_user_model().objects.filter(username=user).first()
            if actor is None:
                raise CommandError(f"no user named {user!r}")
        proj = selectors.project_by_ref(project)
        if proj is None:
            raise CommandError(f"no project named {project!r}")
        try:
            report = getattr(labelstudio, self.step)(proj, actor=actor)
        except labelstudio.LabelStudioError as exc:
            raise CommandError(str(exc)) from None
        for line in report.lines():
            self.stdout.write(line)
        self.stderr.write(report.summary())
        if report.count("error"):
            raise SystemExit(1)
