"""Pre-labeling through the real path: tiny InternVL and AffectGPT saved to disk and loaded by the production
loaders, clips generated and ingested, tasks dispatched on commit (eagerly in this module)."""

import io
import shutil

import pytest
from django.core.management import call_command
from django.utils import timezone

from annotations.models import Annotation, Clip, ModelVersion, Prediction
from annotations.services import prelabel

pytest.importorskip("torch", reason="the ml extra (torch) is not installed")
if shutil.which("ffmpeg") is None:
    pytest.skip("ffmpeg not installed (apt-get install ffmpeg)", allow_module_level=True)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    from ml.testing.tiny import build
    from ml.testing.tiny_internvl import save_random_lora_adapter

    root = tmp_path_factory.mktemp("models")
    ivl = build("internvl", root / "ivl")
    agpt = build("affectgpt", root / "agpt")
    adapter = save_random_lora_adapter(ivl, root / "adapter", seed=3)
    return {"internvl": ivl, "affectgpt": agpt, "checkpoint": agpt / "checkpoint.pth", "adapter": adapter}


@pytest.fixture(autouse=True)
def _fresh_backend_cache():
    prelabel._BACKENDS.clear()
    yield
    prelabel._BACKENDS.clear()


def configure(project, models, **extra):
    project.config = {"prelabel": {
        "backends": {"internvl": {"model": str(models["internvl"]), "num_frames": 2},
                     "affectgpt": {"model": str(models["affectgpt"]), "checkpoint": str(models["checkpoint"])}},
        "batch_size": 4, **extra}}
    project.save()


def ingest(folder, project):
    call_command("import_clips", str(folder), "--project", project.name, stdout=io.StringIO(), stderr=io.StringIO())


def backends_of(clip):
    return sorted(clip.predictions.values_list("backend", flat=True))


def test_ready_clips_get_one_prediction_per_backend_plus_fused(project, tiny_models, clip_folder):
    configure(project, tiny_models)
    ingest(clip_folder, project)
    clips = list(Clip.objects.all())
    assert len(clips) == 4
    for clip in clips:
        assert backends_of(clip) == ["affectgpt", "fused", "internvl"], clip.prelabel_error
        assert clip.label_state == "prelabeled" and clip.priority is not None and clip.al_signals
        fused = clip.predictions.get(backend="fused")
        assert fused.model_version.startswith("fused:union+")
        for pred in clip.predictions.exclude(backend="fused"):
            assert all(0 <= label["score"] <= 1 and label["source"] == pred.backend for label in pred.labels)
            assert pred.prompt_version in ("ivl-p1", "agpt-p1") and pred.seconds >= 0

    # Nothing left to do: a repeated task, or the beat job, adds nothing.
    assert prelabel.enqueue_prelabel(project) == 0
    stats = prelabel.prelabel_clips([c.pk for c in clips])
    assert stats["stored"] == 0 and Prediction.objects.count() == 12


def test_human_work_is_never_prelabeled_or_overwritten(project, tiny_models, clip_folder, annotator):
    ingest(clip_folder, project)  # no backends configured yet: nothing is pre-labeled
    assert not Prediction.objects.exists()
    done = Clip.objects.first()
    Annotation.objects.create(clip=done, annotator=annotator, labels=[{"term": "calm", "source": "human"}],
                              status="submitted", submitted_at=timezone.now())
    Clip.objects.filter(pk=done.pk).update(label_state="submitted")
    configure(project, tiny_models)
    assert prelabel.enqueue_prelabel(project) == 3
    done.refresh_from_db()
    assert done.label_state == "submitted" and not done.predictions.exists()
    assert done.annotations.get().labels == [{"term": "calm", "source": "human"}]


