from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from annotations import selectors
from annotations.management import arguments
from annotations.services import ingest, projects


class Command(BaseCommand):
    help = ("Import clips from a folder or a CSV manifest (path,transcript,language,labels,...). Every file is "
            "validated before anything is stored; prints `imported|duplicate|rejected <path>: <reason>` per file "
            "and exits 1 when anything was rejected. Safe to re-run.")

    def add_arguments(self, parser):
        parser.add_argument("source", help="a folder of videos, or a CSV manifest")
        parser.add_argument("--project", required=True, help="project name (or slug)")
        parser.add_argument("--create-project", action="store_true", help="create the project if it is missing")
        parser.add_argument("--labels-verified", action="store_true",
                            help="import the manifest's labels as verified annotations (default: awaiting review)")
        parser.add_argument("--root", help="folder the manifest's paths are relative to (default: its folder)")
        parser.add_argument("--user", help="username recorded in the audit log as the importer")
        parser.add_argument("--dry-run", action="store_true", help="validate only; store nothing")

    def handle(self, *args, source, project, create_project, labels_verified, root, user, dry_run, **options):
        actor = arguments.user(user)
        proj = selectors.project_by_ref(project)
        if proj is None:
            if not create_project:
                raise CommandError(f"no project named {project!r} (add --create-project to create it)")
            try:
                proj = projects.create_project(name=project, creator=actor)
            except projects.ProjectError as exc:
                raise CommandError(str(exc)) from None
            self.stderr.write(f"created project {proj.name!r}")

        path = Path(source)
        if path.is_dir():
            candidates, kind = list(ingest.folder_candidates(path)), "import:folder"
        elif path.is_file():
            try:
                candidates = ingest.manifest_candidates(path, Path(root) if root else None)
            except ingest.ManifestError as exc:
                raise CommandError(f"{source}: {exc}") from None
            kind = "import:csv"
        else:
            raise CommandError(f"{source}: no such file or folder")
        if not candidates:
            raise CommandError(f"{source}: no video files found")

        counts: dict[str, int] = {}
        for outcome in ingest.import_candidates(proj, candidates, source=kind, actor=actor,
                                                labels_verified=labels_verified, dry_run=dry_run):
            counts[outcome.status] = counts.get(outcome.status, 0) + 1
            self.stdout.write(outcome.line())
        self.stderr.write(", ".join(f"{n} {status}" for status, n in sorted(counts.items())))
        if counts.get("rejected"):
            raise SystemExit(1)
