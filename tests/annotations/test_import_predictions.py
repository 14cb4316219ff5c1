"""`manage.py import_predictions`: a MER-OV `name,openset` CSV stored as one model's predictions, then fused and
scored like a worker's; every bad row reported, a broken file refused whole, a re-run adding nothing."""

import hashlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from annotations.models import AuditEvent, Clip, ModelVersion, Prediction, Project
from annotations.services import prelabel, registry
from ml.active import DEFAULT_STRATEGY
from ml.versions import prediction_version

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parents[2]


def ready_clip(project, name, **fields):
    return Clip.objects.create(project=project, name=name, file=f"clips/{name}.mp4", original_name=f"{name}.mp4",
                               sha256=hashlib.sha256(name.encode()).hexdigest(), size_bytes=10,
                               **{"status": Clip.Status.READY, "duration": 2.0, **fields})


def write_csv(tmp_path, text, name="answers.csv", encoding="utf-8"):
    path = tmp_path / name
    path.write_bytes(text.encode(encoding) if isinstance(text, str) else text)
    return path


def run(path, project, backend="internvl", version="v1", *extra):
    """The command's (stdout lines, stderr, exit status)."""
    out, err = io.StringIO(), io.StringIO()
    try:
        call_command("import_predictions", str(path), "--project", project.slug, "--backend", backend,
                     "--model-version", version, *extra, stdout=out, stderr=err)
        code = 0
    except SystemExit as exc:
        code = exc.code
    return out.getvalue().splitlines(), err.getvalue().strip(), code


@pytest.fixture
def clips(project):
    return [ready_clip(project, name) for name in ("sample_00000001", "sample_00000002", "sample_00000003")]


def test_imports_answers_then_fuses_and_scores_the_clips(project, clips, manager, tmp_path):
    path = write_csv(tmp_path, 'name,openset\n'
                               'sample_00000001,"happy, surprised"\n'
                               "sample_00000002,\"['worried', 'anxious']\"\n"
                               "sample_00000003,\"The character's emotional state is glad, frobnicated.\"\n")
    lines, summary, code = run(path, project, "internvl", "v1", "--user", manager.username)
    assert code == 0
    assert lines == ["imported sample_00000001 (line 2): happy, surprised",
                     "imported sample_00000002 (line 3): worried, anxious",
                     "imported sample_00000003 (line 4): happy, frobnicated [unknown_terms]"]
    assert summary == "imported 3, skipped 0, errors 0 (internvl:v1; 3 clip(s) fused and scored)"

    model = ModelVersion.objects.get(project=project, name="internvl:v1")
    assert (model.backend, model.status, model.base_model, model.prompt_version) == ("internvl", "candidate", "", "")
    pred = Prediction.objects.get(clip=clips[2], backend="internvl")
    assert pred.model == model and pred.model_version == "internvl:v1" and pred.prompt_version == ""
    assert pred.labels == [{"term": "happy", "score": None, "source": "internvl"},  # glad → its canonical term
                           {"term": "frobnicated", "score": None, "source": "internvl"}]
    assert pred.raw_text == "The character's emotional state is glad, frobnicated."
    assert pred.flags == ["unknown_terms"] and pred.seconds is None
    for clip in clips:
        clip.refresh_from_db()
        fused = clip.predictions.get(backend="fused")
        assert fused.model_version == prelabel.fused_version(prelabel.plan(project).config, ["internvl:v1"])
        assert fused.labels[0]["support"] == [{"backend": "internvl", "score": None}]
        assert clip.priority is not None and clip.al_signals["strategy"] == DEFAULT_STRATEGY
        assert clip.label_state == "prelabeled" and clip.prelabel_queued_at is None
    assert [t["term"] for t in clips[0].predictions.get(backend="fused").labels] == ["happy", "surprised"]

    events = AuditEvent.objects.filter(project=project, action__in=["model.registered", "predictions.imported"])
    assert [e.action for e in events.order_by("id")] == ["model.registered", "predictions.imported"]
    run_event = events.get(action="predictions.imported")
    assert run_event.actor == manager and run_event.object_id == str(model.pk)
    changes = run_event.changes
    assert "file" not in changes  # ids and hashes only: the file is named by its sha256
    assert {k: changes[k] for k in ("backend", "model_version", "batch", "imported", "skipped", "errors",
                                    "fused", "clips")} == {
        "backend": "internvl", "model_version": "internvl:v1", "batch": "1/1", "imported": 3,
        "skipped": 0, "errors": 0, "fused": 3, "clips": [c.pk for c in clips]}
    assert len(changes["sha256"]) == 64 and len(changes["run"]) == 32