def test_a_newer_active_adapter_prelabels_again(project, tiny_models, clip_folder):
    configure(project, tiny_models)
    ingest(clip_folder, project)
    before = set(Prediction.objects.filter(backend="internvl").values_list("model_version", flat=True))
    ModelVersion.objects.create(project=project, backend="internvl", name="ivl+lora1", status="active",
                                base_model=str(tiny_models["internvl"]), adapter_path=str(tiny_models["adapter"]))
    assert prelabel.clips_needing_prelabel(project).count() == 4
    assert prelabel.enqueue_prelabel(project) == 4
    versions = set(Prediction.objects.filter(backend="internvl").values_list("model_version", flat=True))
    assert len(before) == 1 and len(versions) == 2 and before < versions
    new = (versions - before).pop()
    assert "adapter@" in new
    assert Prediction.objects.filter(model_version=new).exclude(model=None).count() == 4
    assert Prediction.objects.filter(backend="affectgpt").count() == 4  # unchanged backend not re-run


def test_a_failing_clip_is_marked_and_does_not_block_the_others(project, tiny_models, clip_folder):
    ingest(clip_folder, project)
    broken = Clip.objects.order_by("id").first()
    with open(broken.file.path, "r+b") as fh:  # damaged on disk after it was validated
        fh.truncate(300)
    configure(project, tiny_models)
    prelabel.enqueue_prelabel(project)
    broken.refresh_from_db()
    assert broken.prelabel_error.startswith("internvl: ") and not broken.predictions.filter(backend="fused")
    for clip in Clip.objects.exclude(pk=broken.pk):
        assert backends_of(clip) == ["affectgpt", "fused", "internvl"]
    # Re-running from the admin clears the error and tries again (and fails again, with a message).
    assert prelabel.rerun_prelabel([broken.pk]) == 1
    broken.refresh_from_db()
    assert broken.prelabel_error


def test_cuda_out_of_memory_halves_the_batch(tiny_models):
    """No GPU here, so the allocator's OOM is raised by a stand-in for the device boundary."""
    import torch

    from ml.types import ClipInput, Prediction as MLPrediction

    class SmallGPU:
        model_version = "internvl:test"
        calls: list[int] = []

        def predict(self, inputs):
            self.calls.append(len(inputs))
            if len(inputs) > 2:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
            return [MLPrediction(i.clip_id, [], "[]", self.model_version, 1, 0.1) for i in inputs]

    gpu = SmallGPU()
    inputs = [ClipInput(str(i), video_path="x") for i in range(7)]
    out = prelabel.predict_with_oom_fallback(gpu, inputs)
    assert [p.clip_id for p in out] == [str(i) for i in range(7)]
    assert gpu.calls == [7, 3, 1, 2, 4, 2, 2]


def test_config_errors_are_clear(project):
    project.config = {"prelabel": {"backends": {"llava": {"model": "x"}}}}
    with pytest.raises(prelabel.ConfigError, match="unknown backend"):
        prelabel.prelabel_config(project)
    project.config = {"prelabel": {"backends": {"internvl": {}}}}
    with pytest.raises(prelabel.ConfigError, match="model is required"):
        prelabel.prelabel_config(project)
    project.config = {"prelabel": {"backends": {"internvl": {"model": "m"}}, "fusion": "magic"}}
    with pytest.raises(prelabel.ConfigError, match="unknown fusion"):
        prelabel.prelabel_config(project)
    project.config = {"prelabel": {"backends": {"internvl": {"model": "m"}}}, "active_learning": {"strategy": "vibes"}}
    with pytest.raises(prelabel.ConfigError, match="active_learning.*unknown strategy"):
        prelabel.prelabel_config(project)
    project.config = {"prelabel": {"backends": {"internvl": {"model": "m", "enabled": False}}}}
    assert prelabel.prelabel_config(project).backends == ()


def test_progress_is_on_the_project_page_and_its_status_feed(client, project, tiny_models, clip_folder, manager):
    ingest(clip_folder, project)
    broken = Clip.objects.order_by("id").first()
    with open(broken.file.path, "r+b") as fh:
        fh.truncate(300)
    configure(project, tiny_models)
    prelabel.enqueue_prelabel(project)
    client.force_login(manager)
    status = client.get(f"/p/{project.slug}/status.json").json()["prelabel"]
    assert (status["prelabeled"], status["failed"], status["queued"], status["ready"]) == (3, 1, 0, 4)
    assert status["per_minute_10min"] == 0.3
    assert status["errors"][0]["id"] == broken.pk and status["errors"][0]["prelabel_error"].startswith("internvl")
    page = client.get(f"/p/{project.slug}/").content.decode()
    assert 'data-prelabel="prelabeled">3<' in page and "internvl: " in page


