"""Long-retired adapters are removed from the model directory (services.training.clean_retired_adapters, task
affectloop.train.clean_adapters), except those of the active and candidate versions, of a live run's base, and
of every ancestor of those: the lineage a kept model came from."""

from datetime import timedelta

import pytest
from django.utils import timezone

from annotations import tasks
from annotations.models import AuditEvent, ModelVersion, TrainingRun
from annotations.services import registry, training

pytestmark = pytest.mark.django_db

NOW = timezone.now()
LONG_AGO = NOW - timedelta(days=40)
RECENTLY = NOW - timedelta(days=3)


@pytest.fixture
def model_dir(settings, tmp_path):
    settings.MODEL_DIR = tmp_path / "models"
    return settings.MODEL_DIR


def version(project, model_dir, name, *, status="retired", retired_at=LONG_AGO, parent=None, trained=True):
    """A version with an adapter folder and training JSONL on disk, as a run leaves them."""
    folder = f"adapters/{project.slug}/run-{name}-00" if trained else f"external/{name}"
    for path in (model_dir / folder, model_dir / "training" / project.slug / f"run-{name}-00"):
        path.mkdir(parents=True)
        (path / "adapter_model.safetensors").write_bytes(b"weights")
    run = TrainingRun.objects.create(project=project, status="succeeded") if trained else None
    return ModelVersion.objects.create(project=project, backend="internvl", name=f"internvl:tiny+{name}",
                                       base_model="tiny", adapter_path=folder, status=status,
                                       retired_at=retired_at if status == "retired" else None,
                                       parent=parent, training_run=run)


def test_only_old_retired_adapters_outside_every_kept_lineage_go(project, model_dir):
    grandparent = version(project, model_dir, "g")
    parent = version(project, model_dir, "p", parent=grandparent)
    version(project, model_dir, "a", status="active", parent=parent)
    candidate_parent = version(project, model_dir, "cp")
    version(project, model_dir, "c", status="candidate", parent=candidate_parent)
    orphan = version(project, model_dir, "o")
    recent = version(project, model_dir, "r", retired_at=RECENTLY)
    external = version(project, model_dir, "e", trained=False)  # registered from a folder we did not make

    assert tasks.clean_adapters() == {project.slug: 1}

    assert not (model_dir / orphan.adapter_path).exists()
    assert not (model_dir / "training" / project.slug / "run-o-00").exists()
    for kept in (grandparent, parent, candidate_parent, recent, external):
        assert (model_dir / kept.adapter_path / "adapter_model.safetensors").is_file(), kept.name
    orphan.refresh_from_db()
    assert orphan.metrics["files_removed_at"] and orphan.status == "retired"  # the row stays: history
    event = AuditEvent.objects.get(action="model.files_removed")
    assert event.object_id == str(orphan.pk) and event.changes["adapter"] == orphan.adapter_path

    # Its files are gone: it cannot serve again. And a second pass removes nothing more.
    with pytest.raises(registry.RegistryError, match="adapter files were removed"):
        registry.promote(orphan)
    assert training.clean_retired_adapters() == {}


def test_a_live_runs_base_is_kept_and_zero_days_keeps_everything(project, model_dir):
    base = version(project, model_dir, "b")
    TrainingRun.objects.create(project=project, status="queued", base_model=base)
    assert training.clean_retired_adapters() == {}

    old = version(project, model_dir, "x")
    project.config = {"training": {"keep_retired_days": 0}}
    project.save(update_fields=["config"])
    assert training.clean_retired_adapters() == {}
    assert (model_dir / old.adapter_path).is_dir()
    project.config = {"training": {"keep_retired_days": 50}}  # retired 40 days ago: not yet
    project.save(update_fields=["config"])
    assert training.clean_retired_adapters() == {}
    assert training.clean_retired_adapters(now=NOW + timedelta(days=11)) == {project.slug: 1}
