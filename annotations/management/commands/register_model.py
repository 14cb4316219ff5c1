from django.core.management.base import BaseCommand, CommandError

from annotations import selectors
from annotations.services import registry


class Command(BaseCommand):
    help = ("Record a model's identity in a project's registry. Run it where the model files are (a GPU or "
            "training worker): it hashes them. Paths are relative to AFFECTLOOP_MODEL_DIR; hub ids stay as they are.")

    def add_arguments(self, parser):
        parser.add_argument("--project", required=True, help="project name or slug")
        parser.add_argument("--backend", required=True, choices=registry.BACKENDS)
        parser.add_argument("--model", required=True, help="hub id, or folder relative to the model directory")
        parser.add_argument("--adapter", help="InternVL LoRA adapter folder (relative to the model directory)")
        parser.add_argument("--checkpoint", help="AffectGPT checkpoint file (relative to the model directory)")
        parser.add_argument("--activate", action="store_true", help="make it the backend's active model")

    def handle(self, *args, project, backend, model, adapter, checkpoint, activate, **options):
        proj = selectors.project_by_ref(project)
        if proj is None:
            raise CommandError(f"no project named {project!r}")
        try:
            version = registry.register_model(proj, backend, model=model, adapter=adapter, checkpoint=checkpoint,
                                              activate=activate)
        except registry.RegistryError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"{version.name} ({version.status})")