def test_running_the_same_file_again_stores_nothing_and_says_so(project, clips, tmp_path):
    path = write_csv(tmp_path, "name,openset\nsample_00000001,happy\nsample_00000002,sad\n")
    assert run(path, project)[2] == 0
    before = (list(Prediction.objects.order_by("id").values_list("id", flat=True)), AuditEvent.objects.count())
    priority = Clip.objects.get(pk=clips[0].pk).priority

    lines, summary, code = run(path, project)
    assert code == 0
    assert lines == ["skipped sample_00000001 (line 2): already imported as internvl:v1",
                     "skipped sample_00000002 (line 3): already imported as internvl:v1"]
    assert summary == "imported 0, skipped 2, errors 0 (internvl:v1; 0 clip(s) fused and scored)"
    after = (list(Prediction.objects.order_by("id").values_list("id", flat=True)), AuditEvent.objects.count())
    assert after == before and Clip.objects.get(pk=clips[0].pk).priority == priority
    assert ModelVersion.objects.filter(name="internvl:v1").count() == 1


def test_every_bad_row_gets_a_line_and_the_good_rows_are_still_imported(project, clips, tmp_path):
    pending = Clip.objects.create(project=project, name="waiting", file="clips/w.mp4", original_name="w.mp4",
                                  sha256="f" * 64, size_bytes=10)
    path = write_csv(tmp_path, "\ufeffName , OpenSet\n"  # a BOM and loose header spelling are fine
                               "sample_00000001,calm, relaxed\n"  # unquoted commas belong to the answer
                               "sample_00000002\n"
                               " ,happy\n"
                               "no_such_clip,happy\n"
                               "\n"
                               "sample_00000001,\"calm, relaxed\"\n"
                               "sample_00000001,angry\n"
                               "waiting,happy\n"
                               "sample_00000003,\n")
    lines, summary, code = run(path, project)
    assert code == 1
    assert lines == [
        "imported sample_00000001 (line 2): calm, relaxed",
        "error line 3: 1 field(s), the header has 2",
        "error line 4: empty name",
        "error no_such_clip (line 5): no clip of this name in project 'Interviews'",
        "skipped sample_00000001 (line 7): repeats line 2",
        "error sample_00000001 (line 8): a second, different answer for this clip (line 2's is imported)",
        "error waiting (line 9): the clip is pending, not ready: import again once it is",
        "imported sample_00000003 (line 10): no labels [empty]",
    ]
    assert summary == "imported 2, skipped 1, errors 5 (internvl:v1; 2 clip(s) fused and scored)"
    assert Prediction.objects.get(clip=clips[0], backend="internvl").raw_text == "calm, relaxed"
    assert Prediction.objects.get(clip=clips[2], backend="internvl").flags == ["empty"]
    assert not clips[1].predictions.exists() and not pending.predictions.exists()
    # An empty answer is stored as such (flagged), and fusing it gives a clip without labels but a priority.
    assert Clip.objects.get(pk=clips[2].pk).priority is not None
    assert AuditEvent.objects.get(action="predictions.imported").changes["errors"] == 5


def test_a_file_without_one_good_row_registers_nothing(project, clips, tmp_path):
    lines, summary, code = run(write_csv(tmp_path, "name,openset\nelsewhere,happy\n"), project)
    assert code == 1 and lines == ["error elsewhere (line 2): no clip of this name in project 'Interviews'"]
    assert summary == "imported 0, skipped 0, errors 1 (internvl:v1; 0 clip(s) fused and scored)"
    assert not ModelVersion.objects.exists() and not Prediction.objects.exists()
    assert not AuditEvent.objects.filter(action__in=["predictions.imported", "model.registered"]).exists()


