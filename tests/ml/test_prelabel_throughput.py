"""bench/prelabel_throughput.py, run as a user would: one small CPU run on the tiny model (nothing is
downloaded). The builders it uses are tested in test_random_internvl.py."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import needs_ffmpeg

os.environ.setdefault("HF_HUB_OFFLINE", "1")
pytest.importorskip("torch", reason="the benchmark needs torch (worker dependencies)")
pytest.importorskip("torchvision", reason="the InternVL processor needs torchvision")
pytest.importorskip("transformers", reason="the benchmark needs transformers")

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bench" / "prelabel_throughput.py"
FRAMES = 2
# "    2    21.393    0.047  ...  17.76x        2        1.31x           n/a  n/a"
ROW = re.compile(r"^\s*(?P<batch>\d+)\s+(?P<clips_s>\d+\.\d+)\s+(?P<s_clip>\d+\.\d+)\s.*?"
                 r"\s(?P<ratio>\d+\.\d\d)x\s+(?P<readers>\d+)\s+(?P<vs_one>-|\d+\.\d\dx)"
                 r"\s+(?P<mem>n/a|\d+\.\d+ GiB)\s+(?P<util>.+?)\s*$", re.MULTILINE)


@pytest.mark.slow
@needs_ffmpeg
def test_tiny_internvl_cpu_run(tmp_path):
    result = tmp_path / "result.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--clips", "4", "--batch-sizes", "1,2", "--frames", str(FRAMES),
         "--max-new-tokens", "4", "--device", "cpu", "--threads", "1", "--seconds", "1", "--size", "320x180",
         "--decode-workers", "2,1", "--json", str(result)],
        check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    out = proc.stdout

    rows = {(int(m["batch"]), int(m["readers"])): m for m in ROW.finditer(out)}
    assert sorted(rows) == [(1, 1), (1, 2), (2, 1), (2, 2)], out

    def ratio(a, b):
        return pytest.approx(float(rows[a]["clips_s"]) / float(rows[b]["clips_s"]), rel=0.02, abs=0.011)

    for readers in (1, 2):  # vs b1: the same number of readers at batch size 1
        assert rows[1, readers]["ratio"] == "1.00"
        assert float(rows[2, readers]["ratio"]) == ratio((2, readers), (1, readers))
    for batch in (1, 2):  # vs 1 reader: the same batch size with one reader
        assert rows[batch, 1]["vs_one"] == "1.00x"
        assert float(rows[batch, 2]["vs_one"][:-1]) == ratio((batch, 2), (batch, 1))
    for row in rows.values():
        assert row["mem"] == "n/a" and row["util"] == "n/a"
    assert "GPU utilisation: n/a" in out
    assert "vs b1" in out

    data = json.loads(result.read_text())
    assert data["device"] == "cpu" and data["image_tokens_per_frame"] == 256
    assert [(r["batch_size"], r["decode_workers"]) for r in data["rows"]] == [(1, 1), (1, 2), (2, 1), (2, 2)]
    for row in data["rows"]:
        # Each frame is one untiled 448-px tile: exactly frames x 256 image tokens, plus the text.
        assert row["image_tokens_per_clip"] == FRAMES * 256
        assert row["prompt_tokens_per_clip"] > FRAMES * 256
        assert row["prompt_tokens_per_clip"] == pytest.approx(row["image_tokens_per_clip"]
                                                              + row["text_tokens_per_clip"])
        assert row["new_tokens_per_clip"] == 4  # forced: min_new_tokens == max_new_tokens
        assert row["clips_per_s"] > 0 and row["peak_gpu_mem_gib"] is None and row["gpu_util_mean"] is None
    assert data["rows"][0]["speedup_vs_b1"] == 1.0
