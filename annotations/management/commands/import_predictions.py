from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from annotations.management import arguments
from annotations.services import prediction_import


class Command(BaseCommand):
    help = ("Import one model's answers from a MER-OV CSV (name,openset; name is the clip's name in the project) "
            "as predictions of --backend with --model-version, then fuse and score the clips that got one, as a "
            "pre-labeling worker does. Prints `imported|skipped|error <name> (line N): <reason>` per row and a "
            "summary on stderr; exits 1 when a row failed, or when the file cannot be read (then nothing is "
            "stored). Safe to re-run: stored answers are skipped, never replaced.")

    def add_arguments(self, parser):
        parser.add_argument("csv", help="the CSV file (UTF-8, header name,openset)")
        parser.add_argument("--project", required=True, help="project name or slug")
        parser.add_argument("--backend", required=True,
                            help="which model answered: internvl, affectgpt or a name of your own (lowercase)")
        parser.add_argument("--model-version", required=True,
                            help="the model's version; stored as <backend>:<version>")
        parser.add_argument("--user", help="username recorded in the audit log as the importer")

    def handle(self, *args, csv, project, backend, model_version, user, **options):
        actor = arguments.user(user)
        proj = arguments.project(project)
        try:
            result = prediction_import.import_predictions(proj, Path(csv), backend=backend,
                                                          model_version=model_version, actor=actor)
        except prediction_import.PredictionImportError as exc:
            raise CommandError(f"{Path(csv).name}: {exc}; nothing was imported") from None
        for outcome in result.outcomes:
            self.stdout.write(outcome.text())
        self.stderr.write(result.summary())
        if result.count("error"):
            raise SystemExit(1)
