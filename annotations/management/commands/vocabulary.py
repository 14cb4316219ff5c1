"""Export or import a project's vocabulary as CSV (the same file as the managers' vocabulary page)."""

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from annotations.management import arguments
from annotations.services import vocabulary_governance as governance


class Command(BaseCommand):
    help = ("Export a project's vocabulary to CSV, or import one: the file replaces the vocabulary, all or nothing "
            "(every problem is listed with its line number); stored labels are never rewritten.")

    def add_arguments(self, parser):
        parser.add_argument("--project", required=True, help="name or slug")
        parser.add_argument("--user", help="who imports (recorded in the audit log)")
        parser.add_argument("--dry-run", action="store_true", help="import: validate and preview, change nothing")
        parser.add_argument("action", choices=["export", "import"])
        parser.add_argument("file", help="the CSV file; '-' exports to standard output")

    def handle(self, *args, project, action, file, user=None, dry_run=False, **options):
        found = arguments.project(project)
        if action == "export":
            text = governance.export_csv(found)
            if file == "-":
                self.stdout.write(text, ending="")
            else:
                Path(file).write_text(text, encoding="utf-8")
                self.stdout.write(f"{found.name}: vocabulary version {found.vocabulary_version} written to {file}")
            return
        actor = arguments.user(user)
        try:
            data = Path(file).read_bytes()
        except OSError as exc:
            raise CommandError(f"cannot read {file}: {exc.strerror or exc}") from None
        try:
            plan = (governance.plan_import(found, data) if dry_run
                    else governance.import_csv(found, data, actor=actor))
        except governance.ImportErrors as exc:
            raise CommandError("nothing was imported:\n  " + "\n  ".join(exc.errors)) from None
        found.refresh_from_db(fields=["vocabulary_version"])
        self.stdout.write(f"{'would import' if dry_run else 'imported'}: {len(plan.added)} added, "
                          f"{len(plan.changed)} changed, {len(plan.removed)} removed; {plan.impact.describe()}; "
                          f"vocabulary version {found.vocabulary_version}")
