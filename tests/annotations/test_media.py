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
    ffprobe_command,
    find_sidecar_transcript,
    make_thumbnail,
    pixel_cap,
    probe_video,
    read_transcript_file,
    read_transcript_segments,
    sha256_file,
    sniff_container,
    thumbnail_command,
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


# -- command lines (built with ffmpeg-python, run by our own subprocess call) -----------------------


@pytest.fixture
def tool_calls(monkeypatch):
    """Every ffprobe/ffmpeg run, with the keyword arguments it was run with."""
    calls = []
    real_run = subprocess.run

    def spy(cmd, *args, **kwargs):
        calls.append((cmd, kwargs))
        return real_run(cmd, *args, **kwargs)

    monkeypatch.setattr(media_module.subprocess, "run", spy)
    return calls


def input_options(cmd) -> list[str]:
    """The ffmpeg options that apply to the input: those between the global ones and `-i`."""
    return cmd[: cmd.index("-i")]


@pytest.mark.parametrize("container, demuxer", [("mp4", "mov"), ("matroska", "matroska"), ("avi", "avi")])
def test_ffprobe_command_forces_the_demuxer_and_the_file_protocol(tmp_path, container, demuxer):
    cmd = ffprobe_command(tmp_path / "upload.bin", container, max_pixels=123_456)

    assert cmd[0] == "ffprobe"
    assert cmd[cmd.index("-protocol_whitelist") + 1] == "file"
    assert cmd[cmd.index("-f") + 1] == demuxer and cmd.count("-f") == 1
    assert cmd[-1] == f"file:{tmp_path / 'upload.bin'}"  # a local path, never parsed as a URL
    assert ("-enable_drefs" in cmd) == (demuxer == "mov")
    if demuxer == "mov":
        assert cmd[cmd.index("-enable_drefs") + 1] == "0"
    assert {"-show_streams", "-show_format", "-count_packets"} <= set(cmd)
    assert cmd[cmd.index("-of") + 1] == "json"
    # Decoder limits: oversized frames are refused before allocation; one thread bounds the address space.
    assert cmd[cmd.index("-max_pixels") + 1] == "123456"
    assert cmd[cmd.index("-threads") + 1] == "1"


def test_ffprobe_command_reads_a_relative_path_as_a_local_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    assert ffprobe_command("http:evil.mp4", "mp4", max_pixels=1)[-1] == f"file:{tmp_path / 'http:evil.mp4'}"


@pytest.mark.parametrize("container, demuxer", [("mp4", "mov"), ("matroska", "matroska"), ("avi", "avi")])
def test_thumbnail_command_hardens_the_input_and_writes_one_local_jpeg(tmp_path, container, demuxer):
    src, out = tmp_path / "clip.bin", tmp_path / ".thumb.jpg.tmp"

    cmd = thumbnail_command(src, out, container, seek=1.5, width=200, max_pixels=123_456)

    assert cmd[0] == "ffmpeg" and {"-nostdin", "-y"} <= set(cmd)
    before_input = input_options(cmd)  # input options only count when they come before -i
    assert before_input[before_input.index("-protocol_whitelist") + 1] == "file"
    assert before_input[before_input.index("-f") + 1] == demuxer
    assert before_input[before_input.index("-ss") + 1] == "1.500"
    assert ("-enable_drefs" in before_input) == (demuxer == "mov")
    assert before_input[before_input.index("-max_pixels") + 1] == "123456"
    assert before_input[before_input.index("-threads") + 1] == "2"  # decoder threads
    assert before_input[before_input.index("-filter_threads") + 1] == "1"
    assert cmd[cmd.index("-i") + 1] == f"file:{src}"
    after_input = cmd[cmd.index("-i") + 2:]
    assert after_input[after_input.index("-threads") + 1] == "1"  # encoder threads
    assert after_input[after_input.index("-f") + 1] == "image2"
    assert after_input[after_input.index("-frames:v") + 1] == "1"
    assert after_input[after_input.index("-vf") + 1] == "scale=200:-2"
    assert cmd[-1] == f"file:{out}"