def test_a_different_answer_already_stored_is_never_replaced(project, clips, tmp_path):
    run(write_csv(tmp_path, "name,openset\nsample_00000001,happy\n"), project)
    lines, _, code = run(write_csv(tmp_path, "name,openset\nsample_00000001,sad\nsample_00000002,sad\n", "b.csv"),
                         project)
    assert code == 1
    assert lines == [("error sample_00000001 (line 2): internvl:v1 already has another answer for this clip; "
                      "predictions are never replaced: import this file under a new --model-version"),
                     "imported sample_00000002 (line 3): sad"]
    assert Prediction.objects.get(clip=clips[0], backend="internvl").raw_text == "happy"
    # Under a new version it is a new model, beside the first.
    assert run(write_csv(tmp_path, "name,openset\nsample_00000001,sad\n", "c.csv"), project, "internvl", "v2")[2] == 0
    assert set(clips[0].predictions.filter(backend="internvl").values_list("model_version", flat=True)) == {
        "internvl:v1", "internvl:v2"}


def test_each_batch_is_atomic_and_a_rerun_completes_an_interrupted_import(project, clips, tmp_path, monkeypatch):
    from annotations.services import prediction_import, prelabel_run

    monkeypatch.setattr(prediction_import, "BATCH", 2)
    fuse, calls = prelabel_run.fuse_and_score, []

    def fails_second_time(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("worker lost")
        return fuse(*args, **kwargs)

    monkeypatch.setattr(prelabel_run, "fuse_and_score", fails_second_time)
    path = write_csv(tmp_path, "name,openset\n" + "".join(f"{c.name},happy\n" for c in clips))
    with pytest.raises(RuntimeError):
        run(path, project)
    # The first batch landed whole (predictions, fusion, priority, audit); the second not at all.
    assert set(Prediction.objects.values_list("clip__name", "backend")) == {
        (clips[0].name, "internvl"), (clips[0].name, "fused"), (clips[1].name, "internvl"), (clips[1].name, "fused")}
    assert list(AuditEvent.objects.filter(action="predictions.imported").values_list("changes__batch", flat=True)) == [
        "1/2"]

    monkeypatch.setattr(prelabel_run, "fuse_and_score", fuse)
    lines, summary, code = run(path, project)
    assert code == 0 and summary == "imported 1, skipped 2, errors 0 (internvl:v1; 1 clip(s) fused and scored)"
    assert lines[-1] == "imported sample_00000003 (line 4): happy"
    assert Prediction.objects.filter(backend="fused").count() == 3
    assert Clip.objects.filter(priority__isnull=False).count() == 3


def test_a_long_file_is_written_in_batches_of_one_run(project, clips, tmp_path, monkeypatch):
    from annotations.services import prediction_import

    monkeypatch.setattr(prediction_import, "BATCH", 2)
    run(write_csv(tmp_path, "name,openset\n" + "".join(f"{c.name},happy\n" for c in clips)), project)
    events = AuditEvent.objects.filter(action="predictions.imported").order_by("id")
    assert [(e.changes["batch"], e.changes["imported"], e.changes["fused"]) for e in events] == [("1/2", 2, 2),
                                                                                                  ("2/2", 1, 1)]
    assert len({e.changes["run"] for e in events}) == 1


@pytest.mark.parametrize("content, message", [
    (b"", "the file is empty (expected the header name,openset)"),
    (b"path,labels\na.mp4,happy\n", ("the header must name the columns name,openset once each (MER-OV); "
                                     "found: path,labels")),
    (b"name,openset,name\na,happy,a\n", "the header must name the columns name,openset once each"),
    ("name,openset\nsample_00000001,joyeux \xe9lan\n".encode("latin-1"),
     "the file is not UTF-8 (line 2: byte 0xe9 at offset 36)"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "the file is not UTF-8 (line 1: byte 0x89 at offset 0)"),
    (b"name,openset\nsample_00000001,\"happy\"sad\n", "the file is not valid CSV (line 2): ',' expected after '\"'"),
    (b"name,openset\nsample_00000001,ha\x00ppy\n", "the file is not valid CSV (line 2): it contains a NUL byte"),
])
def test_a_broken_file_is_refused_whole_and_stores_nothing(project, clips, tmp_path, content, message):
    path = write_csv(tmp_path, content)
    with pytest.raises(CommandError) as caught:
        run(path, project)
    assert str(caught.value).startswith(f"answers.csv: {message}")
    assert str(caught.value).endswith("; nothing was imported")
    assert not Prediction.objects.exists() and not ModelVersion.objects.exists()
    assert not AuditEvent.objects.filter(action__in=["predictions.imported", "model.registered"]).exists()


def test_a_missing_file_and_bad_options_are_refused(project, clips, tmp_path):
    good = write_csv(tmp_path, "name,openset\nsample_00000001,happy\n")
    with pytest.raises(CommandError, match=r"^nothing\.csv: cannot read nothing\.csv: No such file"):
        run(tmp_path / "nothing.csv", project)
    with pytest.raises(CommandError, match="backend 'fused' must be 1-16 lowercase letters"):
        run(good, project, "fused")
    with pytest.raises(CommandError, match="backend 'My Model' must be"):
        run(good, project, "My Model")
    with pytest.raises(CommandError, match="model version 'v 1' must be non-empty, without spaces"):
        run(good, project, "internvl", "v 1")
    with pytest.raises(CommandError, match="no project named 'nope'"):
        call_command("import_predictions", str(good), "--project", "nope", "--backend", "x", "--model-version", "1")
    # A name held by a model registered from its files, or by another backend, is not taken over.
    ModelVersion.objects.create(project=project, backend="internvl", name="internvl:ivl+base", base_model="ivl")
    with pytest.raises(CommandError, match="internvl:ivl\\+base is a model registered from its files"):
        run(good, project, "internvl", "ivl+base")
    ModelVersion.objects.create(project=project, backend="affectgpt", name="internvl:x")
    with pytest.raises(CommandError, match="internvl:x is already a model of backend 'affectgpt'"):
        run(good, project, "internvl", "x")
    assert not Prediction.objects.exists()


def test_two_imported_backends_are_fused_together(project, clips, tmp_path):
    run(write_csv(tmp_path, "name,openset\nsample_00000001,\"happy, surprised\"\n"), project, "internvl", "v1")
    lines, _, code = run(write_csv(tmp_path, "name,openset\nsample_00000001,\"happy, tense\"\n", "agpt.csv"),
                         project, "affectgpt", "2025-release")
    assert code == 0 and lines == ["imported sample_00000001 (line 2): happy, tense"]
    config = prelabel.plan(project).config
    both = clips[0].predictions.get(model_version=prelabel.fused_version(config, ["affectgpt:2025-release",
                                                                                "internvl:v1"]))
    assert {label["term"]: label["support"] for label in both.labels} == {
        "happy": [{"backend": "affectgpt", "score": None}, {"backend": "internvl", "score": None}],
        "surprised": [{"backend": "internvl", "score": None}],
        "tense": [{"backend": "affectgpt", "score": None}]}
    assert clips[0].predictions.filter(backend="fused").count() == 2  # the first import's own fusion stays


def test_the_registry_and_the_gpu_plan_are_untouched(project, clips, tmp_path):
    """An active GPU model keeps running: the import adds a candidate row beside it, fuses with the active
    version's prediction (not a retired one's), and the clips still want the GPU's own predictions."""
    Project.objects.filter(pk=project.pk).update(  # as saved by the admin, without the reactions to a change
        config={"prelabel": {"backends": {"internvl": {"model": "ivl", "num_frames": 2}}}})
    project.refresh_from_db()
    old = ModelVersion.objects.create(project=project, backend="internvl", name="internvl:ivl+a@1", base_model="ivl",
                                      adapter_path="a", status="retired")
    active = ModelVersion.objects.create(project=project, backend="internvl", name="internvl:ivl+base",
                                         base_model="ivl", status="active")
    gpu_version = prediction_version(active.name, 2)
    Prediction.objects.create(clip=clips[0], backend="internvl", model=active, model_version=gpu_version,
                              labels=[{"term": "calm", "score": 0.9, "source": "internvl"}])
    Prediction.objects.create(clip=clips[0], backend="internvl", model=old,  # newer, but retired
                              model_version=prediction_version(old.name, 2),
                              labels=[{"term": "angry", "score": 0.9, "source": "internvl"}])
    assert prelabel.plan(project).versions == [gpu_version]

    lines, _, code = run(write_csv(tmp_path, "name,openset\nsample_00000001,sad\nsample_00000002,sad\n"),
                         project, "qwen-omni", "7b")
    assert code == 0, lines
    assert registry.active_versions(project) == {"internvl": active}
    assert ModelVersion.objects.get(name="qwen-omni:7b").status == "candidate"
    config = prelabel.plan(project).config
    fused = clips[0].predictions.get(model_version=prelabel.fused_version(config, [gpu_version, "qwen-omni:7b"]))
    assert [label["term"] for label in fused.labels] == ["calm", "sad"]
    assert clips[1].predictions.filter(model_version=prelabel.fused_version(config, ["qwen-omni:7b"])).exists()
    # The GPU still owes every clip its own prediction and fusion: imports never satisfy the plan.
    assert set(prelabel.clips_needing_prelabel(project).values_list("pk", flat=True)) == {c.pk for c in clips}

    # Importing for the GPU backend's own name stands in for it in this fusion, and activates nothing.
    run(write_csv(tmp_path, "name,openset\nsample_00000001,bored\n", "ivl.csv"), project, "internvl", "external")
    fused = clips[0].predictions.get(model_version=prelabel.fused_version(config, ["internvl:external",
                                                                                "qwen-omni:7b"]))
    assert [label["term"] for label in fused.labels] == ["bored", "sad"]
    assert registry.active_versions(project) == {"internvl": active}


def test_human_work_is_kept_and_not_re_labeled(project, clips, annotator, tmp_path):
    from django.utils import timezone

    from annotations.models import Annotation

    Annotation.objects.create(clip=clips[0], annotator=annotator, labels=[{"term": "calm", "source": "human"}],
                              status="submitted", submitted_at=timezone.now())
    Clip.objects.filter(pk=clips[0].pk).update(label_state="submitted")
    assert run(write_csv(tmp_path, "name,openset\nsample_00000001,angry\n"), project)[2] == 0
    clip = Clip.objects.get(pk=clips[0].pk)
    assert clip.label_state == "submitted"
    assert clip.annotations.get().labels == [{"term": "calm", "source": "human"}]


def test_the_import_runs_without_torch(tmp_path):
    """A fresh interpreter, as in the web image: the whole command, on a new SQLite database, must not even try
    to import the ML stack (tests/test_import_cost.py checks module imports; this checks the run)."""
    probe = """
import json, sys
attempted = set()
class Recorder:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "transformers", "peft", "av", "torchvision"):
            attempted.add(name)
        return None
sys.meta_path.insert(0, Recorder())
import django
django.setup()
from io import StringIO
from pathlib import Path
from django.core.management import call_command
from annotations.models import Clip, Prediction
from annotations.services.projects import create_project
call_command("migrate", verbosity=0)
project = create_project(name="P", creator=None)
Clip.objects.create(project=project, name="c1", file="clips/c1.mp4", original_name="c1.mp4", sha256="a" * 64,
                    size_bytes=10, status="ready", duration=1.0)
path = Path(sys.argv[1]) / "answers.csv"
path.write_text("name,openset\\nc1,\\"happy, tense\\"\\n")
out = StringIO()
call_command("import_predictions", str(path), "--project", "P", "--backend", "affectgpt", "--model-version", "r1",
             stdout=out, stderr=StringIO())
fused = Prediction.objects.filter(backend="fused").count()
print(json.dumps({"out": out.getvalue(), "fused": fused, "heavy": sorted(attempted)}))
"""
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings", "DJANGO_SECRET_KEY": "k" * 50,
           "AFFECTLOOP_DATA_DIR": str(tmp_path), "CELERY_BROKER_URL": "memory://"}
    for name in ("DJANGO_SECRET_KEY_FILE", "DATABASE_URL"):  # the embedded SQLite default, in tmp_path
        env.pop(name, None)
    result = subprocess.run([sys.executable, "-c", probe, str(tmp_path)], check=False, cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["out"] == "imported c1 (line 2): happy, tense\n" and report["fused"] == 1
    assert report["heavy"] == []
