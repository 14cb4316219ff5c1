"""Model files come only from regular files inside AFFECTLOOP_MODEL_DIR, and errors never show a server path.

The review pointed a project at /etc/shadow (accepted), at a path in root's home (its "No such file or
directory" came back to the manager) and at /dev/zero (hashing it pinned both worker threads).
"""

import os
import threading

import pytest

from annotations.services.registry import RegistryError, identify, register_configured, resolve

pytestmark = pytest.mark.django_db


@pytest.fixture
def model_dir(settings, tmp_path):
    root = tmp_path / "models"
    (root / "base").mkdir(parents=True)
    (root / "base" / "config.json").write_text("{}")
    settings.MODEL_DIR = root
    return root


def assert_safe(message: str, *paths) -> None:
    """No server path (the manager's own reference may be echoed) and no OS error text."""
    for path in paths:
        assert str(path) not in message
    assert "Errno" not in message and "No such file" not in message and "Permission denied" not in message


def within(seconds: float, fn, *args, **kwargs):
    """Run fn in a thread and fail (rather than hang the suite) if it has not returned in time."""
    out = {}

    def run():
        try:
            out["value"] = fn(*args, **kwargs)
        except BaseException as exc:  # noqa: BLE001  (re-raised below in the test's thread)
            out["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"{fn.__name__} did not return within {seconds} s"
    if "error" in out:
        raise out["error"]
    return out["value"]


def test_a_folder_inside_the_model_dir_resolves(model_dir):
    assert resolve("base") == str((model_dir / "base").resolve())


@pytest.mark.parametrize("ref", ["/etc/shadow", "/root/secret-model", "../etc", "base/../../etc"])
def test_absolute_and_escaping_references_are_refused(model_dir, ref):
    with pytest.raises(RegistryError) as err:
        resolve(ref)
    assert_safe(str(err.value), model_dir)


def test_symlinks_out_of_the_model_dir_are_refused(model_dir, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "weights.safetensors").write_bytes(b"x")
    (model_dir / "linked").symlink_to(outside)
    (model_dir / "base" / "model.safetensors").symlink_to("/etc/passwd")
    for ref in ("linked", "base"):
        with pytest.raises(RegistryError, match="leaves the model directory") as err:
            resolve(ref)
        assert_safe(str(err.value), model_dir, outside, "/etc/passwd")


def test_devices_and_fifos_are_refused_without_reading_them(model_dir):
    os.mkfifo(model_dir / "base" / "adapter_model.safetensors")
    with pytest.raises(RegistryError, match="not a regular file"):
        within(5, resolve, "base")
    (model_dir / "zero").symlink_to("/dev/zero")
    with pytest.raises(RegistryError):
        within(5, resolve, "zero")


def test_a_fifo_checkpoint_fails_fast_with_a_safe_message(model_dir):
    (model_dir / "affect").mkdir()
    (model_dir / "affect" / "config.json").write_text("{}")
    os.mkfifo(model_dir / "affect" / "ckpt.pth")
    with pytest.raises(RegistryError) as err:
        within(5, identify, "affectgpt", model="affect", checkpoint="affect/ckpt.pth")
    assert_safe(str(err.value), model_dir)


def test_hub_ids_only_where_the_operator_allows_them(model_dir, settings):
    settings.ALLOW_HUB_MODELS = False
    with pytest.raises(RegistryError, match="AFFECTLOOP_ALLOW_HUB_MODELS") as err:
        resolve("OpenGVLab/InternVL3-1B")
    assert_safe(str(err.value), model_dir)
    settings.ALLOW_HUB_MODELS = True
    assert resolve("OpenGVLab/InternVL3-1B") == "OpenGVLab/InternVL3-1B"
    assert resolve("base") == str((model_dir / "base").resolve())  # a folder of that name still wins


def test_clips_waiting_for_a_bad_model_get_a_safe_error(model_dir, project, settings):
    from annotations.models import Clip
    from annotations.services.projects import update_config

    settings.ALLOW_HUB_MODELS = False
    (model_dir / "evil").symlink_to("/etc")
    update_config(project, {"prelabel": {"backends": {"internvl": {"model": "evil"},
                                                      "affectgpt": {"enabled": False, "model": "affect"}}}})
    clip = Clip.objects.create(project=project, file="clips/x.mp4", sha256="c" * 64, name="x", size_bytes=1,
                               status=Clip.Status.READY, duration=2.0)
    outcome = register_configured(project)
    assert outcome["internvl"].startswith("error: ")
    clip.refresh_from_db()
    assert clip.prelabel_error and "leaves the model directory" in clip.prelabel_error
    assert_safe(clip.prelabel_error, model_dir, "/etc")


def test_symlink_loops_end_with_a_safe_error(model_dir):
    (model_dir / "base" / "self").symlink_to(".")  # a link back up: walked once, not forever
    assert resolve("base") == str((model_dir / "base").resolve())
    (model_dir / "a").symlink_to(model_dir / "b")
    (model_dir / "b").symlink_to(model_dir / "a")
    with pytest.raises(RegistryError, match="cannot be read on this worker") as err:
        resolve("a")
    assert_safe(str(err.value), model_dir)
    (model_dir / "base" / "loop").symlink_to(model_dir / "a")
    with pytest.raises(RegistryError) as err:
        resolve("base")
    assert_safe(str(err.value), model_dir)


def test_a_fifo_swapped_in_after_the_check_is_not_read(tmp_path):
    from ml.versions import file_sha256

    os.mkfifo(tmp_path / "weights.safetensors")
    with pytest.raises(OSError, match="not a regular file"):
        within(5, file_sha256, tmp_path / "weights.safetensors")
