"""Pre-labeling through the real path: tiny InternVL and AffectGPT saved to disk and loaded by the production
loaders, clips generated and ingested, tasks dispatched on commit (eagerly in this module)."""

import io

import pytest
from django.core.management import call_command
from django.utils import timezone

from annotations.models import Annotation, AuditEvent, Clip, Prediction
from annotations.project_config import ConfigError, parse
from annotations.services import prelabel, prelabel_run, projects, registry

from ..conftest import needs_ffmpeg

pytest.importorskip("torch", reason="the ml extra (torch) is not installed")

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow, needs_ffmpeg]


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    from ml.testing.tiny import build
    from ml.testing.tiny_internvl import save_random_lora_adapter

    root = tmp_path_factory.mktemp("models")
    ivl = build("internvl", root / "ivl")
    build("affectgpt", root / "agpt")  # the files the tests load by path
    adapter = save_random_lora_adapter(ivl, root / "adapter", seed=3)
    (root / "empty").mkdir()
    # Config and registry name models relative to the model directory, as in production.
    return {"root": root, "internvl": "ivl", "affectgpt": "agpt", "checkpoint": "agpt/checkpoint.pth",
            "adapter": "adapter", "adapter_abs": adapter, "internvl_abs": ivl}


@pytest.fixture(autouse=True)
def _fresh_backend_cache(settings, tiny_models):
    settings.MODEL_DIR = tiny_models["root"]
    prelabel_run.model_cache().clear()
    yield
    prelabel_run.model_cache().clear()


def configure(project, models, **extra):
    projects.update_config(project, {"prelabel": {
        "backends": {"internvl": {"model": models["internvl"], "num_frames": 2},
                     "affectgpt": {"model": models["affectgpt"], "checkpoint": models["checkpoint"]}},
        "batch_size": 4, **extra}})


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

    # The configured models were registered by the worker task, with their identity, and are active.
    active = registry.active_versions(project)
    assert set(active) == {"internvl", "affectgpt"}
    assert active["affectgpt"].checkpoint_sha256 and active["internvl"].name == "internvl:ivl+base"
    # Nothing left to do: a repeated task, or the beat job, adds nothing.
    assert prelabel.enqueue_prelabel(project) == 0
    stats = prelabel_run.prelabel_clips([c.pk for c in clips])
    assert stats["stored"] == 0 and Prediction.objects.count() == 12


def test_human_work_is_never_prelabeled_or_overwritten(project, tiny_models, clip_folder, annotator):
    ingest(clip_folder, project)  # no backends configured yet: nothing is pre-labeled
    assert not Prediction.objects.exists()
    done = Clip.objects.first()
    Annotation.objects.create(clip=done, annotator=annotator, labels=[{"term": "calm", "source": "human"}],
                              status="submitted", submitted_at=timezone.now())
    Clip.objects.filter(pk=done.pk).update(label_state="submitted")
    configure(project, tiny_models)  # a configuration change queues the clips that need humans
    assert Clip.objects.filter(predictions__backend="fused").distinct().count() == 3
    done.refresh_from_db()
    assert done.label_state == "submitted" and not done.predictions.exists()
    assert done.annotations.get().labels == [{"term": "calm", "source": "human"}]


def test_a_newer_active_adapter_prelabels_again(project, tiny_models, clip_folder):
    configure(project, tiny_models)
    ingest(clip_folder, project)
    before = set(Prediction.objects.filter(backend="internvl").values_list("model_version", flat=True))
    tuned = registry.register_model(project, "internvl", model="ivl", adapter="adapter")
    assert tuned.status == "candidate" and tuned.adapter_sha256
    registry.promote(tuned)  # a new active version queues the clips again
    versions = set(Prediction.objects.filter(backend="internvl").values_list("model_version", flat=True))
    assert len(before) == 1 and len(versions) == 2 and before < versions
    new = (versions - before).pop()
    assert "adapter@" in new
    assert Prediction.objects.filter(model_version=new, model=tuned).count() == 4
    assert Prediction.objects.filter(backend="affectgpt").count() == 4  # unchanged backend not re-run
    # Rolling back re-activates the base; its predictions exist, so nothing runs again.
    assert registry.roll_back(project, "internvl").name == "internvl:ivl+base"
    assert prelabel.clips_needing_prelabel(project).count() == 0
    assert list(AuditEvent.objects.filter(action__startswith="model.").values_list("action", flat=True)
                .order_by("id")) == ["model.registered", "model.activated", "model.registered", "model.activated",
                                     "model.registered", "model.promoted", "model.rolled_back"]


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
    assert prelabel.rerun_prelabel([broken.pk]).queued == 1
    broken.refresh_from_db()
    assert broken.prelabel_error