def test_probing_and_thumbnails_run_hardened_commands_with_a_timeout_and_no_stdin(media, tmp_path, limits,
                                                                                  tool_calls, settings):
    probe_video(media.mkv, limits)
    make_thumbnail(media.clip, tmp_path / "thumb.jpg", at_seconds=0.5)

    [(probe_cmd, probe_kw), (thumb_cmd, thumb_kw)] = tool_calls
    assert probe_cmd == ffprobe_command(media.mkv, "matroska", max_pixels=limits.max_pixels)
    assert probe_kw["timeout"] == media_module.PROBE_TIMEOUT_S
    assert thumb_cmd[0] == "ffmpeg" and thumb_cmd[thumb_cmd.index("-i") + 1] == f"file:{media.clip}"
    assert input_options(thumb_cmd)[input_options(thumb_cmd).index("-f") + 1] == "mov"
    assert input_options(thumb_cmd)[input_options(thumb_cmd).index("-max_pixels") + 1] == str(
        pixel_cap(settings.MAX_CLIP_WIDTH, settings.MAX_CLIP_HEIGHT))  # the configured caps by default
    assert thumb_kw["timeout"] == media_module.THUMBNAIL_TIMEOUT_S
    for kwargs in (probe_kw, thumb_kw):
        assert kwargs["stdin"] is subprocess.DEVNULL and kwargs["capture_output"] is True
        assert kwargs["process_group"] == 0  # a signal to the worker's group never reaches the tool
        assert kwargs["preexec_fn"] is not None  # the memory limit (tests/annotations/test_media_limits.py)


def test_a_tool_killed_by_a_signal_is_not_blamed_on_the_file(media, tmp_path, limits, monkeypatch):
    calls = []

    def killed(cmd, *args, **kwargs):
        calls.append(cmd[0])
        return subprocess.CompletedProcess(cmd, -15, b"", b"")

    monkeypatch.setattr(media_module.subprocess, "run", killed)

    with pytest.raises(media_module.MediaToolKilled, match="ffprobe was killed by signal 15"):
        probe_video(media.clip, limits)
    with pytest.raises(media_module.MediaToolKilled, match="ffmpeg was killed by signal 15"):
        make_thumbnail(media.clip, tmp_path / "thumb.jpg", at_seconds=0.5)
    assert calls == ["ffprobe", "ffprobe", "ffmpeg", "ffmpeg"]  # one retry each, then reported
    assert not issubclass(media_module.MediaToolKilled, MediaRejected)


def test_a_tool_killed_once_is_run_again(media, limits, monkeypatch):
    # A signal sent to the worker's group can reach a tool in the instant before it leaves that group.
    real_run, calls = subprocess.run, []

    def killed_once(cmd, *args, **kwargs):
        calls.append(cmd[0])
        if len(calls) == 1:
            return subprocess.CompletedProcess(cmd, -15, b"", b"")
        return real_run(cmd, *args, **kwargs)

    monkeypatch.setattr(media_module.subprocess, "run", killed_once)

    assert probe_video(media.clip, limits).width == 160
    assert calls == ["ffprobe", "ffprobe"]


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


def test_srt_segments_keep_their_exact_time_codes(tmp_path):
    srt = tmp_path / "clip.srt"
    srt.write_bytes(
        "\ufeff1\r\n00:00:00,000 --> 00:00:01,200\r\n<i>I can't</i> believe it,\r\nSam!\r\n\r\n"
        "2\r\n00:00:01,200 --> 00:00:02,045\r\n{\\an8}We won 3-2.\r\n\r\n"
        "3\r\n01:02:03,004 --> 01:02:04,999\r\n<b></b>\r\n\r\n"  # no words: no segment
        "4\r\n10:00:00,001 --> 10:00:01,000\r\nLate.\r\n".encode()
    )

    assert read_transcript_segments(srt) == [
        (0.0, 1.2, "I can't believe it, Sam!"),
        (1.2, 2.045, "We won 3-2."),
        (36000.001, 36001.0, "Late."),
    ]
    assert read_transcript_file(srt) == "I can't believe it, Sam!\nWe won 3-2.\nLate."


