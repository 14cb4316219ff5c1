"""Account flags (a password someone else chose must be changed), and the admin access that demoted
managers kept: before this, losing the last manager role left staff status and the managers group."""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


MANAGERS_GROUP = "Project managers"  # annotations.services.projects.MANAGERS_GROUP at the time of writing


def revoke_stale_admin(apps, schema_editor):
    Group = apps.get_model("auth", "Group")
    User = apps.get_model(*settings.AUTH_USER_MODEL.split("."))
    Membership = apps.get_model("annotations", "Membership")
    AuditEvent = apps.get_model("annotations", "AuditEvent")
    group = Group.objects.filter(name=MANAGERS_GROUP).first()
    if group is None:
        return
    managers = Membership.objects.filter(role="manager").values("user_id")
    for user in User.objects.filter(groups=group).exclude(pk__in=managers):
        user.groups.remove(group)
        drop_staff = (user.is_staff and not user.is_superuser and not user.groups.exists()
                      and not user.user_permissions.exists())
        if drop_staff:
            user.is_staff = False
            user.save(update_fields=["is_staff"])
        AuditEvent.objects.create(action="account.admin_revoked", object_type="user", object_id=str(user.pk),
                                  changes={"user": user.username, "staff_revoked": drop_staff, "by": "migration"})


class Migration(migrations.Migration):

    dependencies = [
        ('annotations', '0006_audit_integrity'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name='AccountFlags',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('must_change_password', models.BooleanField(default=False)),
                ('updated_at', models.DateTimeField(auto_now=True)),
                ('user', models.OneToOneField(on_delete=django.db.models.deletion.CASCADE, related_name='account_flags', to=settings.AUTH_USER_MODEL)),
            ],
        ),
        migrations.RunPython(revoke_stale_admin, migrations.RunPython.noop),
    ]
