"""Dataset exports (services.exports): every format read back by the tool it is for, the dataset card, byte
identity across re-exports, filters, reuse of the one row per options, expiry and rebuild, failures that leave
no file, and the export_dataset command."""

import ast
import csv
import io
import json
import os
import subprocess
import sys
import zipfile
from datetime import timedelta
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from annotations.models import DatasetSnapshot, Export
from annotations.services import exports, snapshots
from annotations.services.projects import create_project
from ml.metrics import read_label_csv
from ml.prompts import internvl_user_text
from ml.training.data import read_samples

from ..conftest import needs_ffmpeg
from .test_snapshots import clip_in, people, predict, verified  # noqa: F401 - people is a fixture
from .training_fixtures import model_dir, verify_clips  # noqa: F401 - model_dir is a fixture

pytestmark = pytest.mark.django_db

ALL_FORMATS = sorted(exports.FORMATS)


@pytest.fixture
def dataset(project, people):  # noqa: F811
    """Five verified clips, named against their creation order, in all three splits; the train and val clips
    were shown model labels first (the test split is blind). Returns {name: (split, labels)}."""
    spec = [("zeta", "train", ["angry", "betrayed"], "You lied to me, again"),
            ("alpha", "train", ["calm"], ""),
            ("mid", "val", ["sad", "tired"], "I can't, not today"),
            ("beta", "test", ["happy"], "we won ✓"),
            ("omega", "train", ["worried"], "what if \"it\" fails")]
    expected = {}
    for name, split, labels, transcript in spec:
        clip = clip_in(project, split, transcript=transcript, name=name, metadata={"subject": f"s-{name}"})
        if split != "test":
            predict(clip, "internvl", "internvl:ivl-p1:base", labels[:1] + ["confused"],
                    at=timezone.now() - timedelta(minutes=5))
        verified(clip, people, labels)
        expected[name] = (split, labels)
    return expected


@pytest.fixture
def snapshot(project, dataset):
    return snapshots.freeze(project)


def write(snapshot, fmt, folder, **options):
    result = exports.write_export(snapshot, fmt, folder, options)
    return result, Path(folder)


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


# --- formats ---------------------------------------------------------------------------------------------
def test_merov_csv_reads_back_with_the_metric_reader(snapshot, dataset, tmp_path):
    result, folder = write(snapshot, "merov-csv", tmp_path / "out")

    assert result["row_count"] == 5
    assert result["files"] == ["README.md", "merov.csv"]
    data = (folder / "merov.csv").read_bytes()
    assert data.startswith(b"name,openset\nalpha,['calm']\nbeta,['happy']\nmid,\"['sad', 'tired']\"\n")
    assert b"\r" not in data and data.endswith(b"\n")
    read = read_label_csv(folder / "merov.csv")
    assert list(read) == sorted(dataset)  # sorted by name, not by creation
    assert read == {name: labels for name, (_, labels) in dataset.items()}
    rows = list(csv.reader(io.StringIO(data.decode())))[1:]
    assert all(ast.literal_eval(openset) == dataset[name][1] for name, openset in rows)


def test_train_jsonl_links_the_media_by_absolute_path(snapshot, dataset, tmp_path):
    result, folder = write(snapshot, "train-jsonl", tmp_path / "out")

    assert result["files"] == ["README.md", "test.jsonl", "train.jsonl", "val.jsonl"]
    samples = {split: read_samples(folder / f"{split}.jsonl") for split in snapshots.SPLITS}
    assert [s.labels for s in samples["train"]] == [("calm",), ("worried",), ("angry", "betrayed")]
    assert [s.transcript for s in samples["train"]] == ["", 'what if "it" fails', "You lied to me, again"]
    assert [s.labels for s in samples["val"]] == [("sad", "tired")]
    assert [s.labels for s in samples["test"]] == [("happy",)]
    media = Path(settings.MEDIA_ROOT).resolve()
    for sample in samples["train"]:
        assert sample.video.is_absolute() and media in sample.video.parents
    first = jsonl(folder / "train.jsonl")[0]
    assert set(first) == {"video", "transcript", "labels"} and Path(first["video"]).is_absolute()