def test_vtt_segments_keep_their_exact_time_codes(tmp_path):
    vtt = tmp_path / "clip.vtt"
    vtt.write_text(
        "WEBVTT - demo\n\nNOTE this is not speech\n\nSTYLE\n::cue { color: red }\n\n"
        "intro\n00:00.250 --> 00:01.500 align:start position:10%\n<v Maya>Fish &amp; chips</v>\n\n"
        "00:01.500 --> 00:02.000\nagain, <c.loud>please</c>\n\n"
        "01:00:59.999 --> 01:01:00.000\nlast\nword\n",
        encoding="utf-8",
    )

    segments = read_transcript_segments(vtt)

    assert segments == [(0.25, 1.5, "Fish & chips"), (1.5, 2.0, "again, please"), (3659.999, 3660.0, "last word")]
    assert segments[0].start == 0.25 and segments[0].end == 1.5 and segments[0].text == "Fish & chips"
    assert read_transcript_file(vtt) == "Fish & chips\nagain, please\nlast word"


def test_vtt_without_its_header_is_rejected(tmp_path):
    vtt = tmp_path / "clip.vtt"
    vtt.write_text("1\n00:00:00,000 --> 00:00:01,000\nan SRT file renamed .vtt\n", encoding="utf-8")

    for read in (read_transcript_file, read_transcript_segments):
        with pytest.raises(MediaRejected) as exc:
            read(vtt)
        assert str(exc.value) == 'transcript is not valid WebVTT: the first line must be "WEBVTT"'


def test_vtt_cue_with_an_unreadable_timing_is_rejected_not_dropped(tmp_path):
    vtt = tmp_path / "clip.vtt"
    vtt.write_text("WEBVTT\n\n00:00.000 --> 00:01.000\nfine\n\n00:01.000 --> 00:75.000\nlost?\n",
                   encoding="utf-8")

    with pytest.raises(MediaRejected) as exc:
        read_transcript_segments(vtt)

    assert str(exc.value) == 'transcript has an invalid cue timing on line 6: "00:01.000 --> 00:75.000"'
    assert str(tmp_path) not in str(exc.value)


def test_text_renamed_srt_is_rejected(tmp_path):
    srt = tmp_path / "clip.srt"
    srt.write_text("just some words\nno cues at all\n", encoding="utf-8")

    with pytest.raises(MediaRejected, match=r"^transcript is not valid SubRip \(\.srt\)"):
        read_transcript_file(srt)


def test_empty_subtitle_files_mean_no_transcript(tmp_path):
    for name in ("a.srt", "b.vtt"):
        (tmp_path / name).write_text("\n  \n", encoding="utf-8")
        assert read_transcript_segments(tmp_path / name) == []
        assert read_transcript_file(tmp_path / name) == ""


def test_non_utf8_vtt_segments_are_rejected_with_the_byte_position(tmp_path):
    vtt = tmp_path / "clip.vtt"
    vtt.write_bytes("WEBVTT\n\n00:00.000 --> 00:01.000\nCafé\n".encode("latin-1"))

    with pytest.raises(MediaRejected) as exc:
        read_transcript_segments(vtt)

    assert str(exc.value) == "transcript is not UTF-8: byte 0xe9 at position 35 (line 4)"


def test_txt_transcript_has_no_segments(tmp_path):
    txt = tmp_path / "clip.txt"
    txt.write_text("hello\n", encoding="utf-8")

    with pytest.raises(MediaRejected, match="has no time codes"):
        read_transcript_segments(txt)
