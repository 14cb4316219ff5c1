"""Resource limits on ffprobe/ffmpeg: the per-frame pixel cap and the memory limit, and how hitting either
is reported. A crafted file must be refused before ffmpeg allocates its frames, and a tool that runs out of
memory must fail the clip with a clear reason rather than hang or take the worker's memory."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from annotations import media as media_module
from annotations.media import MediaLimits, MediaRejected, make_thumbnail, pixel_cap, probe_video
from ml.testing.samples import make_clip

from ..conftest import needs_ffmpeg, skip_without_ffmpeg

ROOT = Path(__file__).resolve().parents[2]
CAPS = MediaLimits(max_bytes=50_000_000, max_seconds=60.0, max_width=3840, max_height=2160)  # the defaults
HUGE = 8192  # one 8192x8192 frame: 96 MiB in yuv420p, far over CAPS


@pytest.fixture(scope="module")
def huge_clip(tmp_path_factory) -> Path:
    """A 200 KB H.264 MP4 whose single frame is 8192x8192."""
    skip_without_ffmpeg()
    path = tmp_path_factory.mktemp("huge") / "huge.mp4"
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i",
                    f"color=c=black:s={HUGE}x{HUGE}:r=25", "-frames:v", "1", "-c:v", "libx264",
                    "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(path)], check=True, timeout=120)
    return path


# A fresh interpreter, so that RUSAGE_CHILDREN's peak is that of the tools this script runs and nothing else.
PEAK_RSS = """
import json, resource, sys
from django.conf import settings
settings.configure(MEDIA_TOOL_MEMORY_MB=1024)
from annotations.media import MediaLimits, MediaRejected, make_thumbnail, probe_video
limits = MediaLimits(50_000_000, 60.0, 3840, 2160)
errors = []
for step in (lambda: probe_video(sys.argv[1], limits),
             lambda: make_thumbnail(sys.argv[1], sys.argv[2], at_seconds=0.0, limits=limits)):
    try:
        step()
    except MediaRejected as exc:
        errors.append(str(exc))
peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(json.dumps({"errors": errors, "peak_mb": peak_kb / 1024}))
"""


def tools_peak(clip: Path, tmp_path: Path) -> dict:
    """Probe and thumbnail `clip` in a fresh interpreter: the rejections and the tools' peak RSS (MB)."""
    result = subprocess.run([sys.executable, "-c", PEAK_RSS, str(clip), str(tmp_path / f"{clip.stem}.jpg")],
                            cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
                            env={**os.environ, "DJANGO_SETTINGS_MODULE": ""})
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout)


# -- the pixel cap ------------------------------------------------------------------------------------


@needs_ffmpeg
def test_an_oversized_frame_is_refused_before_it_is_decoded(huge_clip, tmp_path):
    normal = tools_peak(make_clip(tmp_path / "normal.mp4", size="640x360", audio=False), tmp_path)
    huge = tools_peak(huge_clip, tmp_path)

    assert normal["errors"] == []
    assert huge["errors"] == [
        f"resolution too high: {HUGE}x{HUGE} (limit 3840x2160)",
        f"could not make a thumbnail: resolution too high: {HUGE}x{HUGE} (limit 3840x2160)",
    ]
    # Decoding the frame would take at least its 96 MiB (ffprobe peaked at 212 MB, against 77 MB now).
    assert huge["peak_mb"] < normal["peak_mb"] + 48, (huge, normal)
    assert (tmp_path / "normal.jpg").exists() and not (tmp_path / "huge.jpg").exists()


@needs_ffmpeg
@pytest.mark.parametrize("size", ["3840x2160", "2160x3840"])
def test_clips_at_the_caps_pass_the_pixel_cap_in_either_orientation(tmp_path, size):
    # Decoders allocate padded frames (2160 wide becomes 2176): an exact width x height cap refuses these.
    clip = make_clip(tmp_path / "at_caps.mp4", size=size, seconds=0.2, fps=5, audio=False)

    result = probe_video(clip, CAPS)
    make_thumbnail(clip, tmp_path / "thumb.jpg", at_seconds=0.0, limits=CAPS)

    assert f"{result.width}x{result.height}" == size
    assert (tmp_path / "thumb.jpg").stat().st_size > 0


def test_pixel_cap_is_the_caps_area_with_decoder_padding():
    assert CAPS.max_pixels == pixel_cap(3840, 2160) == pixel_cap(2160, 3840)
    assert 2176 * 3840 <= CAPS.max_pixels < 3 * 3840 * 2160  # padded portrait 4K fits, 4x the area does not


@needs_ffmpeg
def test_the_thumbnail_cap_defaults_to_the_configured_caps(huge_clip, tmp_path, settings, monkeypatch):
    commands, real_run = [], subprocess.run

    def spy(cmd, *args, **kwargs):
        commands.append(cmd)
        return real_run(cmd, *args, **kwargs)

    monkeypatch.setattr(media_module.subprocess, "run", spy)
    settings.MAX_CLIP_WIDTH, settings.MAX_CLIP_HEIGHT = 320, 240

    expected = rf"^could not make a thumbnail: resolution too high: {HUGE}x{HUGE} \(limit 320x240\)$"
    with pytest.raises(MediaRejected, match=expected):
        make_thumbnail(huge_clip, tmp_path / "thumb.jpg", at_seconds=0.0)
    cmd = commands[0]
    assert cmd[cmd.index("-max_pixels") + 1] == str(pixel_cap(320, 240))
    assert cmd.index("-max_pixels") < cmd.index("-i")  # an input (decoder) option
    assert list(tmp_path.iterdir()) == []  # no temporary file left behind