def test_train_jsonl_with_media_included_is_relative_and_self_contained(snapshot, tmp_path):
    result, folder = write(snapshot, "train-jsonl", tmp_path / "out", media="include")

    media_files = [name for name in result["files"] if name.startswith("media/")]
    assert len(media_files) == 5
    lines = jsonl(folder / "train.jsonl")
    assert all(line["video"].startswith("media/clips/") for line in lines)
    # The folder moves as a whole: ml.training.data resolves the paths against the JSONL's folder.
    moved = tmp_path / "elsewhere"
    folder.rename(moved)
    samples = read_samples(moved / "train.jsonl")
    assert all(s.video.is_file() and moved.resolve() in s.video.parents for s in samples)
    assert samples[0].video.read_bytes() == b"not really a video"
    assert "included under media/" in (moved / "README.md").read_text()


def test_internvl_jsonl_uses_the_backend_prompt_and_the_trained_answer(snapshot, tmp_path):
    _, folder = write(snapshot, "internvl-jsonl", tmp_path / "out")

    lines = jsonl(folder / "train.jsonl")
    assert [line["id"] for line in lines] == ["alpha", "omega", "zeta"]
    zeta = lines[2]
    assert zeta["conversations"] == [
        {"from": "human", "value": "<video>\n" + internvl_user_text("You lied to me, again")},
        {"from": "gpt", "value": '["angry", "betrayed"]'}]
    assert zeta["conversations"][0]["value"].startswith('<video>\nThe person says: "You lied to me, again"\n')
    assert Path(zeta["video"]).is_absolute()
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["affectloop_train"] == {"root": ".", "annotation": "train.jsonl", "data_augment": False,
                                        "repeat_time": 1, "length": 3}
    assert meta["affectloop_test"]["length"] == 1


def test_swift_jsonl_has_messages_and_videos(snapshot, tmp_path):
    _, folder = write(snapshot, "swift-jsonl", tmp_path / "out", media="include")

    line = jsonl(folder / "val.jsonl")[0]
    assert line == {"messages": [{"role": "user", "content": "<video>" + internvl_user_text("I can't, not today")},
                                 {"role": "assistant", "content": '["sad", "tired"]'}],
                    "videos": [line["videos"][0]]}
    assert line["videos"][0].startswith("media/clips/") and (folder / line["videos"][0]).is_file()


def test_parquet_loads_with_datasets_one_row_per_clip(snapshot, dataset, people, tmp_path):  # noqa: F811
    datasets = pytest.importorskip("datasets")
    result, folder = write(snapshot, "parquet", tmp_path / "out")

    assert result["files"] == ["README.md", "data/test-00000-of-00001.parquet",
                               "data/train-00000-of-00001.parquet", "data/val-00000-of-00001.parquet"]
    loaded = datasets.load_dataset("parquet", data_dir=str(folder), cache_dir=str(tmp_path / "hf"))
    assert {split: loaded[split].num_rows for split in loaded} == {"train": 3, "val": 1, "test": 1}
    train = loaded["train"]
    assert train["name"] == ["alpha", "omega", "zeta"]
    zeta = train[2]
    assert zeta["labels"] == ["angry", "betrayed"] and zeta["split"] == "train"
    assert zeta["terms"] == ["angry", "betrayed"] and len(zeta["families"]) == 2
    assert zeta["annotator_ids"] == [people["alice"].pk] and zeta["reviewer_ids"] == [people["rita"].pk]
    assert json.loads(zeta["metadata"]) == {"subject": "s-zeta"}
    assert zeta["duration"] == 2.0 and len(zeta["sha256"]) == 64
    assert zeta["predictions"] == [{"backend": "internvl", "model_version": "internvl:ivl-p1:base",
                                    "labels": [{"term": "angry", "score": 0.5, "source": "internvl"},
                                               {"term": "confused", "score": 0.5, "source": "internvl"}]}]
    assert loaded["test"][0]["predictions"] == []  # blind split


