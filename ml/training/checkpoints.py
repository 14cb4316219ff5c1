"""Resumable checkpoints and the finished run's files.

    OUT/adapter_model.safetensors, OUT/adapter_config.json   the best adapter, in peft's layout
    OUT/training_config.json                                 the TrainConfig of the run
    OUT/metrics.json                                         its evaluation, seed, library versions, data hash
    OUT/eval_predictions.jsonl                               what the best adapter answered on the eval file
    OUT/checkpoints/step-00000040/                           adapter, optimiser, schedule, trainer_state.json

A checkpoint is written into a temporary folder and renamed into place, so a folder named step-N is always
complete; the newest `keep_checkpoints` are kept, and the best one until the end. metrics.json is written
last: its presence means the run finished. Only rank 0 writes.

Worker-only: torch and safetensors are imported inside the functions.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

CHECKPOINTS = "checkpoints"
STATE_FILE = "trainer_state.json"
OPTIMIZER_FILE = "optimizer.pt"
ADAPTER_FILES = ("adapter_model.safetensors", "adapter_config.json")
PREDICTIONS_FILE = "eval_predictions.jsonl"
CONFIG_FILE = "training_config.json"
METRICS_FILE = "metrics.json"
# Settings that change neither the weights nor the order of the data: a resumed run may use others.
RESUMABLE_CHANGES = frozenset({"num_workers", "log_every", "keep_checkpoints"})
_STEP_DIR = re.compile(r"step-(\d+)")


class ResumeError(ValueError):
    """OUT holds a run that cannot be continued with this configuration or data."""


@dataclass
class TrainerState:
    """Where the loop is, and what it has seen; saved as JSON in every checkpoint."""

    config: dict[str, Any]
    data_hash: str
    world: int
    total_steps: int
    step: int = 0  # optimiser steps done
    epoch: int = 0  # the epoch in progress
    batch: int = 0  # batches of that epoch done (by this process)
    best: float | None = None  # best value of the monitored figure so far
    best_step: int | None = None
    evals_without_improvement: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)  # one entry per evaluation
    train_loss: float | None = None  # the last reported training loss

    def record(self, evaluation: dict[str, Any], monitor: str) -> bool:
        """Add an evaluation; True when it is the best so far (lower loss, or higher exact match / F)."""
        self.history.append(evaluation)
        value = evaluation[monitor]
        better = self.best is None or (value < self.best if monitor == "eval_loss" else value > self.best)
        if better:
            self.best, self.best_step, self.evals_without_improvement = value, self.step, 0
        else:
            self.evals_without_improvement += 1
        return better

    def check_resumable(self, config: dict[str, Any], data_hash: str, world: int, where: Path) -> None:
        check_same_run(self.config, self.data_hash, self.world, config, data_hash, world, where)


def check_same_run(saved_config: dict[str, Any], saved_hash: str, saved_world: int,
                   config: dict[str, Any], data_hash: str, world: int, where: Path) -> None:
    """A run in `where` may be continued (or its result reused) only with the same settings, data and
    number of processes; ResumeError says what differs."""
    changed = sorted(k for k in set(config) | set(saved_config)
                     if k not in RESUMABLE_CHANGES and config.get(k) != saved_config.get(k))
    if changed:
        raise ResumeError(f"{where} was trained with other settings ({', '.join(changed)}): resume it with "
                          f"the same configuration or train into another output folder")
    if data_hash != saved_hash:
        raise ResumeError(f"{where} was trained on other data ({saved_hash}): resume it with the same files "
                          f"or train into another output folder")
    if world != saved_world:
        raise ResumeError(f"{where} was trained by {saved_world} processes; resume it with as many")


def checkpoint_dir(out_dir: Path, step: int) -> Path:
    return out_dir / CHECKPOINTS / f"step-{step:08d}"


def latest_checkpoint(out_dir: Path) -> Path | None:
    root = out_dir / CHECKPOINTS
    if not root.is_dir():
        return None
    found = [path for path in root.iterdir()
             if _STEP_DIR.fullmatch(path.name) and (path / STATE_FILE).is_file()]
    return max(found, key=lambda path: int(path.name.split("-")[1]), default=None)


def read_state(checkpoint: Path) -> TrainerState:
    return TrainerState(**json.loads((checkpoint / STATE_FILE).read_text(encoding="utf-8")))


def save_checkpoint(out_dir: Path, state: TrainerState, model, optimizer, scheduler, scaler,
                    predictions: list[dict] | None = None) -> Path:
    """Write step-N atomically, then drop old checkpoints (never the best one)."""
    import torch  # worker-only

    final = checkpoint_dir(out_dir, state.step)
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    save_adapter(model, tmp)
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict()}, tmp / OPTIMIZER_FILE)
    if predictions is not None:
        write_jsonl(tmp / PREDICTIONS_FILE, predictions)
    (tmp / STATE_FILE).write_text(json.dumps(asdict(state), indent=1) + "\n", encoding="utf-8")
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    _prune(out_dir, keep=state.config["keep_checkpoints"], best_step=state.best_step)
    return final


def load_checkpoint(checkpoint: Path, model, optimizer, scheduler, scaler) -> TrainerState:
    import torch  # worker-only
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    weights = load_file(checkpoint / ADAPTER_FILES[0], device=str(model.device))
    missing = [key for key in set_peft_model_state_dict(model, weights).missing_keys if "lora_" in key]
    if missing:
        raise ResumeError(f"{checkpoint}: the adapter lacks {len(missing)} LoRA weights, e.g. {missing[0]}")
    saved = torch.load(checkpoint / OPTIMIZER_FILE, map_location="cpu", weights_only=True)
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    scaler.load_state_dict(saved["scaler"])
    return read_state(checkpoint)


def save_adapter(model, folder: Path) -> None:
    """The LoRA weights and config in peft's layout (adapter_model.safetensors, adapter_config.json)."""
    model.save_pretrained(folder, safe_serialization=True)


def _prune(out_dir: Path, keep: int, best_step: int | None) -> None:
    root = out_dir / CHECKPOINTS
    steps = sorted(int(path.name.split("-")[1]) for path in root.iterdir() if _STEP_DIR.fullmatch(path.name))
    for step in steps[:-keep]:
        if step != best_step:
            shutil.rmtree(checkpoint_dir(out_dir, step), ignore_errors=True)


def write_outputs(out_dir: Path, state: TrainerState, metrics: dict[str, Any]) -> None:
    """Copy the best checkpoint's adapter and predictions to OUT, then write the config and, last, metrics."""
    best = checkpoint_dir(out_dir, state.best_step)
    for name in (*ADAPTER_FILES, PREDICTIONS_FILE):
        shutil.copyfile(best / name, out_dir / f".{name}.tmp")
        os.replace(out_dir / f".{name}.tmp", out_dir / name)
    write_json(out_dir / CONFIG_FILE, state.config)
    write_json(out_dir / METRICS_FILE, metrics)


def read_finished(out_dir: Path) -> dict[str, Any] | None:
    """The metrics of a run that finished in `out_dir`, or None."""
    path = out_dir / METRICS_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
