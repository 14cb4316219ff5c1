"""The cast every test can use, and the media every test can make (no downloads, ffmpeg only)."""

import shutil
import socket
import subprocess
from pathlib import Path

import pytest

pytest_plugins = ["tests.embedded"]

needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None or shutil.which("ffprobe") is None,
                                  reason="ffmpeg/ffprobe not installed (apt-get install ffmpeg)")


@pytest.fixture(autouse=True)
def _private_media_root(settings, tmp_path):
    """Each test stores media in its own folder, so file assertions see only that test's files."""
    settings.MEDIA_ROOT = tmp_path / "media"


@pytest.fixture(scope="session")
def sample_dir(tmp_path_factory) -> Path:
    """Four generated clips (with sidecar .srt and manifest.csv), made once per test session."""
    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg not installed (apt-get install ffmpeg)")
    from annotations.samples import generate_sample_clips

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


def make_video(path: Path, *, seconds: float = 1.0, size: str = "160x120", audio: bool = True,
               extra: list[str] | None = None) -> Path:
    cmd = ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", f"testsrc=size={size}:rate=10:duration={seconds}"]
    if audio:
        cmd += ["-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}", "-c:a", "aac", "-shortest"]
    cmd += ["-c:v", "libx264", "-pix_fmt", "yuv420p", "-movflags", "+faststart", *(extra or []), str(path)]
    subprocess.run(cmd, check=True)
    return path
