"""Clip ingest through the import command: folder, CSV manifest, duplicates, and every kind of bad input."""

import csv
import io
import shutil
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError

from annotations.models import Annotation, AuditEvent, Clip, Project, Review

from ml.testing.samples import make_clip

from ..conftest import needs_ffmpeg

# transaction=True: clips are dispatched to the media task on commit, as in production.
pytestmark = [pytest.mark.django_db(transaction=True), needs_ffmpeg]


def run_import(*args):
    out, err = io.StringIO(), io.StringIO()
    code = 0
    try:
        call_command("import_clips", *args, stdout=out, stderr=err)
    except SystemExit as exc:
        code = exc.code
    return code, out.getvalue().splitlines(), err.getvalue()


def stored_media_files() -> list[Path]:
    root = Path(settings.MEDIA_ROOT) / "clips"
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def test_folder_import_stores_validated_clips_and_processes_them(clip_folder):
    code, lines, err = run_import(str(clip_folder), "--project", "Demo", "--create-project")
    assert code == 0, lines
    assert sorted(lines) == sorted(f"imported {p.name}: clip {c.pk}" for p, c in
                                   zip(sorted(clip_folder.glob("*.mp4")), Clip.objects.order_by("id")))
    clips = list(Clip.objects.order_by("id"))
    assert len(clips) == 4 and all(c.project.name == "Demo" for c in clips)
    for clip in clips:  # the media task ran (eagerly in unit tests) and filled everything in
        assert clip.status == "ready", clip.error
        assert 0.8 < clip.duration < 1.3 and clip.fps > 0 and clip.width == 160
        assert clip.has_audio is True and len(clip.sha256) == 64
        assert clip.thumbnail and (Path(settings.MEDIA_ROOT) / clip.thumbnail.name).stat().st_size > 0
        assert clip.transcript  # from the sidecar .srt
        # ...with its time codes, which the clip page highlights and seeks by
        segments = clip.metadata["transcript_segments"]
        assert segments and all(0 <= start < end for start, end, _ in segments)
        assert " ".join(text for *_, text in segments) == " ".join(clip.transcript.split("\n"))
    assert AuditEvent.objects.filter(action="clip.imported").count() == 4


def test_rerunning_an_import_is_safe_and_reports_duplicates(clip_folder):
    run_import(str(clip_folder), "--project", "Demo", "--create-project")
    code, lines, _ = run_import(str(clip_folder), "--project", "Demo")
    assert code == 0
    assert len(lines) == 4 and all(line.startswith("duplicate ") for line in lines)
    assert "same content as clip" in lines[0]
    assert Clip.objects.count() == 4 and len(stored_media_files()) == 4


def test_same_file_twice_in_one_import_is_stored_once(clip_folder):
    first = sorted(clip_folder.glob("*.mp4"))[0]
    shutil.copy(first, clip_folder / "zz_copy.mp4")
    code, lines, _ = run_import(str(clip_folder), "--project", "Demo", "--create-project")
    assert code == 0
    assert lines[-1] == f"duplicate zz_copy.mp4: same content as {first.name} in this import"
    assert Clip.objects.count() == 4


def test_missing_project_is_an_error_without_create_flag(clip_folder):
    with pytest.raises(CommandError, match="--create-project"):
        call_command("import_clips", str(clip_folder), "--project", "Nope")
    assert not Project.objects.exists()


def test_manifest_import_with_verified_labels(clip_folder):
    code, lines, _ = run_import(str(clip_folder / "manifest.csv"), "--project", "Demo", "--create-project",
                                "--labels-verified")
    assert code == 0, lines
    rows = list(csv.DictReader((clip_folder / "manifest.csv").open()))
    assert len(lines) == len(rows) == 4
    for row in rows:
        clip = Clip.objects.get(original_name=row["path"])
        assert clip.transcript == row["transcript"]
        assert clip.label_state == "verified" and clip.verified_at is not None
        ann = Annotation.objects.get(clip=clip)
        assert ann.status == "submitted"
        assert [label["term"] for label in ann.labels] == [t.strip() for t in eval_labels(row["labels"])]
        assert Review.objects.get(annotation=ann).decision == "accept"