def test_admin_action_reruns_a_selection(client, project, tiny_models, clip_folder, manager):
    configure(project, tiny_models)
    ingest(clip_folder, project)
    chosen = list(Clip.objects.order_by("id").values_list("pk", flat=True)[:2])
    before = set(Prediction.objects.filter(clip_id__in=chosen).values_list("pk", flat=True))
    client.force_login(manager)
    response = client.post("/admin/annotations/clip/", {"action": "rerun_prelabel", "_selected_action": chosen},
                           follow=True)
    assert "2 clip(s) queued for pre-labeling." in response.content.decode()
    after = set(Prediction.objects.filter(clip_id__in=chosen).values_list("pk", flat=True))
    assert len(after) == 6 and not (before & after)  # fresh rows for exactly the selection
    assert Prediction.objects.count() == 12


def test_a_backend_that_crashes_marks_its_clips_without_paths(project, tiny_models, clip_folder, settings):
    ingest(clip_folder, project)
    project.config = {"prelabel": {"backends": {"internvl": {"model": str(clip_folder), "num_frames": 2}}}}
    project.save()  # a folder that holds no model: loading raises inside the worker
    assert prelabel.enqueue_prelabel(project) == 4
    for clip in Clip.objects.all():
        assert clip.prelabel_error.startswith("internvl: ") and clip.prelabel_queued_at is None
        assert str(clip_folder) not in clip.prelabel_error and str(settings.MEDIA_ROOT) not in clip.prelabel_error
    assert prelabel.enqueue_prelabel(project) == 0  # not retried blindly; the admin re-run clears it


def test_user_safe_removes_server_paths(settings):
    text = f"cannot read audio: file:{settings.MEDIA_ROOT}/clips/1/ab/x.mp4: Invalid data; see /opt/models/x.bin"
    safe = prelabel.user_safe(text)
    assert "/opt/models" not in safe and str(settings.MEDIA_ROOT) not in safe and "Invalid data" in safe


def test_oom_retries_happen_after_the_failed_attempt_is_released():
    """The traceback of a caught OOM pins the failed attempt's tensors; retries must not run under it."""
    import gc
    import weakref

    import torch

    from ml.types import ClipInput, Prediction as MLPrediction

    class Activations:
        pass

    class LeakyGPU:
        model_version = "internvl:test"
        alive_during_retry: list[bool] = []

        def __init__(self):
            self.refs = []

        def predict(self, inputs):
            gc.collect()
            self.alive_during_retry.append(any(ref() is not None for ref in self.refs))
            if len(inputs) > 1:
                held = Activations()  # what a real forward pass leaves in its frames
                self.refs.append(weakref.ref(held))
                raise torch.cuda.OutOfMemoryError("CUDA out of memory")
            return [MLPrediction(i.clip_id, [], "[]", self.model_version, 1, 0.1) for i in inputs]

    gpu = LeakyGPU()
    out = prelabel.predict_with_oom_fallback(gpu, [ClipInput(str(i), video_path="x") for i in range(4)])
    assert len(out) == 4 and not any(p.error for p in out)
    assert gpu.alive_during_retry and not any(gpu.alive_during_retry)


def test_one_internvl_base_serves_every_adapter(project, tiny_models):
    base = prelabel.BackendSpec("internvl", str(tiny_models["internvl"]), num_frames=2)
    tuned = prelabel.BackendSpec("internvl", str(tiny_models["internvl"]), str(tiny_models["adapter"]), num_frames=2)
    first = prelabel.get_backend(tuned)
    assert first.model_version == tuned.version()
    second = prelabel.get_backend(base)
    assert second is first and second.model_version == base.version()
    assert prelabel.get_backend(tuned).model_version == tuned.version() and len(prelabel._BACKENDS) == 1
