"""The platform predicts version strings without loading models; they must equal what the backends report."""

import pytest

pytest.importorskip("torch", reason="the ml extra (torch) is not installed")

from ml.versions import affectgpt_version, internvl_version  # noqa: E402


def test_internvl_versions_match_the_loaded_backend(tmp_path):
    from ml.backends.internvl import InternVLBackend
    from ml.testing.tiny_internvl import build_tiny_internvl, save_random_lora_adapter

    model = build_tiny_internvl(tmp_path / "ivl")
    adapter = save_random_lora_adapter(model, tmp_path / "adapter", seed=1)
    backend = InternVLBackend(str(model), num_frames=4)
    assert backend.model_version == internvl_version(model, None, 4)
    backend = InternVLBackend(str(model), adapter=str(adapter), num_frames=4)
    assert backend.model_version == internvl_version(model, str(adapter), 4)
    assert internvl_version(model, str(adapter), 4) != internvl_version(model, None, 4)


def test_affectgpt_versions_match_the_loaded_backend(tmp_path):
    from ml.backends.affectgpt import AffectGPTBackend
    from ml.testing.tiny import build

    model = build("affectgpt", tmp_path / "agpt")
    checkpoint = model / "checkpoint.pth"
    assert AffectGPTBackend(model).model_version == affectgpt_version(model, None)
    assert AffectGPTBackend(model, checkpoint=checkpoint).model_version == affectgpt_version(model, checkpoint)
