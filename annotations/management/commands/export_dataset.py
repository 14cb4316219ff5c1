"""Write a dataset export folder from the shell, synchronously (no worker): services.exports.write_export."""

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from annotations.management import arguments
from annotations.models import DatasetSnapshot
from annotations.services import exports, snapshots


class Command(BaseCommand):
    help = ("Export a snapshot of a project's verified clips into a folder (data files, README.md dataset "
            "card, optionally the media). Without --snapshot, freezes the verified clips now.")

    def add_arguments(self, parser):
        parser.add_argument("--project", required=True, help="project name or slug")
        parser.add_argument("--format", required=True, choices=sorted(exports.FORMATS), dest="format_name")
        parser.add_argument("--out", required=True, metavar="PATH", help="the folder to write (new or empty)")
        parser.add_argument("--snapshot", type=int, metavar="ID", help="an existing snapshot of the project")
        parser.add_argument("--filter", action="append", default=[], metavar="KEY=VALUE",
                            help="a clip-list filter, e.g. split=train or label=anxious; repeatable")
        parser.add_argument("--media", choices=exports.MEDIA, default="link",
                            help="include: copy the clips under media/ (relative paths); link: absolute paths")
        parser.add_argument("--pseudonymise", action="store_true", help="keyed-hash the annotator/reviewer ids")

    def handle(self, *args, project, format_name, out, snapshot, filter, media, pseudonymise, **options):
        proj = arguments.project(project)
        filters = arguments.filters(filter)
        folder = Path(out)
        if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
            raise CommandError(f"{folder} exists and is not an empty folder")
        try:
            if snapshot is None:
                chosen = snapshots.freeze(proj)
                self.stdout.write(f"froze snapshot {chosen.name} ({chosen.clip_count} clips)")
            else:
                chosen = DatasetSnapshot.objects.filter(project=proj, pk=snapshot).first()
                if chosen is None:
                    raise CommandError(f"project {proj.name!r} has no snapshot {snapshot}")
            options = {"filters": filters, "media": media, "pseudonymise": pseudonymise}
            result = exports.write_export(chosen, format_name, folder, options)
        except (snapshots.SnapshotError, exports.ExportError) as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"snapshot {chosen.name}")
        self.stdout.write(f"hash {chosen.content_hash}")
        self.stdout.write(f"rows {result['row_count']}")
        for name in result["files"]:
            if not name.startswith("media/"):
                self.stdout.write(f"wrote {folder / name}")