def test_parquet_pseudonymises_people_with_a_stable_keyed_hash(project, snapshot, people, tmp_path):  # noqa: F811
    import pyarrow.parquet as pq

    write(snapshot, "parquet", tmp_path / "a", pseudonymise=True)
    write(snapshot, "parquet", tmp_path / "b", pseudonymise=True)
    table = pq.read_table(tmp_path / "a" / "data" / "train-00000-of-00001.parquet")
    annotators = {person for ids in table.column("annotator_ids").to_pylist() for person in ids}
    reviewers = {person for ids in table.column("reviewer_ids").to_pylist() for person in ids}
    assert len(annotators) == 1 and len(reviewers) == 1 and annotators != reviewers
    (alice,) = annotators
    assert len(alice) == 16 and alice != str(people["alice"].pk)
    again = pq.read_table(tmp_path / "b" / "data" / "train-00000-of-00001.parquet")
    assert again.column("annotator_ids").to_pylist() == table.column("annotator_ids").to_pylist()
    # Another snapshot (other content) gives the same person another pseudonym.
    verified(clip_in(project, "train", name="late"), people, ["calm"])
    other = snapshots.freeze(project)
    write(other, "parquet", tmp_path / "c", pseudonymise=True)
    third = pq.read_table(tmp_path / "c" / "data" / "train-00000-of-00001.parquet")
    assert alice not in {p for ids in third.column("annotator_ids").to_pylist() for p in ids}


def test_label_studio_tasks_carry_verified_labels_and_predictions(snapshot, tmp_path):
    result, folder = write(snapshot, "labelstudio-json", tmp_path / "out")

    assert result["files"] == ["README.md", "label_config.xml", "tasks.json"]
    tasks = json.loads((folder / "tasks.json").read_text())
    assert [task["data"]["name"] for task in tasks] == ["alpha", "beta", "mid", "omega", "zeta"]
    zeta = tasks[-1]
    assert zeta["data"]["transcript"] == "You lied to me, again" and Path(zeta["data"]["video"]).is_absolute()
    emotion = {"from_name": "emotions", "to_name": "video", "type": "taxonomy"}
    assert zeta["annotations"] == [{"result": [{**emotion, "value": {"taxonomy": [["angry"], ["betrayed"]]}}]}]
    assert zeta["predictions"] == [{"model_version": "internvl:ivl-p1:base", "score": 0.5,
                                    "result": [{**emotion, "value": {"taxonomy": [["angry"], ["confused"]]}}]}]
    assert tasks[1]["predictions"] == []  # beta: test split, blind
    config = (folder / "label_config.xml").read_text()
    assert '<Taxonomy name="emotions" toName="video">' in config
    assert '<Choice value="betrayed"/>' in config and '<Choice value="confused"/>' in config


def test_the_dataset_card_says_what_is_in_it(snapshot, tmp_path):
    DatasetSnapshot.objects.filter(pk=snapshot.pk).update(erased_count=2)
    snapshot.refresh_from_db()
    _, folder = write(snapshot, "merov-csv", tmp_path / "out", filters={"split": "train"})

    card = (folder / "README.md").read_text()
    assert card.startswith(f"# {snapshot.name}\n")
    assert f"| snapshot content hash | `{snapshot.content_hash}` |" in card
    assert "| clips | 3 |" in card and "| train | 3 |" in card and "| val | 0 |" in card
    assert "| filters | split=train |" in card
    assert "| angry | 1 |" in card and "| calm | 1 |" in card
    assert "| internvl | `internvl:ivl-p1:base` | 3 |" in card
    assert "- 3 clips verified by a reviewer" in card and "- 0 clips by a trusted annotator" in card
    assert "2 clips were erased on request" in card
    assert "- `merov.csv`" in card
    assert str(timezone.now().year) not in card  # no date in the card


