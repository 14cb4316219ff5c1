"""bench/lora_sizing.py, run as a user would: a small CPU run on the tiny model with clips handed over in a
folder (as the GPU machine, which has no ffmpeg, gets them). The figures are only checked for shape and
consistency here; the GPU figures are in the README."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import needs_ffmpeg

os.environ.setdefault("HF_HUB_OFFLINE", "1")
pytest.importorskip("torch", reason="the benchmark needs torch (worker dependencies)")
pytest.importorskip("peft", reason="the benchmark needs peft")
pytest.importorskip("torchvision", reason="the InternVL processor needs torchvision")

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bench" / "lora_sizing.py"


@needs_ffmpeg
def test_read_sample_clips_gives_back_what_was_generated(tmp_path):
    from ml.testing.samples import generate_sample_clips, read_sample_clips

    made = generate_sample_clips(tmp_path / "clips", 3, seconds=0.5, speech=False)
    assert read_sample_clips(tmp_path / "clips") == made
    assert [c.labels for c in read_sample_clips(tmp_path / "clips")] == [c.labels for c in made]


@pytest.mark.slow
@needs_ffmpeg
def test_tiny_cpu_run_from_a_clips_folder(tmp_path):
    from ml.testing.samples import generate_sample_clips

    generate_sample_clips(tmp_path / "clips", 2, seconds=1.0, width=320, height=180, speech=False)
    result = tmp_path / "lora.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--models", "tiny:2,3", "--batch-sizes", "2", "--checkpointing", "off,on",
         "--steps", "1", "--warmup", "0", "--device", "cpu", "--threads", "1", "--clips-dir",
         str(tmp_path / "clips"), "--json", str(result)],
        check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    data = json.loads(result.read_text())
    assert data["device"] == "cpu" and data["gpu"] is None
    # batch 1 is always added as the baseline; every (checkpointing, frames, batch) once, in order
    assert [(r["checkpointing"], r["frames"], r["batch_size"]) for r in data["rows"]] == [
        (False, 2, 1), (False, 2, 2), (False, 3, 1), (False, 3, 2),
        (True, 2, 1), (True, 2, 2), (True, 3, 1), (True, 3, 2)]
    tiny = data["models"]["tiny"]
    assert 0 < tiny["trainable_parameters"] < tiny["parameters"]
    for row in data["rows"]:
        assert not row["oom"] and row["peak_gpu_mem_gib"] is None
        assert row["s_per_sample"] == pytest.approx(row["s_per_step"] / row["batch_size"])
        assert row["samples_per_s"] == pytest.approx(row["batch_size"] / row["s_per_step"])
    by_key = {(r["checkpointing"], r["frames"], r["batch_size"]): r for r in data["rows"]}
    # the tiny model has 256 image tokens per frame, as the real one: one more frame is those 256 plus its
    # "FrameN: <img>...</img>" markers
    assert 256 < by_key[(False, 3, 1)]["tokens_per_sample"] - by_key[(False, 2, 1)]["tokens_per_sample"] < 256 + 16
    assert by_key[(False, 2, 2)]["vs_b1"] == pytest.approx(
        by_key[(False, 2, 2)]["samples_per_s"] / by_key[(False, 2, 1)]["samples_per_s"])
    assert "peak GPU mem" in proc.stdout and "tokens/sample" in proc.stdout


def test_bad_model_spec_is_refused():
    proc = subprocess.run([sys.executable, str(SCRIPT), "--models", "internvl3-70b:8"], check=False, cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "model must be one of" in proc.stderr
