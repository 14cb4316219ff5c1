"""Freeze a project's verified clips into a content-hashed snapshot, and optionally write its JSONL files."""

from django.core.management.base import BaseCommand, CommandError

from annotations.management import arguments
from annotations.services import snapshots


class Command(BaseCommand):
    help = ("Freeze the verified clips of a project (narrowed by clip-list filters) into a snapshot; the "
            "same data gives the same snapshot. Prints its name, hash and clips per split.")

    def add_arguments(self, parser):
        parser.add_argument("--project", required=True, help="project name or slug")
        parser.add_argument("--filter", action="append", default=[], metavar="KEY=VALUE",
                            help="a clip-list filter, e.g. split=train or label=anxious; repeatable")
        parser.add_argument("--name", help="the snapshot's name (default: <project slug>-<hash prefix>)")
        parser.add_argument("--jsonl", metavar="DIR",
                            help="also write train/val/test.jsonl for ml.train here")

    def handle(self, *args, project, filter, name, jsonl, **options):
        proj = arguments.project(project)
        filters = arguments.filters(filter)
        try:
            snapshot = snapshots.freeze(proj, filters=filters or None, name=name)
        except snapshots.SnapshotError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"snapshot {snapshot.name}")
        self.stdout.write(f"hash {snapshot.content_hash}")
        for split in snapshots.SPLITS:
            self.stdout.write(f"{split} {snapshot.split_counts.get(split, 0)}")
        if jsonl:
            for path in snapshots.write_jsonl(snapshot, jsonl).values():
                self.stdout.write(f"wrote {path}")