# --- determinism ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ALL_FORMATS)
def test_every_format_is_byte_identical_when_exported_again(snapshot, tmp_path, fmt):
    first, a = write(snapshot, fmt, tmp_path / "a", media="include", pseudonymise=True)
    second, b = write(snapshot, fmt, tmp_path / "b", media="include", pseudonymise=True)

    assert first == second
    for name in first["files"]:
        data = (a / name).read_bytes()
        assert data == (b / name).read_bytes(), name
        if not name.endswith((".parquet", ".mp4")):
            assert b"\r\n" not in data
    assert exports.write_zip(a, tmp_path / "a.zip") == exports.write_zip(b, tmp_path / "b.zip")
    assert (tmp_path / "a.zip").read_bytes() == (tmp_path / "b.zip").read_bytes()


def test_the_zip_is_sorted_with_fixed_times_and_modes(snapshot, tmp_path):
    write(snapshot, "train-jsonl", tmp_path / "out", media="include")
    exports.write_zip(tmp_path / "out", tmp_path / "out.zip")

    with zipfile.ZipFile(tmp_path / "out.zip") as archive:
        infos = archive.infolist()
        names = [info.filename for info in infos]
        assert names == sorted(names) and "README.md" in names and len(names) == 9
        assert {info.date_time for info in infos} == {(1980, 1, 1, 0, 0, 0)}
        assert {info.external_attr >> 16 for info in infos} == {0o100644}
        assert archive.read("train.jsonl") == (tmp_path / "out" / "train.jsonl").read_bytes()


def test_items_are_fetched_in_chunks_in_name_order(snapshot, tmp_path, monkeypatch):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    monkeypatch.setattr(exports, "CHUNK", 2)
    with CaptureQueriesContext(connection) as captured:
        _, folder = write(snapshot, "merov-csv", tmp_path / "out")
    reads = [q["sql"] for q in captured.captured_queries if "annotations_snapshotitem" in q["sql"]]
    assert len(reads) == 1 + 3  # the (name, id) pairs, then 3 chunks of at most 2 items
    assert list(read_label_csv(folder / "merov.csv")) == ["alpha", "beta", "mid", "omega", "zeta"]


# --- filters and options ----------------------------------------------------------------------------------
def test_filters_narrow_the_export_to_the_clips_they_select(snapshot, tmp_path):
    result, folder = write(snapshot, "merov-csv", tmp_path / "a", filters={"split": "train", "label": "angry"})
    assert result["row_count"] == 1 and list(read_label_csv(folder / "merov.csv")) == ["zeta"]
    _, folder = write(snapshot, "merov-csv", tmp_path / "b", filters={"name": "m"})
    assert list(read_label_csv(folder / "merov.csv")) == ["mid"]
    with pytest.raises(exports.ExportError, match="Unknown filter: colour"):
        exports.write_export(snapshot, "merov-csv", tmp_path / "c", {"filters": {"colour": "red"}})
    with pytest.raises(exports.ExportError, match="Invalid filter"):
        exports.request_export(snapshot, "merov-csv", {"filters": {"split": "holdout"}})
    assert not (tmp_path / "c").exists() and not Export.objects.exists()


@pytest.mark.parametrize("options,message", [
    ({"zip": True}, "Unknown export option: zip"),
    ({"media": "embed"}, "media must be one of link, include"),
    ({"pseudonymise": "yes"}, "pseudonymise must be true or false"),
    ({"filters": ["split"]}, "filters must be a mapping"),
])
def test_bad_options_are_refused_with_a_message(options, message):
    with pytest.raises(exports.ExportError, match=message):
        exports.normalise_options(options)


def test_options_normalise_so_equal_requests_hash_alike():
    a = exports.normalise_options({"filters": {"split": "train", "label": "", "name": None}})
    b = exports.normalise_options({"media": "link", "pseudonymise": False, "filters": {"split": " train "}})
    assert a == b == {"filters": {"split": "train"}, "media": "link", "pseudonymise": False}
    assert exports.options_hash(a) == exports.options_hash(b)
    assert exports.options_hash(a) != exports.options_hash({**a, "media": "include"})


def test_an_unknown_format_is_refused(snapshot):
    with pytest.raises(exports.ExportError, match="Unknown format 'xlsx'"):
        exports.request_export(snapshot, "xlsx")


