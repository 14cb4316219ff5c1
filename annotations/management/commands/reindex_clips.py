"""Rebuild the derived clip index (split, disagreement, label rows) that the managers' clip list filters on."""

from django.core.management.base import BaseCommand, CommandError

from annotations import selectors
from annotations.models import Clip, Project
from annotations.services import clip_index


class Command(BaseCommand):
    help = "Rebuild the clip index (split, disagreement, label rows) of one project or of all."

    def add_arguments(self, parser):
        parser.add_argument("--project", help="name or slug; default: every project")

    def handle(self, *args, project=None, **options):
        if project:
            found = selectors.project_by_ref(project)
            if found is None:
                raise CommandError(f"no project named {project!r}")
            projects = [found]
        else:
            projects = list(Project.objects.order_by("pk"))
        for p in projects:
            done, last = 0, 0
            while True:
                batch = list(Clip.objects.filter(project=p, pk__gt=last).select_related("project")
                             .order_by("pk")[:clip_index.CHUNK])
                if not batch:
                    break
                clip_index.index_clips(batch)
                done, last = done + len(batch), batch[-1].pk
            self.stdout.write(f"{p.name}: {done} clips indexed")
