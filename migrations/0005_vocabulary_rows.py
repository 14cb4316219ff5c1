"""Synonyms and word forms become rows pointing at their canonical term; terms need a family and a valence;
every project's vocabulary is filled from the default (it was never filled before)."""

import django.db.models.deletion
from django.db import migrations, models


def repair_and_fill(apps, schema_editor):
    from annotations.services.vocabulary import fill_default

    EmotionTerm = apps.get_model("annotations", "EmotionTerm")
    Project = apps.get_model("annotations", "Project")
    # Rows written by hand before this rule: treat as proposed terms rather than lose them.
    EmotionTerm.objects.filter(canonical__isnull=True, family="").update(family="unassigned", flagged=True)
    EmotionTerm.objects.filter(canonical__isnull=True, valence="").update(valence="ambiguous")
    EmotionTerm.objects.filter(canonical__isnull=False).update(kind="synonym")
    for project in Project.objects.all():
        if not EmotionTerm.objects.filter(project=project).exists():
            fill_default(project.pk, EmotionTerm)


class Migration(migrations.Migration):

    dependencies = [
        ('annotations', '0004_clip_name_registry_identity'),
    ]

    operations = [
        migrations.RemoveField(
            model_name='emotionterm',
            name='synonyms',
        ),
        migrations.RemoveField(
            model_name='emotionterm',
            name='word_forms',
        ),
        migrations.AddField(
            model_name='emotionterm',
            name='kind',
            field=models.CharField(choices=[('term', 'Canonical term'), ('synonym', 'Synonym'), ('word_form', 'Word form')], default='term', max_length=16),
        ),
        migrations.AlterField(
            model_name='emotionterm',
            name='canonical',
            field=models.ForeignKey(blank=True, help_text='The canonical term of a synonym or word form; empty for a term', null=True, on_delete=django.db.models.deletion.CASCADE, related_name='variants', to='annotations.emotionterm'),
        ),
        migrations.AlterField(
            model_name='emotionterm',
            name='family',
            field=models.CharField(blank=True, help_text='Required for a term; unassigned while proposed', max_length=64),
        ),
        migrations.AlterField(
            model_name='emotionterm',
            name='flagged',
            field=models.BooleanField(default=False, help_text='Proposed term a manager should approve or merge'),
        ),
        migrations.RunPython(repair_and_fill, migrations.RunPython.noop),
        migrations.AddConstraint(
            model_name='emotionterm',
            constraint=models.CheckConstraint(condition=models.Q(models.Q(('canonical__isnull', True), ('kind', 'term'), models.Q(('family', ''), _negated=True), models.Q(('valence', ''), _negated=True)), models.Q(('kind__in', ['synonym', 'word_form']), ('canonical__isnull', False)), _connector='OR'), name='emotionterm_term_or_variant'),
        ),
    ]