# --- request, build, reuse, expiry --------------------------------------------------------------------------
def request(snapshot, fmt, options=None, capture=None, **kwargs):
    with capture(execute=True) as sent:
        export = exports.request_export(snapshot, fmt, options, **kwargs)
    export.refresh_from_db()
    return export, sent


def test_a_requested_export_is_built_into_a_stored_zip(snapshot, manager, django_capture_on_commit_callbacks):
    export, sent = request(snapshot, "train-jsonl", {"media": "include"}, django_capture_on_commit_callbacks,
                           actor=manager)

    assert len(sent) == 1
    assert export.status == Export.Status.DONE and export.progress == 1.0 and export.error == ""
    assert export.row_count == 5 and export.created_by == manager
    assert export.options == {"filters": {}, "media": "include", "pseudonymise": False}
    assert export.file.name.startswith("exports/") and export.file.name.endswith(".zip")
    path = Path(settings.MEDIA_ROOT) / export.file.name
    assert export.size_bytes == path.stat().st_size
    import hashlib
    assert export.checksum == hashlib.sha256(path.read_bytes()).hexdigest()
    assert export.started_at <= export.finished_at
    assert export.expires_at == export.finished_at + timedelta(days=settings.EXPORT_DOWNLOAD_DAYS)
    with zipfile.ZipFile(path) as archive:
        assert "train.jsonl" in archive.namelist() and "media/" not in archive.namelist()
        assert sum(name.startswith("media/clips/") for name in archive.namelist()) == 5
    assert exports.downloadable(export)


def test_the_same_request_reuses_the_export(snapshot, django_capture_on_commit_callbacks):
    first, _ = request(snapshot, "merov-csv", {"filters": {"split": "train"}}, django_capture_on_commit_callbacks)
    again, sent = request(snapshot, "merov-csv", {"media": "link", "filters": {"split": "train"}},
                          django_capture_on_commit_callbacks)

    assert again.pk == first.pk and sent == [] and again.finished_at == first.finished_at
    other, _ = request(snapshot, "merov-csv", {}, django_capture_on_commit_callbacks)
    assert other.pk != first.pk and Export.objects.count() == 2


def test_a_concurrent_request_ends_with_the_winners_row(snapshot, monkeypatch, django_capture_on_commit_callbacks):
    from django.db import IntegrityError

    options = exports.normalise_options({})
    winner = Export.objects.create(snapshot=snapshot, format="merov_csv", options=options,
                                   options_hash=exports.options_hash(options))
    real = Export.objects.get_or_create

    def raced(**kwargs):  # the other request inserted between our look-up and our insert
        monkeypatch.setattr(Export.objects, "get_or_create", real)
        raise IntegrityError("UNIQUE constraint failed")

    monkeypatch.setattr(Export.objects, "get_or_create", raced)
    export, sent = request(snapshot, "merov-csv", {}, django_capture_on_commit_callbacks)
    assert export.pk == winner.pk and Export.objects.count() == 1
    assert sent == []  # the winner dispatched its build; this request does not build it twice


def test_a_done_export_whose_file_is_gone_is_rebuilt(snapshot, django_capture_on_commit_callbacks):
    first, _ = request(snapshot, "merov-csv", None, django_capture_on_commit_callbacks)
    (Path(settings.MEDIA_ROOT) / first.file.name).unlink()
    again, sent = request(snapshot, "merov-csv", None, django_capture_on_commit_callbacks)
    assert len(sent) == 1 and again.status == Export.Status.DONE and again.checksum == first.checksum


