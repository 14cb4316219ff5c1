"""Frame sampling and audio loading (ml/video.py), proven end to end on clips whose frames carry their own index.

Every generated clip has FRAMES frames at 10 fps where frame k is a flat grey of value 8 * k, encoded
losslessly, so the mean of a returned frame divided by 8 says which frame it is.
"""

import shutil
import subprocess

import pytest

pytest.importorskip("av")
np = pytest.importorskip("numpy")

from ml import video
from ml.testing.samples import make_clip
from ml.video import (
    VideoReadError,
    frame_indices,
    load_audio,
    read_each,
    sample_frames,
    sniff_container,
)
from tests.conftest import needs_ffmpeg, skip_without_ffmpeg

FRAMES = 30
SIZE = 64
STEP = 8  # frame k has pixel value STEP * k (< 256 for k < 32)


def segment_centres(total: int, n: int) -> list[int]:
    """The documented rule floor((i + 0.5) * total / n), in exact integer arithmetic."""
    return [(2 * i + 1) * total // (2 * n) for i in range(n)]


# --- frame_indices: pure arithmetic ------------------------------------------------------------------------

@pytest.mark.parametrize(("total", "n", "expected"), [
    (100, 4, [12, 37, 62, 87]),
    (250, 8, [15, 46, 78, 109, 140, 171, 203, 234]),
    (30, 4, [3, 11, 18, 26]),
    (10, 1, [5]),
    (1, 3, [0, 0, 0]),
])
def test_frame_indices_are_segment_centres(total, n, expected):
    assert frame_indices(total, n) == expected


def test_frame_indices_short_clip_repeats_frames():
    indices = frame_indices(3, 8)
    assert indices == [0, 0, 0, 1, 1, 2, 2, 2]
    assert len(indices) == 8
    assert all(0 <= i < 3 for i in indices)
    assert indices == sorted(indices)
    assert set(indices) == {0, 1, 2}  # no frame of the clip is left out


def test_frame_indices_match_the_rule_exactly():
    for total in range(1, 301):
        for n in range(1, 41):
            indices = frame_indices(total, n)
            assert indices == segment_centres(total, n), (total, n)
            assert len(indices) == n and indices == sorted(indices) and 0 <= indices[0] and indices[-1] < total


@pytest.mark.parametrize("n", [0, -1])
def test_frame_indices_need_at_least_one_frame(n):
    with pytest.raises(ValueError):
        frame_indices(100, n)


@pytest.mark.parametrize("total", [0, -5])
def test_frame_indices_of_an_empty_video(total):
    with pytest.raises(VideoReadError):
        frame_indices(total, 8)


# --- generated media ---------------------------------------------------------------------------------------

def _indexed_frames() -> bytes:
    return np.stack([np.full((SIZE, SIZE, 3), STEP * k, np.uint8) for k in range(FRAMES)]).tobytes()


def _encode(out, video_args, extra_inputs=(), to_pipe=False):
    """Encode the indexed frames (rawvideo on stdin, 10 fps) with `video_args`; optionally through a pipe."""
    cmd = ["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{SIZE}x{SIZE}",
           "-r", "10", "-i", "-", *extra_inputs, *video_args]
    if to_pipe:  # a non-seekable output: the muxer cannot go back to write duration or cues (like MediaRecorder)
        out.write_bytes(subprocess.run([*cmd, "-"], input=_indexed_frames(), capture_output=True, check=True).stdout)
    else:
        subprocess.run([*cmd, str(out)], input=_indexed_frames(), capture_output=True, check=True)
    return out


SINE = ["-f", "lavfi", "-i", "sine=f=440:d={d}:sample_rate=48000"]


@pytest.fixture(scope="session")
def clips(tmp_path_factory):
    skip_without_ffmpeg()
    d = tmp_path_factory.mktemp("video")
    sine3 = [a.format(d=3) for a in SINE]
    return {
        # stored frame count (stts), audio as long as the video
        "mp4": _encode(d / "indexed.mp4", ["-map", "0:v", "-map", "1:a", "-c:v", "libx264", "-qp", "0",
                                           "-pix_fmt", "yuv444p", "-c:a", "aac", "-shortest"], sine3),
        # no stored frame count
        "mkv": _encode(d / "indexed.mkv", ["-c:v", "ffv1", "-pix_fmt", "bgr0"]),
        "webm": _encode(d / "indexed.webm", ["-c:v", "libvpx-vp9", "-lossless", "1", "-pix_fmt", "yuv444p",
                                             "-map", "0:v", "-map", "1:a", "-c:a", "libopus", "-shortest"], sine3),
    }


def _which_frames(frames: np.ndarray) -> list[float]:
    return [float(f.mean()) / STEP for f in frames]


def _assert_frames(frames: np.ndarray, expected: list[int]):
    assert frames.dtype == np.uint8
    assert frames.shape == (len(expected), SIZE, SIZE, 3)
    means = frames.reshape(len(expected), -1).astype(np.float64).mean(axis=1)
    assert np.abs(means - STEP * np.array(expected)).max() <= 2.0, \
        f"expected frames {expected}, got ~{[round(m, 2) for m in means / STEP]}"
    assert frames.reshape(len(expected), -1).std(axis=1).max() <= 2.0  # flat frames: one source frame each


# --- sample_frames -----------------------------------------------------------------------------------------

@needs_ffmpeg
@pytest.mark.parametrize("kind", ["mp4", "mkv", "webm"])
@pytest.mark.parametrize("n", [1, 4, 8, 16])
def test_sample_frames_returns_the_segment_centres(clips, kind, n):
    _assert_frames(sample_frames(clips[kind], n), segment_centres(FRAMES, n))


@needs_ffmpeg
@pytest.mark.parametrize("kind", ["mp4", "webm"])
def test_sample_frames_of_a_short_clip_repeat_frames(clips, kind):
    frames = sample_frames(clips[kind], 64)  # more frames wanted than the clip has
    expected = segment_centres(FRAMES, 64)
    assert len(set(expected)) == FRAMES and len(expected) == 64
    _assert_frames(frames, expected)


@needs_ffmpeg
def test_sample_frames_accepts_str_paths(clips):
    _assert_frames(sample_frames(str(clips["mkv"]), 4), [3, 11, 18, 26])


@needs_ffmpeg
def test_sample_frames_of_a_streamed_webm_without_duration(tmp_path):
    clip = _encode(tmp_path / "streamed.webm", ["-c:v", "libvpx-vp9", "-lossless", "1", "-pix_fmt", "yuv444p",
                                                "-f", "webm"], to_pipe=True)
    _assert_frames(sample_frames(clip, 4), [3, 11, 18, 26])


@needs_ffmpeg
def test_sample_frames_when_audio_outlasts_video(tmp_path):
    sine5 = [a.format(d=5) for a in SINE]
    clip = _encode(tmp_path / "long_audio.mkv", ["-map", "0:v", "-map", "1:a", "-c:v", "ffv1", "-pix_fmt", "bgr0",
                                                 "-c:a", "pcm_s16le"], sine5)
    _assert_frames(sample_frames(clip, 4), [3, 11, 18, 26])


def _assert_clean(exc: VideoReadError):
    message = str(exc)
    assert message and "\n" not in message and len(message) < 300
    assert "Traceback" not in message
    assert exc.__cause__ is None  # raised `from None`: the av error does not leak into logs as a chain


@needs_ffmpeg
def test_sample_frames_of_an_audio_only_file(tmp_path):
    audio = make_clip(tmp_path / "voice.m4a", video=False)
    with pytest.raises(VideoReadError, match="no video stream") as info:
        sample_frames(audio, 8)
    _assert_clean(info.value)


@pytest.mark.parametrize("content", [b"just some text, not a video\n" * 20, b""])
def test_sample_frames_of_a_non_video_file(tmp_path, content):
    text = tmp_path / "notes.mp4"
    text.write_bytes(content)
    with pytest.raises(VideoReadError) as info:
        sample_frames(text, 8)
    _assert_clean(info.value)


def test_sample_frames_of_a_missing_file(tmp_path):
    with pytest.raises(VideoReadError):
        sample_frames(tmp_path / "absent.mp4", 8)


# --- the demuxer is forced, never auto-detected -----------------------------------------------------------

def test_containers_map_to_the_demuxers_ingest_forces():
    from annotations import media

    assert video._DEMUXER == media._DEMUXER
    as_strings = {name: {k: str(v) for k, v in opts.items()} for name, opts in media._DEMUXER_OPTS.items()}
    assert as_strings == video._DEMUXER_OPTS


@needs_ffmpeg
def test_containers_are_sniffed_as_ingest_sniffs_them(clips, tmp_path):
    from annotations import media

    avi = make_clip(tmp_path / "clip.avi", video_codec="mpeg4", audio_codec="pcm_s16le")
    for path, expected in [(clips["mp4"], "mp4"), (clips["mkv"], "matroska"), (clips["webm"], "matroska"),
                           (avi, "avi")]:
        assert sniff_container(path) == media.sniff_container(path) == expected
    playlist = tmp_path / "clip.mp4"
    playlist.write_text("#EXTM3U\n#EXTINF:1,\nhttp://127.0.0.1:9/a.ts\n")
    for refused in (playlist, tmp_path / "absent.mp4"):
        with pytest.raises(VideoReadError):
            sniff_container(refused)
        with pytest.raises(media.MediaRejected):
            media.sniff_container(refused)


@needs_ffmpeg
def test_a_concat_list_named_like_a_clip_never_reads_the_file_it_names(clips, tmp_path):
    # Auto-detection would open this with the concat demuxer and return the frames of the other clip.
    shutil.copy(clips["mkv"], tmp_path / "someone_elses.mkv")
    upload = tmp_path / "upload.mp4"
    upload.write_text("ffconcat version 1.0\nfile someone_elses.mkv\n")

    with pytest.raises(VideoReadError) as info:
        sample_frames(upload, 4)
    _assert_clean(info.value)
    with pytest.raises(VideoReadError, match="cannot read audio") as info:
        load_audio(upload)
    _assert_clean(info.value)


@needs_ffmpeg
def test_a_clip_is_read_with_its_recorded_container_whatever_its_name(clips, tmp_path):
    renamed = shutil.copy(clips["mkv"], tmp_path / "looks_like.mp4")

    _assert_frames(sample_frames(renamed, 4), [3, 11, 18, 26])  # sniffed: matroska
    _assert_frames(sample_frames(renamed, 4, container="matroska"), [3, 11, 18, 26])
    with pytest.raises(VideoReadError) as info:  # the MOV demuxer is forced on Matroska bytes: refused
        sample_frames(renamed, 4, container="mp4")
    _assert_clean(info.value)
    with pytest.raises(VideoReadError, match="unsupported container"):
        sample_frames(renamed, 4, container="hls")
    assert load_audio(renamed, container="matroska").shape == (0,)
    with pytest.raises(VideoReadError, match="cannot read audio"):
        load_audio(renamed, container="avi")


@needs_ffmpeg
@pytest.mark.parametrize(("kind", "demuxer", "options"), [
    ("mp4", "mov", {"protocol_whitelist": "file", "enable_drefs": "0"}),
    ("webm", "matroska", {"protocol_whitelist": "file"}),
])
def test_pyav_opens_the_local_file_with_the_demuxer_and_protocol_forced(clips, monkeypatch, kind, demuxer,
                                                                       options):
    opened, real_open = [], video.av.open

    def spy(file, *args, **kwargs):
        opened.append((file, kwargs))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(video.av, "open", spy)

    sample_frames(clips[kind], 2)

    [(file, kwargs)] = opened
    assert file == f"file:{clips[kind]}"  # never parsed as a URL or another protocol
    assert kwargs == {"format": demuxer, "container_options": options}


# --- load_audio --------------------------------------------------------------------------------------------

@needs_ffmpeg
def test_load_audio_is_16k_mono_float32(tmp_path):
    # 48 kHz stereo in, so the 16 kHz mono out proves both the resampling and the downmix.
    clip = make_clip(tmp_path / "talk.mp4", seconds=2, pattern="testsrc2", fps=25, audio_rate=48000,
                     extra=["-ac", "2"])
    audio = load_audio(clip)
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert abs(audio.size - 32000) <= 1600, audio.size
    assert 0.05 < float(np.abs(audio).max()) <= 1.0  # the sine is there, in [-1, 1]
    assert audio.flags.writeable  # a copy, not a view on ffmpeg's bytes
    assert abs(load_audio(clip, sample_rate=8000).size - 16000) <= 800


@needs_ffmpeg
def test_load_audio_of_a_clip_without_audio(clips):
    audio = load_audio(clips["mkv"])
    assert audio.dtype == np.float32 and audio.shape == (0,)


@needs_ffmpeg
def test_load_audio_of_a_non_media_file(tmp_path):
    text = tmp_path / "notes.mp4"
    text.write_text("not a video\n")
    with pytest.raises(VideoReadError, match="cannot read audio") as info:
        load_audio(text)
    _assert_clean(info.value)


def test_start_rule_is_affectgpts_training_rule():
    assert frame_indices(88, 8, "start") == [0, 11, 22, 33, 44, 55, 66, 77]
    assert frame_indices(3, 8, "start") == [0, 1, 2, 2, 2, 2, 2, 2]
    with pytest.raises(ValueError):
        frame_indices(10, 2, "middle")


# --- read_each ---------------------------------------------------------------------------------------------

def test_read_each_keeps_the_order_and_puts_read_errors_in_place():
    import threading
    import time

    names = []

    def read(item):
        names.append(threading.current_thread().name)
        time.sleep(0.05 * (5 - item))  # later items finish first
        if item == 2:
            raise VideoReadError("cannot decode video")
        if item == 3:
            raise FileNotFoundError("gone")
        return item * 10

    for workers in (1, 4):
        names.clear()
        got = read_each(read, [0, 1, 2, 3, 4], workers)
        assert [g if not isinstance(g, Exception) else type(g).__name__ for g in got] == [
            0, 10, "VideoReadError", "FileNotFoundError", 40]
        assert str(got[2]) == "cannot decode video"
        assert (len(set(names)) > 1) == (workers > 1)  # side by side only when asked
    assert read_each(read, [], 4) == []


def test_read_each_lets_a_bug_through():
    def read(item):
        raise KeyError(item)

    for workers in (1, 3):
        with pytest.raises(KeyError):
            read_each(read, [1, 2, 3], workers)


@needs_ffmpeg
def test_read_each_decodes_real_clips_as_one_at_a_time_does(clips):
    paths = [clips[kind] for kind in ("mp4", "mkv", "webm")] * 2
    one = read_each(lambda p: sample_frames(p, 4), paths, 1)
    many = read_each(lambda p: sample_frames(p, 4), paths, 6)
    assert all(np.array_equal(a, b) for a, b in zip(one, many, strict=True))
