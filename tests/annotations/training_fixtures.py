"""Shared pieces for tests that train on the CPU: a tiny random InternVL in a temporary model directory, the
worker settings, the people of the project, and colour clips stored as verified clips of the project in
chosen splits (verified through the annotating and review services).

Use: `from tests.annotations.training_fixtures import *  # noqa: F403` brings the fixtures into a test
module; `verify_clips` and `start` are plain helpers. (tests/annotations/test_training_runs.py defines the
same fixtures itself; this module is their shared form.)
"""

from __future__ import annotations

import os
import shutil
from itertools import count
from pathlib import Path

import pytest

from annotations.models import Clip, Role, TrainingRun
from annotations.services import annotating, queue, reviews, training
from annotations.services.projects import set_membership
from ml.splits import split_of

os.environ.setdefault("HF_HUB_OFFLINE", "1")

__all__ = ["key_in", "model_dir", "one_thread", "people", "start", "verify_clips", "worker"]

_keys = count(10_000)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A model directory holding a tiny random InternVL (56-px frames) as `tiny56`."""
    pytest.importorskip("torch", reason="training needs torch (worker dependencies)")
    pytest.importorskip("peft", reason="LoRA needs peft")
    from ml.testing.tiny_internvl import build_tiny_internvl

    root = tmp_path_factory.mktemp("models")
    build_tiny_internvl(root / "tiny56", image_size=56)
    return root


@pytest.fixture
def one_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny operations: a second thread only waits (tests/ml/test_train.py)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def people(project, django_user_model, manager):
    users = {"alice": project.memberships.get(user__username="alice").user, "maria": manager}
    users["rita"] = django_user_model.objects.create_user("rita", password="pw-rita-12345")
    set_membership(project=project, user=users["rita"], role=Role.REVIEWER)
    return users


def worker_fixture(options: dict):
    """A `worker` fixture with these settings.TRAINING_WORKER_OPTIONS."""
    @pytest.fixture
    def worker(settings, model_dir, one_thread):
        settings.MODEL_DIR = model_dir
        settings.TRAINING_WORKER_OPTIONS = options
        return model_dir
    return worker


worker = worker_fixture({"num_workers": 0, "max_new_tokens": 8, "log_every": 1})


def key_in(split: str, ratios=(0.8, 0.1, 0.1)) -> str:
    """A sha256-like key that the project's split rule (ml.splits.split_of) puts in `split`."""
    while True:
        key = f"{next(_keys):064x}"
        if split_of(key, *ratios) == split:
            return key


def verify_clips(project, people, videos, splits, media_root) -> list[Clip]:
    """Each video as a ready clip of the project in the given split (one split name per video), annotated by
    alice with its labels and accepted by rita."""
    (Path(media_root) / "clips").mkdir(parents=True, exist_ok=True)
    clips = []
    for video, split in zip(videos, splits, strict=True):
        name = f"clips/{video.path.name}"
        shutil.copy(video.path, Path(media_root) / name)
        clip = Clip.objects.create(project=project, file=name, sha256=key_in(split), name=video.path.name,
                                   size_bytes=video.path.stat().st_size, status=Clip.Status.READY,
                                   duration=0.5, transcript=video.transcript)
        queue.claim(people["alice"], clip)
        draft = annotating.start(people["alice"], clip)
        annotation = annotating.submit(draft, labels=video.labels, base_version=draft.version)
        reviews.review(annotation, reviewer=people["rita"], decision="accept")
        clips.append(clip)
    return clips


def start(project, people, django_capture_on_commit_callbacks, **kwargs) -> TrainingRun:
    """start_run, with the on-commit dispatch captured (not run): the test plays the worker."""
    with django_capture_on_commit_callbacks(execute=False) as sent:
        run = training.start_run(project, actor=people["maria"], **kwargs)
    assert len(sent) == 1
    return run