def eval_labels(cell):
    import ast
    return [x.lower() for x in ast.literal_eval(cell)]


def test_manifest_labels_without_flag_await_review(clip_folder):
    code, _, _ = run_import(str(clip_folder / "manifest.csv"), "--project", "Demo", "--create-project")
    assert code == 0
    assert set(Clip.objects.values_list("label_state", flat=True)) == {"submitted"}
    assert not Review.objects.exists()


def write_manifest(folder: Path, rows: list[list[str]], header=("path", "transcript", "language", "labels")):
    path = folder / "m.csv"
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def test_manifest_missing_path_column_is_refused_whole(clip_folder):
    manifest = write_manifest(clip_folder, [["hello", "en"]], header=("transcript", "language"))
    with pytest.raises(CommandError, match="missing column.*path"):
        call_command("import_clips", str(manifest), "--project", "Demo", "--create-project")
    assert not Clip.objects.exists()


def test_manifest_paths_outside_the_root_are_rejected(clip_folder, tmp_path):
    outside = make_clip(tmp_path / "outside.mp4")
    good = sorted(clip_folder.glob("*.mp4"))[0].name
    manifest = write_manifest(clip_folder, [
        ["../outside.mp4", "", "", ""],
        [str(outside), "", "", ""],
        [good, "fine", "en", "['calm']"],
        ["missing.mp4", "", "", ""],
        [good + "x", "", "", "['unclosed'"],
    ])
    code, lines, _ = run_import(str(manifest), "--project", "Demo", "--create-project")
    assert code == 1
    assert lines[0] == "rejected ../outside.mp4: outside the import root"
    assert lines[1] == f"rejected {outside}: outside the import root"
    assert lines[2] == f"imported {good}: clip {Clip.objects.get().pk}"
    assert lines[3] == "rejected missing.mp4: no such file"
    assert lines[4].startswith(f"rejected {good}x: labels")
    assert Clip.objects.count() == 1 and len(stored_media_files()) == 1


def test_manifest_row_with_wrong_field_count_is_rejected(clip_folder):
    good = sorted(clip_folder.glob("*.mp4"))[0].name
    manifest = clip_folder / "short.csv"
    manifest.write_text(f"path,transcript,language,labels\n{good},only two\n")
    code, lines, _ = run_import(str(manifest), "--project", "Demo", "--create-project")
    assert code == 1 and lines == [f"rejected {good}: row 2 has 2 fields, the header has 4"]
    assert not Clip.objects.exists()


def test_non_utf8_manifest_is_refused(clip_folder):
    manifest = clip_folder / "latin1.csv"
    manifest.write_bytes("path,transcript\nclip.mp4,caf\xe9\n".encode("latin-1"))
    with pytest.raises(CommandError, match="not UTF-8"):
        call_command("import_clips", str(manifest), "--project", "Demo", "--create-project")


def test_bad_files_are_rejected_with_a_reason_and_nothing_is_stored(tmp_path):
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "empty.mp4").write_bytes(b"")
    (folder / "notes.mp4").write_text("this is not a video\n")
    (folder / "playlist.mp4").write_text("#EXTM3U\n#EXTINF:1,\nhttp://127.0.0.1:9/x.ts\n")
    (folder / "concat.mp4").write_text("ffconcat version 1.0\nfile 'other.mp4'\n")
    good = make_clip(folder / "good.mp4")
    truncated = folder / "truncated.mp4"
    truncated.write_bytes(good.read_bytes()[: int(good.stat().st_size * 0.6)])
    make_clip(folder / "latin.mp4", seconds=1.2)
    (folder / "latin.srt").write_bytes("1\n00:00:00,000 --> 00:00:01,000\nJ'\xe9tais inquiet\n".encode("latin-1"))
    code, lines, err = run_import(str(folder), "--project", "Demo", "--create-project")
    assert code == 1
    by_name = {line.split(" ", 2)[1].rstrip(":"): line for line in lines}
    assert by_name["good.mp4"].startswith("imported good.mp4")
    for name in ("empty.mp4", "notes.mp4", "playlist.mp4", "concat.mp4", "truncated.mp4", "latin.mp4"):
        assert by_name[name].startswith(f"rejected {name}: "), by_name[name]
        assert str(tmp_path) not in by_name[name]  # reasons never leak server paths
    assert "0 bytes" in by_name["empty.mp4"]
    assert "UTF-8" in by_name["latin.mp4"]
    assert "1 imported" in err and "6 rejected" in err
    assert Clip.objects.count() == 1 and len(stored_media_files()) == 1


