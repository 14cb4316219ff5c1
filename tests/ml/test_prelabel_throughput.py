"""bench/prelabel_throughput.py: the full-size InternVL3 configs (counted on the meta device, no memory), the
realistic tokenizer, and one small CPU run of the script on the tiny model (nothing is downloaded)."""

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch = pytest.importorskip("torch", reason="the benchmark needs torch (worker dependencies)")
pytest.importorskip("torchvision", reason="the InternVL processor needs torchvision")
pytest.importorskip("transformers", reason="the benchmark needs transformers")

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bench" / "prelabel_throughput.py"
FRAMES = 2
# "    2    21.393    0.047  ...  17.76x           n/a  n/a"
ROW = re.compile(r"^\s*(?P<batch>\d+)\s+(?P<clips_s>\d+\.\d+)\s+(?P<s_clip>\d+\.\d+)\s.*?"
                 r"\s(?P<ratio>\d+\.\d\d)x\s+(?P<mem>n/a|\d+\.\d+ GiB)\s+(?P<util>.+?)\s*$", re.MULTILINE)


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("prelabel_throughput", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up while the class is built
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


@pytest.mark.parametrize(("name", "low", "high"), [("internvl3-1b", 0.9e9, 1.1e9), ("internvl3-2b", 2.0e9, 2.3e9)])
def test_realistic_configs_have_the_published_sizes(bench, name, low, high):
    from transformers import InternVLForConditionalGeneration

    config = bench.internvl3_config(name)
    with torch.device("meta"):  # shapes only: no memory, no initialisation cost
        model = InternVLForConditionalGeneration(config)
    assert {p.device.type for p in model.parameters()} == {"meta"}
    total = bench.count_parameters(model)
    assert low <= total <= high, f"{name}: {total:,} parameters"
    vision = sum(p.numel() for p in model.model.vision_tower.parameters())
    assert 0.29e9 <= vision <= 0.31e9  # InternViT-300M
    assert config.image_seq_length == (448 // 14) ** 2 // 4 == 256
    assert model.get_output_embeddings().weight is not model.get_input_embeddings().weight  # untied


def test_realistic_tokenizer_uses_real_ids_and_word_tokens(bench):
    tokenizer = bench.build_realistic_tokenizer(bench.tokenizer_corpus(["What a lovely day, Sam."]))
    for token, token_id in bench.SPECIAL_IDS.items():
        assert tokenizer.convert_tokens_to_ids(token) == token_id
    assert tokenizer.convert_tokens_to_ids("<video>") == bench.VOCAB_SIZE  # text-only placeholder
    ids = tokenizer("<|im_start|>user\nWhich emotions does the person show?<|im_end|>",
                    add_special_tokens=False)["input_ids"]
    assert ids[0] == bench.SPECIAL_IDS["<|im_start|>"] and ids[-1] == bench.SPECIAL_IDS["<|im_end|>"]
    assert len(ids) <= 12  # about one token per word, as Qwen's vocabulary gives, not one per byte
    assert tokenizer.decode([150000]).strip() == "w150000"  # garbage ids still decode to text


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg not installed (apt-get install ffmpeg)")
def test_tiny_internvl_cpu_run(tmp_path):
    result = tmp_path / "result.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--clips", "4", "--batch-sizes", "1,2", "--frames", str(FRAMES),
         "--max-new-tokens", "4", "--device", "cpu", "--threads", "1", "--seconds", "1", "--size", "320x180",
         "--json", str(result)],
        check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    out = proc.stdout

    rows = {int(m["batch"]): m for m in ROW.finditer(out)}
    assert sorted(rows) == [1, 2], out
    assert rows[1]["ratio"] == "1.00"
    assert float(rows[2]["ratio"]) == pytest.approx(float(rows[2]["clips_s"]) / float(rows[1]["clips_s"]),
                                                    rel=0.02, abs=0.011)
    for row in rows.values():
        assert row["mem"] == "n/a" and row["util"] == "n/a"
    assert "GPU utilisation: n/a" in out
    assert "vs b1" in out

    data = json.loads(result.read_text())
    assert data["device"] == "cpu" and data["image_tokens_per_frame"] == 256
    assert [r["batch_size"] for r in data["rows"]] == [1, 2]
    for row in data["rows"]:
        # Each frame is one untiled 448-px tile: exactly frames x 256 image tokens, plus the text.
        assert row["image_tokens_per_clip"] == FRAMES * 256
        assert row["prompt_tokens_per_clip"] > FRAMES * 256
        assert row["prompt_tokens_per_clip"] == pytest.approx(row["image_tokens_per_clip"]
                                                              + row["text_tokens_per_clip"])
        assert row["new_tokens_per_clip"] == 4  # forced: min_new_tokens == max_new_tokens
        assert row["clips_per_s"] > 0 and row["peak_gpu_mem_gib"] is None and row["gpu_util_mean"] is None
    assert data["rows"][0]["speedup_vs_b1"] == 1.0
