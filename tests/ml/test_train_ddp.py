"""The multi-process path of `python -m ml.train`: `torchrun --nproc_per_node 2` with DDP over gloo on the CPU
and a tiny random InternVL. Each process trains on half of every step's samples, gradients are averaged
between them, and only rank 0 evaluates, reports and writes the run's files."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch", reason="training needs torch (worker dependencies)")
pytest.importorskip("torchvision", reason="the InternVL processor needs torchvision")
pytest.importorskip("peft", reason="LoRA needs peft")

from ml.testing.samples import generate_colour_clips, write_training_jsonl
from ml.testing.tiny_internvl import build_tiny_internvl
from tests.conftest import needs_ffmpeg

pytestmark = [needs_ffmpeg, pytest.mark.slow,
              pytest.mark.skipif(not torch.distributed.is_available(), reason="torch without distributed")]
ROOT = Path(__file__).resolve().parents[2]


def test_torchrun_two_processes_train_one_adapter_written_by_rank_0(tmp_path):
    model = build_tiny_internvl(tmp_path / "tiny56", image_size=56)
    write_training_jsonl(tmp_path / "train.jsonl", generate_colour_clips(tmp_path / "clips", 16, seed=1))
    write_training_jsonl(tmp_path / "eval.jsonl", generate_colour_clips(tmp_path / "clips", 8, seed=2))
    out = tmp_path / "adapter"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    # 16 samples over 2 processes, batch 4 each, 2 batches per step: 1 step per epoch.
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "ml.train", "--base", str(model), "--train", str(tmp_path / "train.jsonl"),
               "--eval", str(tmp_path / "eval.jsonl"), "--out", str(out), "--epochs", "3",
               "--batch-size", "4", "--grad-accum", "2", "--lr", "5e-3", "--lora-r", "8", "--num-frames", "4",
               "--log-every", "1", "--num-workers", "0", "--max-new-tokens", "8"]
    result = subprocess.run(command, check=False, cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=240)
    assert result.returncode == 0, result.stderr[-4000:]

    lines = result.stdout.strip().splitlines()
    final = json.loads(lines[-1])
    assert sum(line.startswith("{") for line in lines) == 1  # one final evaluation: rank 0's
    assert [line.split()[1] for line in lines if line.startswith("step ")] == ["1/3", "2/3", "3/3"]

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["device"] == "cpu"
    assert metrics["steps"] == metrics["total_steps"] == 3 and metrics["eval"] == final
    assert metrics["samples"] == {"train": 16, "captions": 0, "eval": 8}
    losses = [entry["eval_loss"] for entry in metrics["history"]]
    assert losses == sorted(losses, reverse=True)  # it learns: the eval loss falls at every evaluation
    assert {p.name for p in out.iterdir()} == {
        "adapter_model.safetensors", "adapter_config.json", "training_config.json", "metrics.json",
        "eval_predictions.jsonl", "checkpoints"}
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-00000002", "step-00000003"]
    assert not list(out.rglob("*.tmp"))
