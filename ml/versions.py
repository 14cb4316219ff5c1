"""Model identities and version strings, computable without loading a model (no torch).

Two layers. An *identity* names the weights: ``internvl:<base>+<adapter id or base>`` or
``affectgpt:<llm>+<checkpoint hash or nockpt>``; reading it needs the files (`identify_internvl`,
`identify_affectgpt`), so only a process that has them computes it, and the registry stores it. A
*prediction version* adds what changes the output without changing the weights (prompt version, frames);
`prediction_version` builds it from an identity string alone, so the web process can decide which clips
need pre-labeling from the database. The backends build their `model_version` with these same functions.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import json
import os
import stat
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
    # Checked on the open descriptor, not the name: a FIFO or device swapped in after a check would block
    # the read (or never end); O_NOFOLLOW refuses a symlink put in the resolved path's place.
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
    with open(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", path)
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def adapter_weights(path: str | Path) -> Path:
    """The weights file of a peft adapter folder; FileNotFoundError when it has none."""
    folder = Path(path)
    weights = next((folder / name for name in ADAPTER_WEIGHT_FILES if (folder / name).is_file()), None)
    if weights is None:
        raise FileNotFoundError(f"no adapter weights in {folder}")
    return weights


def adapter_id(path: str | Path) -> str:
    """Folder name plus a short hash of the weights: two different adapters never share an id."""
    return f"{Path(path).resolve().name}@{file_sha256(adapter_weights(path))[:12]}"


def base_name(model: str | Path) -> str:
    return Path(str(model).rstrip("/")).name


def internvl_identity(base: str, adapter_tag: str | None) -> str:
    return f"internvl:{base}+{adapter_tag or 'base'}"


def affectgpt_identity(llm_name: str, checkpoint_tag: str | None) -> str:
    return f"affectgpt:{llm_name}+{checkpoint_tag or 'nockpt'}"


def prediction_version(identity: str, num_frames: int | None = None) -> str:
    """The `model_version` a backend with this identity writes on its predictions."""
    kind = identity.split(":", 1)[0]
    if kind == "internvl":
        if not num_frames:
            raise ValueError("an InternVL prediction version needs the number of frames")
        return f"{identity}+{INTERNVL_PROMPT_VERSION}+f{num_frames}"
    if kind == "affectgpt":
        return f"{identity}+{AFFECTGPT_PROMPT_VERSION}"
    raise ValueError(f"not a model identity: {identity!r}")


def identify_internvl(model: str | Path, adapter: str | Path | None) -> str:
    """Reads the adapter's weights: call it where the files are."""
    return internvl_identity(base_name(model), adapter_id(adapter) if adapter else None)


def identify_affectgpt(model_dir: str | Path, checkpoint: str | Path | None) -> str:
    return affectgpt_identity(affectgpt_llm_name(model_dir), file_sha256(checkpoint)[:12] if checkpoint else None)


def internvl_version(model_path: str | Path, adapter: str | None, num_frames: int) -> str:
    return prediction_version(identify_internvl(model_path, adapter), num_frames)


def affectgpt_llm_name(model_dir: str | Path) -> str:
    path = Path(model_dir) / AFFECTGPT_CONFIG_NAME
    data = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    return data.get("llm_name", AFFECTGPT_DEFAULT_LLM)


def affectgpt_version(model_dir: str | Path, checkpoint: str | Path | None) -> str:
    return prediction_version(identify_affectgpt(model_dir, checkpoint))
