"""The worker runtime, shared by pre-labeling, training and captioning: Django-free.

- `ModelCache`: the models of one worker process, loaded lazily on first use and kept, keyed by what
  identifies them. One InternVL base per model folder and frame count, with LoRA adapters switched on it;
  adapters nobody uses any more are evicted (`retain_adapters`).
- Identity check: a spec may carry the version the registry recorded. If the loaded files give another
  version, the cache reloads once (the files may have been replaced and re-registered) and then raises
  `IdentityMismatch` naming the model. It never reloads in a loop.
- `gpu_lock`: one process-wide lock around loading and running models, so a threaded worker (the embedded
  default) neither loads a model twice nor runs two batches on one GPU at once.
- `predict_with_oom_fallback`: CUDA out of memory halves the batch.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)

OOM_AT_ONE = "CUDA out of memory at batch size 1"


@dataclass(frozen=True)
class ModelSpec:
    kind: str                            # internvl | affectgpt
    model: str                           # a local folder (absolute) or a hub id
    adapter: str | None = None           # InternVL LoRA adapter folder
    checkpoint: str | None = None        # AffectGPT checkpoint file
    num_frames: int = 8                  # InternVL only; AffectGPT always uses its trained 8
    expected_version: str | None = None  # what the registry recorded; None trusts the files
    label: str = ""                      # how messages name the model (its registered name)

    @property
    def key(self) -> tuple:
        if self.kind == "internvl":
            return (self.kind, self.model, self.num_frames)
        return (self.kind, self.model, self.checkpoint)


class IdentityMismatch(RuntimeError):
    """The files on this worker are not the model the registry names."""


def _default_loader(spec: ModelSpec):
    from .prelabel import load_backend  # worker-only: imports torch

    frames = spec.num_frames if spec.kind == "internvl" else None
    return load_backend(spec.kind, spec.model, checkpoint=spec.checkpoint, frames=frames)


class ModelCache:
    def __init__(self, loader: Callable[[ModelSpec], object] | None = None) -> None:
        self._loader = loader or _default_loader
        self._loaded: dict[tuple, object] = {}
        self.lock = threading.RLock()
        self.loads = 0  # how many times a model was loaded: tests and logs read it

    def __len__(self) -> int:
        return len(self._loaded)

    def clear(self) -> None:
        with self.lock:
            self._loaded.clear()
            free_cuda_memory()

    def get(self, spec: ModelSpec):
        """The loaded backend for the spec, with its adapter selected and its identity checked."""
        with self.lock:
            backend = self._loaded.get(spec.key)
            fresh = backend is None
            if fresh:
                backend = self._load(spec)
            self._select(backend, spec)
            if spec.expected_version and backend.model_version != spec.expected_version and not fresh:
                log.info("%s: loaded files give %s, registry says %s: reloading once", spec.label or spec.model,
                         backend.model_version, spec.expected_version)
                backend = self._load(spec)
                self._select(backend, spec)
            if spec.expected_version and backend.model_version != spec.expected_version:
                raise IdentityMismatch(
                    f"model {spec.label or spec.kind}: the files on this worker are {backend.model_version}, "
                    f"the registry expects {spec.expected_version}; re-register the model (manage.py "
                    f"register_model) or restore its files")
            return backend

    def _load(self, spec: ModelSpec):
        self._loaded.pop(spec.key, None)
        free_cuda_memory()
        started = time.perf_counter()
        backend = self._loader(spec)
        self.loads += 1
        self._loaded[spec.key] = backend
        log.info("loaded %s in %.1f s", backend.model_version, time.perf_counter() - started)
        return backend

    @staticmethod
    def _select(backend, spec: ModelSpec) -> None:
        if spec.kind == "internvl":
            backend.use_adapter(backend.add_adapter(spec.adapter) if spec.adapter else None)

    def retain_adapters(self, keep: set[str]) -> list[str]:
        """Evict every loaded InternVL adapter whose id (folder@hash) is not in `keep`; returns the evicted."""
        evicted = []
        with self.lock:
            for backend in self._loaded.values():
                for name, ident in list(getattr(backend, "adapters", {}).items()):
                    if ident not in keep:
                        backend.remove_adapter(name)
                        evicted.append(ident)
        if evicted:
            free_cuda_memory()
        return evicted


def predict_with_oom_fallback(backend, inputs: list) -> list:
    """CUDA out of memory halves the batch and retries each half; a single clip that still does not fit
    is reported as that clip's error (OOM_AT_ONE) instead of failing the others."""
    try:
        return backend.predict(inputs)
    except Exception as exc:  # noqa: BLE001 - only OOM is handled; everything else re-raises
        if not is_oom(exc):
            raise
    # Retried outside the except block: the exception's traceback would keep the failed attempt's
    # activations alive, and every smaller retry would run out of memory too.
    free_cuda_memory()
    if len(inputs) == 1:
        from .types import Prediction

        return [Prediction(clip_id=inputs[0].clip_id, labels=[], raw_text="", model_version=backend.model_version,
                           prompt_tokens=0, seconds=0.0, error=OOM_AT_ONE)]
    half = len(inputs) // 2
    log.warning("CUDA out of memory at batch %d; retrying as %d + %d", len(inputs), half, len(inputs) - half)
    return predict_with_oom_fallback(backend, inputs[:half]) + predict_with_oom_fallback(backend, inputs[half:])


def is_oom(exc: BaseException) -> bool:
    import torch  # worker-only

    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    # Some kernels raise a plain RuntimeError with CUDA's message instead of the dedicated type.
    return isinstance(exc, RuntimeError) and "CUDA out of memory" in str(exc)


def free_cuda_memory() -> None:
    import sys

    torch = sys.modules.get("torch")  # nothing to free in a process that never imported torch
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()