# -- the memory limit ---------------------------------------------------------------------------------

REPORT_LIMIT = "import resource; print(*resource.getrlimit(resource.RLIMIT_AS))"


def test_tools_run_under_the_configured_address_space_limit(settings):
    settings.MEDIA_TOOL_MEMORY_MB = 300

    proc = media_module._run_tool([sys.executable, "-c", REPORT_LIMIT], 30)

    assert proc.stdout.split() == [b"%d" % (300 << 20)] * 2


def test_the_memory_limit_defaults_to_1024_mb(settings):
    del settings.MEDIA_TOOL_MEMORY_MB

    proc = media_module._run_tool([sys.executable, "-c", REPORT_LIMIT], 30)

    assert proc.stdout.split() == [b"%d" % (1024 << 20)] * 2


def test_a_tool_cannot_allocate_past_the_limit(settings):
    settings.MEDIA_TOOL_MEMORY_MB = 256
    allocate = "import sys; b = bytearray(int(sys.argv[1]) << 20); print('allocated')"

    small = media_module._run_tool([sys.executable, "-c", allocate, "32"], 30)
    large = media_module._run_tool([sys.executable, "-c", allocate, "512"], 30)

    assert (small.returncode, small.stdout) == (0, b"allocated\n")
    assert large.returncode == 1 and b"MemoryError" in large.stderr and not large.stdout


@needs_ffmpeg
def test_a_limit_too_small_for_the_tool_to_start_is_a_server_error_not_a_verdict(media, settings):
    settings.MEDIA_TOOL_MEMORY_MB = 16  # below what ffprobe's code and libraries need to be mapped

    with pytest.raises(RuntimeError, match="ffprobe cannot start within its memory limit of 16 MB: "
                                           "raise MEDIA_TOOL_MEMORY_MB") as info:
        probe_video(media.clip, CAPS)
    assert not isinstance(info.value, MediaRejected)


def fake_tool(monkeypatch, returncode: int, stderr: bytes) -> list[str]:
    calls = []

    def run(cmd, *args, **kwargs):
        calls.append(cmd[0])
        if "-i" in cmd:  # ffmpeg: leave a partial output behind, as a tool that dies mid-write does
            Path(cmd[-1].removeprefix("file:")).write_bytes(b"\xff\xd8partial")
        return subprocess.CompletedProcess(cmd, returncode, b"", stderr)

    monkeypatch.setattr(media_module.subprocess, "run", run)
    return calls


@needs_ffmpeg
@pytest.mark.parametrize("stderr", [
    b"[h264 @ 0x55d0c1a2b3c0] Cannot allocate memory\n",
    b"[h264 @ 0x55d0c1a2b3c0] Could not allocate memory\n[h264 @ 0x55d0c1a2b3c0] no frame!\n",
    b"[h264 @ 0x55d0c1a2b3c0] get_buffer() failed\n[h264 @ 0x55d0c1a2b3c0] decode_slice_header error\n",
])
def test_running_out_of_memory_is_reported_as_such(media, tmp_path, settings, monkeypatch, stderr):
    settings.MEDIA_TOOL_MEMORY_MB = 512
    fake_tool(monkeypatch, 1, stderr)

    with pytest.raises(MediaRejected, match=r"^out of memory reading the video \(limit 512 MB\)$"):
        probe_video(media.clip, CAPS)
    with pytest.raises(MediaRejected, match=r"^could not make a thumbnail: out of memory reading the video "
                                            r"\(limit 512 MB\)$"):
        make_thumbnail(media.clip, tmp_path / "thumb.jpg", at_seconds=0.5)
    assert list(tmp_path.iterdir()) == []


@needs_ffmpeg
def test_a_tool_that_crashes_twice_fails_the_file_with_a_clear_reason(media, tmp_path, settings, monkeypatch):
    settings.MEDIA_TOOL_MEMORY_MB = 1024
    calls = fake_tool(monkeypatch, -11, b"")  # SIGSEGV: what an unchecked failed allocation ends in

    with pytest.raises(MediaRejected, match=r"^could not read the video: ffprobe crashed on it "
                                            r"\(SIGSEGV; memory limit 1024 MB\)$"):
        probe_video(media.clip, CAPS)
    with pytest.raises(MediaRejected, match="ffmpeg crashed on it"):
        make_thumbnail(media.clip, tmp_path / "thumb.jpg", at_seconds=0.5)
    assert calls == ["ffprobe", "ffprobe", "ffmpeg", "ffmpeg"]  # retried once, as any death by signal
    assert list(tmp_path.iterdir()) == []  # the partial thumbnail is removed


@needs_ffmpeg
@pytest.mark.django_db
def test_a_clip_whose_tool_runs_out_of_memory_fails_and_keeps_its_file(media, project, settings, monkeypatch):
    settings.MEDIA_TOOL_MEMORY_MB = 1024
    from annotations.models import Clip
    from annotations.services import ingest

    checked = ingest.validate_file(ingest.Candidate(path=media.clip, display="talk.mp4"))
    ingest.store_clip(project, checked, source="upload")  # processing waits for the commit: not in this test
    clip = Clip.objects.get(project=project)
    fake_tool(monkeypatch, 1, b"[h264 @ 0x55d0c1a2b3c0] Cannot allocate memory\n")

    assert ingest.process_clip(clip.pk) == "failed"

    clip.refresh_from_db()
    assert clip.status == Clip.Status.FAILED
    assert clip.error == "out of memory reading the video (limit 1024 MB)"
    assert Path(clip.file.path).read_bytes() == media.clip.read_bytes()  # nothing lost: it can be reprocessed
