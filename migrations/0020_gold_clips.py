# Gold clips (issue 13): GoldClip, a verified clip with its frozen answer key, and GoldAnswer, one annotator's
# scored answer, kept apart from Annotation so that agreement, snapshots and training never read it.
# Written by hand from makemigrations' output for these two models only (the working tree held other
# unmigrated changes at the time).

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('annotations', '0019_labelstudio'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name='GoldClip',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('labels', models.JSONField(help_text='The verified words when it was marked, in order')),
                ('active', models.BooleanField(default=True, help_text='Served in the queue; off when a manager unmarked it')),
                ('created_at', models.DateTimeField(auto_now_add=True)),
                ('updated_at', models.DateTimeField(auto_now=True)),
                ('clip', models.OneToOneField(on_delete=django.db.models.deletion.CASCADE, related_name='gold', to='annotations.clip')),
                ('created_by', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to=settings.AUTH_USER_MODEL)),
                ('project', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='gold_clips', to='annotations.project')),
            ],
            options={
                'ordering': ['id'],
                'indexes': [models.Index(fields=['project', 'active'], name='goldclip_project_active')],
            },
        ),
        migrations.CreateModel(
            name='GoldAnswer',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('status', models.CharField(choices=[('open', 'Open'), ('submitted', 'Submitted'), ('skipped', 'Skipped')], default='open', max_length=16)),
                ('labels', models.JSONField(default=list, help_text="As an annotation's labels: the draft, then the answer")),
                ('version', models.PositiveIntegerField(default=1)),
                ('last_idempotency_key', models.CharField(blank=True, max_length=64)),
                ('served_at', models.DateTimeField()),
                ('updated_at', models.DateTimeField(auto_now=True)),
                ('submitted_at', models.DateTimeField(blank=True, null=True)),
                ('precision', models.FloatField(blank=True, null=True)),
                ('recall', models.FloatField(blank=True, null=True)),
                ('f', models.FloatField(blank=True, null=True)),
                ('family_f', models.FloatField(blank=True, null=True)),
                ('score', models.FloatField(blank=True, null=True)),
                ('annotator', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='gold_answers', to=settings.AUTH_USER_MODEL)),
                ('gold', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='answers', to='annotations.goldclip')),
            ],
            options={
                'ordering': ['-served_at'],
                'indexes': [models.Index(fields=['annotator', 'status'], name='goldanswer_annotator_status')],
                'constraints': [
                    models.UniqueConstraint(fields=('gold', 'annotator'), name='goldanswer_unique_per_annotator'),
                    models.CheckConstraint(condition=models.Q(('status__in', ['open', 'submitted', 'skipped'])), name='goldanswer_status_valid'),
                    models.CheckConstraint(condition=models.Q(models.Q(('status', 'submitted'), _negated=True), models.Q(('submitted_at__isnull', False), ('score__isnull', False)), _connector='OR'), name='goldanswer_submitted_is_scored'),
                    models.CheckConstraint(condition=models.Q(('score__isnull', True), models.Q(('score__gte', 0), ('score__lte', 1)), _connector='OR'), name='goldanswer_score_range'),
                ],
            },
        ),
    ]