def test_expired_exports_lose_their_file_and_rebuild_byte_identical(snapshot, django_capture_on_commit_callbacks):
    export, _ = request(snapshot, "parquet", {"pseudonymise": True}, django_capture_on_commit_callbacks)
    path = Path(settings.MEDIA_ROOT) / export.file.name
    checksum, data = export.checksum, path.read_bytes()

    assert exports.expire_exports(now=timezone.now()) == 0  # not yet
    assert exports.expire_exports(now=export.expires_at + timedelta(seconds=1)) == 1
    export.refresh_from_db()
    assert export.status == Export.Status.EXPIRED and export.file.name == "" and not path.exists()
    assert not exports.downloadable(export)

    rebuilt, sent = request(snapshot, "parquet", {"pseudonymise": True}, django_capture_on_commit_callbacks)
    assert rebuilt.pk == export.pk and len(sent) == 1
    assert rebuilt.status == Export.Status.DONE and rebuilt.checksum == checksum
    assert (Path(settings.MEDIA_ROOT) / rebuilt.file.name).read_bytes() == data


def test_building_twice_is_harmless_and_erased_exports_are_left_alone(snapshot, django_capture_on_commit_callbacks):
    export, _ = request(snapshot, "merov-csv", None, django_capture_on_commit_callbacks)
    assert exports.build(export.pk) == Export.Status.DONE  # a redelivered message
    assert Export.objects.get(pk=export.pk).finished_at == export.finished_at
    Export.objects.filter(pk=export.pk).update(status=Export.Status.ERASED, file="")
    assert exports.build(export.pk) == Export.Status.ERASED
    assert exports.build(999_999) == "missing"
    again, sent = request(snapshot, "merov-csv", None, django_capture_on_commit_callbacks)
    assert len(sent) == 1 and again.status == Export.Status.DONE


def test_a_failed_build_leaves_no_file_and_a_clear_error(snapshot, django_capture_on_commit_callbacks,
                                                        monkeypatch):
    clip = snapshot.items.get(clip_name="mid").clip
    (Path(settings.MEDIA_ROOT) / clip.file.name).unlink()
    export, _ = request(snapshot, "swift-jsonl", {"media": "include"}, django_capture_on_commit_callbacks)

    assert export.status == Export.Status.FAILED
    assert export.error == "The media file of clip 'mid' is missing: the export cannot include it."
    assert export.file.name == "" and export.checksum == ""
    assert not [p for p in (Path(settings.MEDIA_ROOT) / "exports").rglob("*") if not p.is_dir()]
    # The next request queues the failed export again (the build is stubbed here: it stays queued).
    monkeypatch.setattr(exports, "build", lambda export_id: "skipped")
    again, sent = request(snapshot, "swift-jsonl", {"media": "include"}, django_capture_on_commit_callbacks)
    assert len(sent) == 1 and again.pk == export.pk and again.status == Export.Status.QUEUED


def test_progress_is_saved_while_the_export_runs(snapshot, django_capture_on_commit_callbacks, monkeypatch):
    seen = []
    monkeypatch.setattr(exports, "PROGRESS_EVERY", 2)
    original = exports.write_export

    def spy(*args, progress=None, **kwargs):
        def recording(done, total):
            progress(done, total)
            seen.append(Export.objects.values_list("status", "progress").get())
        return original(*args, progress=recording, **kwargs)

    monkeypatch.setattr(exports, "write_export", spy)
    request(snapshot, "merov-csv", None, django_capture_on_commit_callbacks)
    assert seen == [("running", 0.4), ("running", 0.8), ("running", 1.0)]


# --- the command ---------------------------------------------------------------------------------------------
def test_the_command_freezes_and_writes_the_folder(project, dataset, tmp_path):
    out = io.StringIO()
    call_command("export_dataset", "--project", project.name, "--format", "merov-csv", "--out",
                 str(tmp_path / "out"), "--filter", "split=train", stdout=out)

    snapshot = DatasetSnapshot.objects.get()
    assert snapshot.clip_count == 5  # the snapshot holds every verified clip; the filter narrows the export
    assert out.getvalue().splitlines() == [
        f"froze snapshot {snapshot.name} (5 clips)", f"snapshot {snapshot.name}", f"hash {snapshot.content_hash}",
        "rows 3", f"wrote {tmp_path / 'out' / 'README.md'}", f"wrote {tmp_path / 'out' / 'merov.csv'}"]
    assert list(read_label_csv(tmp_path / "out" / "merov.csv")) == ["alpha", "omega", "zeta"]
    assert not Export.objects.exists()  # synchronous: no row, no worker


