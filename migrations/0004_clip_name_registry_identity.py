"""Clip names (unique per project), model identity fields on the registry, automatic reviews, the
vocabulary version, and the typed project configuration.

Existing clips get their name from the import path or upload name without its extension; where two clips
of a project would share a name, the later ones get `~<id>` appended. Project configs written in the old
shape (a fitted active-learning strategy stored directly under `active_learning`) move under
`active_learning.fitted`, which the typed configuration expects.
"""

from pathlib import PurePosixPath

from django.db import migrations, models


def clip_name(original: str, metadata: dict) -> str:
    source = (metadata or {}).get("import_path") or (metadata or {}).get("uploaded_name") or original or "clip"
    path = PurePosixPath(str(source).replace("\\", "/"))
    return str(path.with_suffix("")) if path.suffix else str(path)


def name_clips(apps, schema_editor):
    Clip = apps.get_model("annotations", "Clip")
    taken: dict[int, set[str]] = {}
    for clip in Clip.objects.order_by("id").only("id", "project_id", "original_name", "metadata"):
        name = clip_name(clip.original_name, clip.metadata)[:280]
        names = taken.setdefault(clip.project_id, set())
        if name in names:
            name = f"{name}~{clip.id}"
        names.add(name)
        Clip.objects.filter(pk=clip.pk).update(name=name)


def typed_config(apps, schema_editor):
    Project = apps.get_model("annotations", "Project")
    for project in Project.objects.all():
        config = dict(project.config or {})
        al = config.get("active_learning")
        if isinstance(al, dict) and "format" in al:
            config["active_learning"] = {"fitted": al}
            Project.objects.filter(pk=project.pk).update(config=config)


class Migration(migrations.Migration):

    dependencies = [
        ("annotations", "0003_clip_prelabel_state"),
    ]

    operations = [
        migrations.AddField(model_name="clip", name="name", field=models.CharField(default="", max_length=300),
                            preserve_default=False),
        migrations.RunPython(name_clips, migrations.RunPython.noop),
        migrations.AddConstraint(model_name="clip", constraint=models.UniqueConstraint(
            fields=("project", "name"), name="clip_unique_name_per_project")),
        migrations.AddConstraint(model_name="clip", constraint=models.CheckConstraint(
            condition=models.Q(("name", ""), _negated=True), name="clip_name_nonempty")),
        migrations.AddField(model_name="modelversion", name="base_fingerprint", field=models.CharField(
            blank=True, help_text="sha256 of the base's config.json when it is a local folder", max_length=64)),
        migrations.AddField(model_name="modelversion", name="checkpoint_path", field=models.CharField(
            blank=True, help_text="AffectGPT checkpoint, relative to the model directory", max_length=500)),
        migrations.AddField(model_name="modelversion", name="checkpoint_sha256",
                            field=models.CharField(blank=True, max_length=64)),
        migrations.AddField(model_name="modelversion", name="retired_at",
                            field=models.DateTimeField(blank=True, null=True)),
        migrations.AlterField(model_name="modelversion", name="adapter_path", field=models.CharField(
            blank=True, help_text="LoRA adapter folder, relative to the model directory", max_length=500)),
        migrations.AlterField(model_name="modelversion", name="base_model", field=models.CharField(
            help_text="Hub id, or folder relative to the model directory", max_length=300)),
        migrations.AlterField(model_name="modelversion", name="name", field=models.CharField(
            help_text="Identity: internvl:<base>+<adapter id> or affectgpt:<llm>+<checkpoint hash>",
            max_length=200)),
        migrations.AddField(model_name="project", name="vocabulary_version",
                            field=models.PositiveIntegerField(default=1)),
        migrations.AddField(model_name="review", name="automatic", field=models.BooleanField(default=False)),
        migrations.RunPython(typed_config, migrations.RunPython.noop),
    ]
