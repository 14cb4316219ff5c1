"""Erase clips on request, with everything derived from them (services.erasure): by name, or every clip whose
metadata has a value (a subject id). --dry-run prints what would go and changes nothing."""

from django.core.management.base import BaseCommand, CommandError

from annotations.management import arguments
from annotations.services import erasure


class Command(BaseCommand):
    help = ("Erase clips and everything derived from them (predictions, annotations, reviews, captions, leases, "
            "snapshot items, export files, media): --clip NAME (repeatable) or --where KEY=VALUE on the clips' "
            "metadata. Model versions trained on them are flagged. --dry-run only prints what would go.")

    def add_arguments(self, parser):
        parser.add_argument("--project", required=True, help="project name or slug")
        which = parser.add_mutually_exclusive_group(required=True)
        which.add_argument("--clip", action="append", metavar="NAME", help="a clip's name; repeatable")
        which.add_argument("--where", metavar="KEY=VALUE", help="every clip whose metadata KEY is VALUE, "
                                                                "e.g. subject=s017")
        parser.add_argument("--dry-run", action="store_true", help="print what would go; change nothing")

    def handle(self, *args, project, clip, where, dry_run, **options):
        proj = arguments.project(project)
        try:
            plan = erasure.plan(proj, names=clip, where=where)
        except erasure.ErasureError as exc:
            raise CommandError(str(exc)) from None
        if plan.unknown:
            raise CommandError(f"no clip of this name in {proj.name}: {', '.join(plan.unknown)} "
                               f"(nothing was erased)")
        if not plan.clip_ids:
            raise CommandError("no clip matches: nothing to erase")
        if dry_run:
            self.stdout.write(f"Dry run: erasing would remove, in {proj.name}:")
            for line in plan.describe():
                self.stdout.write(f"  {line}")
            self.stdout.write("Nothing was changed.")
            return
        try:
            # No actor: the shell's user is not a platform account; the event says it came from here.
            result = erasure.erase(proj, plan, actor=None)
        except erasure.ErasureError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(self.style.SUCCESS(
            f"Erased {result.clips} clip{'s' if result.clips != 1 else ''} from {proj.name} "
            f"(audit event {result.event_id})."))
        for kind in erasure.KINDS:
            self.stdout.write(f"  {kind.replace('_', ' ')}: {result.counts.get(kind, 0)}")
        self.stdout.write(f"  snapshots that lost items: {len(result.snapshots)}; exports erased: "
                          f"{len(result.exports)}; model versions flagged: {len(result.models)}")
