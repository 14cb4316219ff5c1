"""Model version strings, computable without loading a model (no torch).

The platform decides which clips need pre-labeling by comparing these strings with the stored predictions,
so the backends build their `model_version` with these same functions: one rule, two users.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from pathlib import Path

from .prompts import AFFECTGPT_PROMPT_VERSION, INTERNVL_PROMPT_VERSION

ADAPTER_WEIGHT_FILES = ("adapter_model.safetensors", "adapter_model.bin")
AFFECTGPT_CONFIG_NAME = "affectgpt.json"
AFFECTGPT_DEFAULT_LLM = "Qwen2.5-7B-Instruct"


def file_sha256(path: str | Path) -> str:
    """Hash of a (possibly multi-GB) weights file, remembered while its size and mtime stay the same."""
    st = os.stat(path)
    return _sha256(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def adapter_id(path: str | Path) -> str:
    """Folder name plus a short hash of the weights: two different adapters never share an id."""
    folder = Path(path)
    weights = next((folder / name for name in ADAPTER_WEIGHT_FILES if (folder / name).is_file()), None)
    if weights is None:
        raise FileNotFoundError(f"no adapter weights in {folder}")
    return f"{folder.resolve().name}@{file_sha256(weights)[:12]}"


def internvl_version(model_path: str | Path, adapter: str | None, num_frames: int) -> str:
    base = Path(str(model_path).rstrip("/")).name
    return f"internvl:{base}+{adapter_id(adapter) if adapter else 'base'}+{INTERNVL_PROMPT_VERSION}+f{num_frames}"


def affectgpt_llm_name(model_dir: str | Path) -> str:
    path = Path(model_dir) / AFFECTGPT_CONFIG_NAME
    data = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    return data.get("llm_name", AFFECTGPT_DEFAULT_LLM)


def affectgpt_version(model_dir: str | Path, checkpoint: str | Path | None) -> str:
    tag = file_sha256(checkpoint)[:12] if checkpoint else "nockpt"
    return f"affectgpt:{affectgpt_llm_name(model_dir)}+{tag}+{AFFECTGPT_PROMPT_VERSION}"