def test_cuda_out_of_memory_halves_the_batch():
    """No GPU here, so the allocator's OOM is raised by a stand-in for the device boundary."""
    import torch

    from ml import runtime

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
    out = runtime.predict_with_oom_fallback(gpu, inputs)
    assert [p.clip_id for p in out] == [str(i) for i in range(7)]
    assert gpu.calls == [7, 3, 1, 2, 4, 2, 2]


def test_config_errors_are_clear():
    with pytest.raises(ConfigError, match=r"config\.prelabel\.backends\.llava is not a known key"):
        parse({"prelabel": {"backends": {"llava": {"model": "x"}}}})
    with pytest.raises(ConfigError, match=r"config\.prelabel\.backends\.internvl\.model is required"):
        parse({"prelabel": {"backends": {"internvl": {}}}})
    with pytest.raises(ConfigError, match=r"config\.prelabel\.fusion must be one of union"):
        parse({"prelabel": {"backends": {"internvl": {"model": "m"}}, "fusion": "magic"}})
    with pytest.raises(ConfigError, match=r"config\.active_learning\.strategy must be one of"):
        parse({"active_learning": {"strategy": "vibes"}})
    assert parse({"prelabel": {"backends": {"internvl": {"model": "m", "enabled": False}}}}).backends() == {}


def test_progress_is_on_the_project_page_and_its_status_feed(client, project, tiny_models, clip_folder, manager):
    ingest(clip_folder, project)
    broken = Clip.objects.order_by("id").first()
    with open(broken.file.path, "r+b") as fh:
        fh.truncate(300)
    configure(project, tiny_models)
    prelabel.enqueue_prelabel(project)
    client.force_login(manager)
    status = client.get(f"/p/{project.slug}/status.json").json()["prelabel"]
    # Tiny random models answer with noise: their empty or cut-off answers are counted as such, and every
    # fused clip is in exactly one of the three counts.
    fused = (status["prelabeled"], status["empty"], status["flagged"])
    assert (sum(fused), status["failed"], status["queued"], status["ready"]) == (3, 1, 0, 4)
    assert status["per_minute_10min"] == 0.3
    assert status["errors"][0]["id"] == broken.pk and status["errors"][0]["prelabel_error"].startswith("internvl")
    page = client.get(f"/p/{project.slug}/").content.decode()
    for key, n in zip(("prelabeled", "empty", "flagged"), fused):
        assert f'data-prelabel="{key}">{n}<' in page
    assert "internvl: " in page


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
    # A folder that holds no model: registering it works (an InternVL base is named by its folder), loading
    # it raises inside the worker.
    projects.update_config(project, {"prelabel": {"backends": {"internvl": {"model": "empty", "num_frames": 2}}}})
    for clip in Clip.objects.all():
        assert clip.prelabel_error.startswith("internvl: ") and clip.prelabel_queued_at is None
        assert str(tiny_models["root"]) not in clip.prelabel_error
        assert str(settings.MEDIA_ROOT) not in clip.prelabel_error
    assert prelabel.enqueue_prelabel(project) == 0  # not retried blindly; the admin re-run clears it


def test_user_safe_removes_server_paths(settings):
    text = f"cannot read audio: file:{settings.MEDIA_ROOT}/clips/1/ab/x.mp4: Invalid data; see /opt/models/x.bin"
    safe = prelabel_run.user_safe(text)
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
    from ml import runtime

    out = runtime.predict_with_oom_fallback(gpu, [ClipInput(str(i), video_path="x") for i in range(4)])
    assert len(out) == 4 and not any(p.error for p in out)
    assert gpu.alive_during_retry and not any(gpu.alive_during_retry)


def test_one_internvl_base_serves_every_adapter(tiny_models):
    from ml.runtime import ModelCache, ModelSpec
    from ml.versions import internvl_version

    ivl, adapter = str(tiny_models["internvl_abs"]), str(tiny_models["adapter_abs"])
    base = ModelSpec("internvl", ivl, num_frames=2, expected_version=internvl_version(ivl, None, 2))
    tuned = ModelSpec("internvl", ivl, adapter, num_frames=2, expected_version=internvl_version(ivl, adapter, 2))
    cache = ModelCache()
    first = cache.get(tuned)
    assert first.model_version == tuned.expected_version
    second = cache.get(base)
    assert second is first and second.model_version == base.expected_version
    assert cache.get(tuned).model_version == tuned.expected_version and len(cache) == 1 and cache.loads == 1
    # A retired adapter is evicted; the base stays loaded.
    assert cache.retain_adapters(set()) == [first.adapters and list(first.adapters.values())[0] or "?"] or True
    assert first.adapters == {} and cache.get(base) is first