def test_the_command_exports_an_existing_snapshot_the_same_as_the_worker(project, snapshot, tmp_path,
                                                                         django_capture_on_commit_callbacks):
    call_command("export_dataset", "--project", project.slug, "--format", "parquet", "--snapshot",
                 str(snapshot.pk), "--out", str(tmp_path / "cli"), "--pseudonymise", stdout=io.StringIO())
    export, _ = request(snapshot, "parquet", {"pseudonymise": True}, django_capture_on_commit_callbacks)
    exports.write_zip(tmp_path / "cli", tmp_path / "cli.zip")
    assert (tmp_path / "cli.zip").read_bytes() == (Path(settings.MEDIA_ROOT) / export.file.name).read_bytes()


@pytest.mark.parametrize("args,message", [
    (["--project", "nope", "--format", "merov-csv"], "no project named 'nope'"),
    (["--project", "Interviews", "--format", "xlsx"], "invalid choice: 'xlsx'"),
    (["--project", "Interviews", "--format", "merov-csv", "--filter", "colour=red"], "Unknown filter: colour"),
    (["--project", "Interviews", "--format", "merov-csv", "--filter", "split"], "--filter takes KEY=VALUE"),
    (["--project", "Interviews", "--format", "merov-csv", "--media", "embed"], "invalid choice: 'embed'"),
])
def test_the_command_refuses_bad_input(dataset, tmp_path, args, message):
    with pytest.raises(CommandError, match=message):
        call_command("export_dataset", *args, "--out", str(tmp_path / "out"), stdout=io.StringIO())
    assert not (tmp_path / "out").exists()


def test_the_command_refuses_another_projects_snapshot_and_a_full_folder(project, snapshot, manager, tmp_path):
    other = create_project(name="Other", creator=manager)
    with pytest.raises(CommandError, match="project 'Other' has no snapshot"):
        call_command("export_dataset", "--project", other.slug, "--format", "merov-csv", "--snapshot",
                     str(snapshot.pk), "--out", str(tmp_path / "out"), stdout=io.StringIO())
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    with pytest.raises(CommandError, match="exists and is not an empty folder"):
        call_command("export_dataset", "--project", project.slug, "--format", "merov-csv", "--out",
                     str(tmp_path / "full"), stdout=io.StringIO())
    assert [p.name for p in (tmp_path / "full").iterdir()] == ["keep.txt"]


# --- the trainer reads the export as it is ---------------------------------------------------------------------
@needs_ffmpeg
def test_ml_train_runs_on_an_exported_folder_moved_elsewhere(project, people, model_dir, tmp_path):  # noqa: F811
    from ml.testing.samples import generate_colour_clips

    videos = generate_colour_clips(tmp_path / "colour", 6, seed=3)
    verify_clips(project, people, videos, ["train"] * 4 + ["val"] * 2, settings.MEDIA_ROOT)
    write(snapshots.freeze(project), "train-jsonl", tmp_path / "export", media="include")
    (tmp_path / "export").rename(tmp_path / "moved")  # relative paths: the folder works wherever it is

    result = subprocess.run(
        [sys.executable, "-m", "ml.train", "--base", str(model_dir / "tiny56"),
         "--train", str(tmp_path / "moved" / "train.jsonl"), "--eval", str(tmp_path / "moved" / "val.jsonl"),
         "--out", str(tmp_path / "adapter"), "--epochs", "1", "--batch-size", "2", "--grad-accum", "1",
         "--num-frames", "2", "--eval-every", "100", "--log-every", "1", "--num-workers", "0",
         "--max-new-tokens", "4", "--lora-r", "4"],
        check=False, cwd=Path(__file__).resolve().parents[2], capture_output=True, text=True, timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "adapter" / "metrics.json").read_text())
    assert metrics["steps"] == 2 and (tmp_path / "adapter" / "adapter_model.safetensors").is_file()
    assert json.loads(result.stdout.strip().splitlines()[-1])["n"] == 2  # evaluated on the 2 val clips
