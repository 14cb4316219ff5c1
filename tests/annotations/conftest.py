"""Small test media, made once per session with the system ffmpeg (1 s, 160x120, 15 fps)."""

from pathlib import Path
from types import SimpleNamespace

import pytest

from annotations.media import MediaLimits
from ml.testing.samples import make_clip
from tests.conftest import skip_without_ffmpeg


@pytest.fixture(scope="session")
def media(tmp_path_factory) -> SimpleNamespace:
    """Paths of the shared, read-only test clips. Copy one into tmp_path before changing it."""
    skip_without_ffmpeg()
    d: Path = tmp_path_factory.mktemp("media")
    return SimpleNamespace(
        clip=make_clip(d / "clip.mp4", fps=15),  # faststart: moov before mdat
        moov_at_end=make_clip(d / "moov_at_end.mp4", fps=15, faststart=False),
        no_audio=make_clip(d / "no_audio.mp4", fps=15, audio=False),
        mkv=make_clip(d / "clip.mkv", fps=15),
        avi=make_clip(d / "clip.avi", fps=15, video_codec="mpeg4", audio_codec="pcm_s16le"),
        m4a=make_clip(d / "audio.m4a", video=False),
    )


@pytest.fixture
def limits() -> MediaLimits:
    return MediaLimits(max_bytes=50_000_000, max_seconds=60.0, max_width=1920, max_height=1080)
