"""What labelstudio_push and labelstudio_pull share: find the project, run the step, print its report."""

from django.core.management.base import BaseCommand, CommandError

from annotations.management import arguments
from annotations.services import labelstudio


class LabelStudioCommand(BaseCommand):
    step = None  # "push" or "pull"

    def add_arguments(self, parser):
        parser.add_argument("--project", required=True, help="project name or slug")
        parser.add_argument("--user", help="username recorded in the audit log")

    def handle(self, *args, project, user, **options):
        actor = arguments.user(user)
        proj = arguments.project(project)
        try:
            report = getattr(labelstudio, self.step)(proj, actor=actor)
        except labelstudio.LabelStudioError as exc:
            raise CommandError(str(exc)) from None
        for line in report.lines():
            self.stdout.write(line)
        self.stderr.write(report.summary())
        if report.count("error"):
            raise SystemExit(1)
