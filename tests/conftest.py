"""The cast every test can use, and the media every test can make (no downloads, ffmpeg only)."""

import shutil
import socket
from pathlib import Path

import pytest

from ml.metrics import REFERENCE_DIR, REFERENCE_DIR_ENV
from ml.testing.samples import generate_sample_clips

pytest_plugins = ["tests.embedded"]

_FFMPEG_MISSING = [tool for tool in ("ffmpeg", "ffprobe") if shutil.which(tool) is None]
needs_ffmpeg = pytest.mark.skipif(bool(_FFMPEG_MISSING),
                                  reason=f"{' and '.join(_FFMPEG_MISSING)} not on PATH (apt-get install ffmpeg)")


def skip_without_ffmpeg() -> None:
    """needs_ffmpeg for fixtures, which cannot carry a mark."""
    if needs_ffmpeg.args[0]:
        pytest.skip(needs_ffmpeg.kwargs["reason"])


def reference_path(*parts: str) -> Path:
    """REFERENCE_DIR/parts, or skip naming the path: the reference data is never committed, so a fresh
    clone has none."""
    path = REFERENCE_DIR.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"reference data absent: {path} (set {REFERENCE_DIR_ENV}; default ../shared/reference)")
    return path


@pytest.fixture(autouse=True)
def _private_media_root(settings, tmp_path):
    """Each test stores media in its own folder, so file assertions see only that test's files."""
    settings.MEDIA_ROOT = tmp_path / "media"


@pytest.fixture(scope="session")
def sample_dir(tmp_path_factory) -> Path:
    """Four generated clips (with sidecar .srt and manifest.csv), made once per test session."""
    skip_without_ffmpeg()
    out = tmp_path_factory.mktemp("samples")
    generate_sample_clips(out, 4, seconds=1.0, width=160, height=120, seed=7, speech=False)
    return out


@pytest.fixture
def clip_folder(sample_dir, tmp_path) -> Path:
    """A private copy of the sample clips that a test may modify."""
    dest = tmp_path / "clips"
    shutil.copytree(sample_dir, dest)
    return dest


@pytest.fixture
def manager(django_user_model):
    return django_user_model.objects.create_user("maria", password="pw-maria-123", is_staff=True)


@pytest.fixture
def annotator(django_user_model):
    return django_user_model.objects.create_user("alice", password="pw-alice-123")


@pytest.fixture
def outsider(django_user_model):
    return django_user_model.objects.create_user("oscar", password="pw-oscar-123")


@pytest.fixture
def project(manager, annotator):
    from annotations.models import Role
    from annotations.services.projects import create_project, set_membership

    project = create_project(name="Interviews", creator=manager)
    set_membership(project=project, user=annotator, role=Role.ANNOTATOR, actor=manager)
    return project


def port_open(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0