@pytest.mark.parametrize("cap,value,needle", [
    ("MAX_CLIP_SECONDS", 0.5, "too long"), ("MAX_CLIP_WIDTH", 100, "160"), ("MAX_UPLOAD_BYTES", 1000, "MB"),
])
def test_clips_over_the_configured_caps_are_rejected(clip_folder, settings, cap, value, needle):
    setattr(settings, cap, value)
    code, lines, _ = run_import(str(clip_folder), "--project", "Demo", "--create-project")
    assert code == 1 and len(lines) == 4
    assert all(line.startswith("rejected ") and needle in line for line in lines), lines
    assert not Clip.objects.exists() and stored_media_files() == []


def test_symlink_leaving_the_folder_is_rejected(clip_folder, tmp_path):
    outside = make_clip(tmp_path / "secret.mp4", seconds=1.5)
    (clip_folder / "link.mp4").symlink_to(outside)
    code, lines, _ = run_import(str(clip_folder), "--project", "Demo", "--create-project")
    assert code == 1
    assert "rejected link.mp4: outside the import root (symbolic link)" in lines
    assert Clip.objects.count() == 4


def test_dry_run_validates_and_stores_nothing(clip_folder):
    code, lines, _ = run_import(str(clip_folder), "--project", "Demo", "--create-project", "--dry-run")
    assert code == 0 and all(line.startswith("valid ") for line in lines) and len(lines) == 4
    assert not Clip.objects.exists() and stored_media_files() == []


def test_a_symlinked_sidecar_transcript_is_rejected(clip_folder, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("not for import")
    video = sorted(clip_folder.glob("*.mp4"))[0]
    video.with_suffix(".srt").unlink()
    video.with_suffix(".srt").symlink_to(secret)
    code, lines, _ = run_import(str(clip_folder), "--project", "Demo", "--create-project")
    assert code == 1
    assert f"rejected {video.name}: transcript {video.stem}.srt is a symbolic link" in lines
    assert not Clip.objects.filter(transcript__contains="not for import").exists()


def test_losing_an_insert_race_keeps_the_winners_file(clip_folder, monkeypatch):
    """Two imports of the same content: the loser must not delete the file the winner's clip uses."""
    from annotations.services import ingest

    project = Project.objects.create(name="Race", slug="race")
    video = sorted(clip_folder.glob("*.mp4"))[0]
    checked = ingest.validate_file(ingest.Candidate(path=video, display=video.name))
    winner = ingest.store_clip(project, checked, source="upload")
    # Replay the interleaving: the loser copied the file in first (so it "created" it), then checked for a
    # duplicate before the winner committed, then lost the insert.
    Path(Clip.objects.get(pk=winner.clip_id).file.path).unlink()
    real_filter, hidden = Clip.objects.filter, []

    def stale_first_lookup(*args, **kwargs):
        if not hidden and set(kwargs) == {"project", "sha256"}:
            hidden.append(True)
            return real_filter(pk=-1)
        return real_filter(*args, **kwargs)

    monkeypatch.setattr(Clip.objects, "filter", stale_first_lookup)
    loser = ingest.store_clip(project, checked, source="upload")
    monkeypatch.undo()
    assert winner.status == "imported" and loser.status == "duplicate"
    clip = Clip.objects.get(pk=winner.clip_id)
    assert Path(clip.file.path).is_file()
