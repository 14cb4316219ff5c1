import hashlib
import shutil
import socket
import subprocess

import pytest
from PIL import Image

from annotations import media as media_module
from annotations.media import (
    MediaLimits,
    MediaRejected,
    find_sidecar_transcript,
    make_thumbnail,
    probe_video,
    read_transcript_file,
    sha256_file,
    sniff_container,
)

# A real ISO-BMFF `ftyp` box: enough to pass sniffing as "mp4".
FTYP = b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2"


def rejection(path, limits) -> str:
    """The user-facing reason probe_video gives; it must be short and never show a server path."""
    with pytest.raises(MediaRejected) as exc:
        probe_video(path, limits)
    message = str(exc.value)
    assert str(path.parent) not in message and "Traceback" not in message and "\n" not in message
    return message


def copy_truncated(src, dst, fraction):
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * fraction)])
    return dst


@pytest.fixture
def listener():
    """A local TCP port that records whether anything connected to it."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        s.settimeout(0.2)

        def connected() -> bool:
            try:
                s.accept()[0].close()
                return True
            except TimeoutError:
                return False

        yield s.getsockname()[1], connected


@pytest.fixture
def ffprobe_calls(monkeypatch):
    calls = []
    real_run = subprocess.run

    def spy(cmd, *args, **kwargs):
        calls.append(cmd)
        return real_run(cmd, *args, **kwargs)

    monkeypatch.setattr(media_module.subprocess, "run", spy)
    return calls


# -- valid clips ------------------------------------------------------------------------------------


def test_valid_clip_probes(media, limits):
    result = probe_video(media.clip, limits)

    assert result.container == "mp4"
    assert result.duration == pytest.approx(1.0, abs=0.2)
    assert result.fps == pytest.approx(15.0)
    assert (result.width, result.height) == (160, 120)
    assert result.video_codec == "h264"
    assert result.has_audio and result.audio_codec == "aac"
    assert result.size_bytes == media.clip.stat().st_size
    assert result.as_dict()["width"] == 160


def test_clip_without_audio(media, limits):
    result = probe_video(media.no_audio, limits)

    assert result.has_audio is False
    assert result.audio_codec == ""


@pytest.mark.parametrize("name, container", [("moov_at_end", "mp4"), ("mkv", "matroska"), ("avi", "avi")])
def test_other_accepted_layouts(media, limits, name, container):
    result = probe_video(getattr(media, name), limits)

    assert result.container == container
    assert (result.width, result.height) == (160, 120)
    assert result.duration == pytest.approx(1.0, abs=0.2)


def test_container_is_sniffed_by_content_not_extension(media, tmp_path):
    renamed = shutil.copy(media.mkv, tmp_path / "looks_like.mp4")

    assert sniff_container(renamed) == "matroska"


# -- rejected files ---------------------------------------------------------------------------------


def test_zero_byte_file(tmp_path, limits):
    (tmp_path / "empty.mp4").touch()

    assert rejection(tmp_path / "empty.mp4", limits) == "empty file (0 bytes)"


def test_missing_file(tmp_path, limits):
    assert rejection(tmp_path / "nope.mp4", limits) == "file not found"


def test_truncated_faststart_mp4(media, tmp_path, limits):
    # The moov box (the index) survives the cut, so the header still promises every frame.
    cut = copy_truncated(media.clip, tmp_path / "cut.mp4", 0.6)

    assert rejection(cut, limits).startswith("corrupt or truncated video:")


def test_truncated_mp4_with_moov_at_end(media, tmp_path, limits):
    cut = copy_truncated(media.moov_at_end, tmp_path / "cut.mp4", 0.5)

    assert rejection(cut, limits) == "corrupt or truncated video: moov atom not found"


def test_truncation_is_caught_by_packet_count_alone(media, tmp_path, limits, monkeypatch):
    # Even if ffprobe stayed quiet about the partial file, the missing packets give it away.
    cut = copy_truncated(media.clip, tmp_path / "cut.mp4", 0.6)
    real_run = subprocess.run

    def quiet_run(cmd, *args, **kwargs):
        proc = real_run(cmd, *args, **kwargs)
        return subprocess.CompletedProcess(proc.args, 0, proc.stdout, b"")

    monkeypatch.setattr(media_module.subprocess, "run", quiet_run)

    assert "packets are present" in rejection(cut, limits)


def test_text_file_renamed_mp4(tmp_path, limits):
    fake = tmp_path / "notes.mp4"
    fake.write_text("Dear diary, today I renamed a text file.\n")

    assert rejection(fake, limits) == "not a video: looks like a text file"


def test_hls_playlist_renamed_mp4_is_never_opened_by_ffprobe(media, tmp_path, limits, listener, ffprobe_calls):
    port, connected = listener
    shutil.copy(media.clip, tmp_path / "segment0.mp4")  # the local file it points at is really there
    playlist = tmp_path / "upload.mp4"
    playlist.write_text(
        "#EXTM3U\n#EXT-X-TARGETDURATION:1\n"
        f"#EXTINF:1.0,\nsegment0.mp4\n#EXTINF:1.0,\n{tmp_path / 'segment0.mp4'}\n"
        f"#EXTINF:1.0,\nhttp://127.0.0.1:{port}/segment1.ts\n#EXT-X-ENDLIST\n"
    )

    assert rejection(playlist, limits) == "not a video: playlists/concat lists are not accepted"
    assert ffprobe_calls == []  # rejected on its first bytes, before any subprocess
    assert not connected()


def test_playlist_behind_an_ftyp_box_is_rejected_cleanly(media, tmp_path, limits, listener, ffprobe_calls):
    # It passes sniffing as "mp4", so ffprobe runs, but with the mov demuxer forced and only the
    # file: protocol allowed, the references inside are never followed.
    port, connected = listener
    shutil.copy(media.clip, tmp_path / "segment0.mp4")
    upload = tmp_path / "upload.mp4"
    upload.write_bytes(
        FTYP + b"#EXTM3U\n#EXTINF:1.0,\nsegment0.mp4\n"
        + f"#EXTINF:1.0,\nhttp://127.0.0.1:{port}/segment1.ts\n#EXT-X-ENDLIST\n".encode()
    )

    assert rejection(upload, limits).startswith("corrupt or truncated video:")
    [cmd] = ffprobe_calls
    assert cmd[cmd.index("-f") + 1] == "mov"
    assert cmd[cmd.index("-protocol_whitelist") + 1] == "file"
    assert cmd[-1] == f"file:{upload}"
    assert not connected()


def test_ffconcat_file_renamed_mp4(media, tmp_path, limits, ffprobe_calls):
    shutil.copy(media.clip, tmp_path / "other.mp4")
    concat = tmp_path / "upload.mp4"
    concat.write_text(f"ffconcat version 1.0\nfile other.mp4\nfile '{tmp_path / 'other.mp4'}'\n")

    assert rejection(concat, limits) == "not a video: playlists/concat lists are not accepted"
    assert ffprobe_calls == []


def test_audio_only_file_renamed_mp4(media, tmp_path, limits):
    renamed = shutil.copy(media.m4a, tmp_path / "song.mp4")
    assert sniff_container(renamed) == "mp4"  # it has an ftyp box: only the stream check catches it

    assert rejection(renamed, limits) == "audio-only file: no video stream"


def test_unknown_binary_file(tmp_path, limits):
    blob = tmp_path / "blob.mp4"
    blob.write_bytes(bytes(range(256)) * 4)

    assert rejection(blob, limits).startswith("unsupported file type")


def test_over_the_size_cap(media, limits, ffprobe_calls):
    size = media.clip.stat().st_size
    small = MediaLimits(size - 1, limits.max_seconds, limits.max_width, limits.max_height)

    message = rejection(media.clip, small)

    assert message.startswith("file too large:") and "MB" in message
    assert f"{size / 1e6:.3g} MB" in message and f"{(size - 1) / 1e6:.3g} MB" in message
    assert ffprobe_calls == []  # a size check needs no subprocess


def test_over_the_duration_cap(media, limits):
    short = MediaLimits(limits.max_bytes, 0.5, limits.max_width, limits.max_height)

    assert rejection(media.clip, short) == "video too long: 1.0 s (limit 0.5 s)"


def test_over_the_resolution_cap(media, limits):
    small = MediaLimits(limits.max_bytes, limits.max_seconds, 128, 96)

    assert rejection(media.clip, small) == "resolution too high: 160x120 (limit 128x96)"


def test_resolution_cap_ignores_orientation(media, limits):
    portrait_caps = MediaLimits(limits.max_bytes, limits.max_seconds, 120, 160)

    assert probe_video(media.clip, portrait_caps).width == 160


# -- files and thumbnails ---------------------------------------------------------------------------


def test_sha256_file(tmp_path):
    f = tmp_path / "x.bin"
    f.write_bytes(b"affectloop" * 1000)

    assert sha256_file(f, chunk=7) == hashlib.sha256(b"affectloop" * 1000).hexdigest()


def test_thumbnail_is_a_jpeg_of_the_requested_width(media, tmp_path):
    out = tmp_path / "thumb.jpg"

    make_thumbnail(media.clip, out, at_seconds=0.5)

    with Image.open(out) as img:
        assert img.format == "JPEG"
        assert img.size == (320, 240)  # aspect ratio kept


def test_thumbnail_past_the_end_falls_back_to_the_first_frame(media, tmp_path):
    out = tmp_path / "thumb.jpg"

    make_thumbnail(media.clip, out, at_seconds=99, width=80)

    with Image.open(out) as img:
        assert img.size == (80, 60)


# -- transcripts ------------------------------------------------------------------------------------


def test_non_utf8_srt_is_rejected_with_the_byte_position(tmp_path):
    srt = tmp_path / "clip.srt"
    srt.write_bytes("1\n00:00:00,000 --> 00:00:01,000\nCafé\n".encode("latin-1"))

    with pytest.raises(MediaRejected) as exc:
        read_transcript_file(srt)

    assert str(exc.value) == "transcript is not UTF-8: byte 0xe9 at position 35 (line 3)"


def test_srt_to_plain_text(tmp_path):
    srt = tmp_path / "clip.srt"
    srt.write_bytes(
        "\ufeff1\r\n00:00:00,000 --> 00:00:01,200\r\n<i>I can't</i> believe it,\r\nSam!\r\n\r\n"
        "2\r\n00:00:01,200 --> 00:00:02,000\r\n{\\an8}We won 3-2.\r\n".encode()
    )

    assert read_transcript_file(srt) == "I can't believe it, Sam!\nWe won 3-2."


def test_vtt_to_plain_text(tmp_path):
    vtt = tmp_path / "clip.vtt"
    vtt.write_text(
        "WEBVTT - demo\n\nNOTE this is not speech\n\nSTYLE\n::cue { color: red }\n\n"
        "intro\n00:00.000 --> 00:01.000 align:start\n<v Maya>Fish &amp; chips</v>\n\n"
        "00:01.000 --> 00:02.000\nagain, <c.loud>please</c>\n",
        encoding="utf-8",
    )

    assert read_transcript_file(vtt) == "Fish & chips\nagain, please"


def test_txt_transcript_keeps_its_lines(tmp_path):
    txt = tmp_path / "clip.txt"
    txt.write_text("  first line \n\nsecond line\n", encoding="utf-8")

    assert read_transcript_file(txt) == "first line\nsecond line"


def test_find_sidecar_transcript_prefers_srt_then_vtt_then_txt(tmp_path):
    video = tmp_path / "clip.mp4"
    video.touch()
    assert find_sidecar_transcript(video) is None

    for suffix in (".txt", ".vtt", ".srt"):
        (tmp_path / f"clip{suffix}").write_text("hi", encoding="utf-8")
        assert find_sidecar_transcript(video) == tmp_path / f"clip{suffix}"
    (tmp_path / "other.srt").write_text("not ours", encoding="utf-8")
    assert find_sidecar_transcript(video) == tmp_path / "clip.srt"
