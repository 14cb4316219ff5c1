"""Small test media, made once per session with the system ffmpeg (1 s, 160x120)."""

import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest

from annotations.media import MediaLimits

MISSING_TOOLS = [t for t in ("ffmpeg", "ffprobe") if shutil.which(t) is None]


def require_ffmpeg():
    if MISSING_TOOLS:
        pytest.skip(f"{' and '.join(MISSING_TOOLS)} not on PATH: install ffmpeg to run the media tests")


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-hide_banner", "-nostdin", "-y", *args], check=True)


_VIDEO = ["-f", "lavfi", "-i", "testsrc=size=160x120:rate=15:duration=1"]
_AUDIO = ["-f", "lavfi", "-i", "sine=frequency=440:duration=1"]
_H264 = ["-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p"]


@pytest.fixture(scope="session")
def media(tmp_path_factory) -> SimpleNamespace:
    """Paths of the shared, read-only test clips. Copy one into tmp_path before changing it."""
    require_ffmpeg()
    d: Path = tmp_path_factory.mktemp("media")
    m = SimpleNamespace(
        clip=d / "clip.mp4",  # faststart: moov before mdat
        moov_at_end=d / "moov_at_end.mp4",
        no_audio=d / "no_audio.mp4",
        mkv=d / "clip.mkv",
        avi=d / "clip.avi",
        m4a=d / "audio.m4a",
    )
    ffmpeg(*_VIDEO, *_AUDIO, *_H264, "-c:a", "aac", "-shortest", "-movflags", "+faststart", str(m.clip))
    ffmpeg(*_VIDEO, *_AUDIO, *_H264, "-c:a", "aac", "-shortest", str(m.moov_at_end))
    ffmpeg(*_VIDEO, *_H264, "-an", "-movflags", "+faststart", str(m.no_audio))
    ffmpeg(*_VIDEO, *_AUDIO, *_H264, "-c:a", "aac", "-shortest", str(m.mkv))
    ffmpeg(*_VIDEO, *_AUDIO, "-c:v", "mpeg4", "-c:a", "pcm_s16le", "-shortest", str(m.avi))
    ffmpeg(*_AUDIO, "-c:a", "aac", str(m.m4a))
    return m


@pytest.fixture
def limits() -> MediaLimits:
    return MediaLimits(max_bytes=50_000_000, max_seconds=60.0, max_width=1920, max_height=1080)
