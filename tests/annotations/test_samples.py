"""The sample clips of ml.testing.samples pass the platform's own validation; the command that makes them."""

import ast
import csv

import pytest

from annotations.media import probe_video, read_transcript_file, sha256_file
from ml.testing.samples import MANIFEST_NAME, generate_sample_clips
from tests.conftest import needs_ffmpeg, skip_without_ffmpeg


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    skip_without_ffmpeg()
    return generate_sample_clips(tmp_path_factory.mktemp("samples"), 3, seconds=1.0, width=160, height=120)


def test_every_clip_passes_validation(clips, limits):
    for clip in clips:
        result = probe_video(clip.path, limits)
        assert result.duration == pytest.approx(1.0, abs=0.2)
        assert (result.width, result.height, result.fps) == (160, 120, 15.0)
        assert result.has_audio


def test_clips_have_distinct_content(clips):
    assert len({sha256_file(clip.path) for clip in clips}) == 3


def test_sidecar_srt_holds_the_transcript(clips):
    for clip in clips:
        text = read_transcript_file(clip.path.with_suffix(".srt"))
        assert text.split() == clip.transcript.split()


def test_manifest_lists_every_clip(clips):
    out_dir = clips[0].path.parent
    with open(out_dir / MANIFEST_NAME, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        rows = list(reader)

    assert reader.fieldnames == ["path", "transcript", "language", "labels"]
    assert [row["path"] for row in rows] == [clip.path.name for clip in clips]
    for row, clip in zip(rows, clips):
        assert (out_dir / row["path"]).is_file()
        assert row["transcript"] == clip.transcript and row["language"] == "en"
        labels = ast.literal_eval(row["labels"])
        assert labels == clip.labels and labels and all(isinstance(word, str) for word in labels)


def test_same_seed_gives_the_same_transcripts_and_labels(clips, tmp_path):
    again = generate_sample_clips(tmp_path, 3, seconds=1.0, width=160, height=120, speech=False)

    assert [(c.transcript, c.labels) for c in again] == [(c.transcript, c.labels) for c in clips]


@needs_ffmpeg
def test_make_sample_clips_command(tmp_path):
    import io

    from django.core.management import call_command

    out = io.StringIO()
    call_command("make_sample_clips", "--out", str(tmp_path / "demo"), "--count", "2", "--seconds", "1",
                 "--size", "160x120", "--no-speech", stdout=out)
    assert out.getvalue().strip().endswith("manifest.csv")
    assert len(list((tmp_path / "demo").glob("*.mp4"))) == 2
    with pytest.raises(Exception, match="size"):
        call_command("make_sample_clips", "--out", str(tmp_path / "x"), "--count", "1", "--size", "161x120")
