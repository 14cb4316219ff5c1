"""The training loop: LoRA on InternVL's language model, with evaluation, early stopping and checkpoints that
resume.

`train()` reads and checks the data, loads the base through `from_pretrained` as inference does, wraps the
language model's projections with LoRA, and runs AdamW with warm-up and a linear / cosine / constant schedule
over `epochs`, accumulating `grad_accum` batches per optimiser step. It evaluates every `eval_every` steps
(or at the end of each epoch) and always at the last step; every evaluation writes a checkpoint, and the
best evaluation's adapter is the run's output. Called again on the same output folder it resumes from the
newest checkpoint (same configuration and data required), or returns the metrics of the finished run.

Runs alike as one process on the CPU or a GPU and as several torchrun processes (DDP; see devices.py):
each process trains on its share of every epoch's batches, rank 0 evaluates and writes, and stop decisions
are taken together.

Resuming gives the run an uninterrupted one would have given: the batches of an epoch are a pure function of
(seed, epoch) and the dropout's random state is re-seeded from (seed, step, rank) before every step.

Worker-only: torch, transformers and peft are imported inside the functions (see ml/training/__init__).
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from ml.prompts import CAPTION, INTERNVL_CAPTION_PROMPT_VERSION, INTERNVL_PROMPT_VERSION, LABELS

from .checkpoints import (
    CONFIG_FILE,
    TrainerState,
    check_same_run,
    checkpoint_dir,
    latest_checkpoint,
    load_checkpoint,
    read_finished,
    read_state,
    save_checkpoint,
    write_outputs,
)
from .config import ConfigError, TrainConfig
from .data import TrainingData, TrainingDataset, Unreadable, collate_examples, epoch_batches, load_data
from .devices import Devices, setup_devices
from .evaluation import evaluate


@dataclass(frozen=True)
class Progress:
    """What a progress callback receives (on rank 0): after every `log_every` steps, and with `eval` after
    each evaluation."""

    step: int
    total_steps: int
    epoch: int
    loss: float | None  # mean training loss of the last optimiser step
    lr: float
    elapsed_s: float
    eval: dict[str, Any] | None = None


class TrainingStopped(Exception):
    """`should_stop()` asked for a stop; the checkpoint at `step` lets a later call resume."""

    def __init__(self, step: int, checkpoint: Path) -> None:
        super().__init__(f"stopped at step {step}; checkpoint {checkpoint}")
        self.step, self.checkpoint = step, checkpoint


def train(config: TrainConfig, train_path: str | Path, eval_path: str | Path, out_dir: str | Path, *,
          captions_path: str | Path | None = None, progress: Callable[[Progress], None] | None = None,
          should_stop: Callable[[], bool] | None = None) -> dict[str, Any]:
    """Fine-tune `config.base_model` and return the metrics written to OUT/metrics.json.

    Raises TrainingDataError (a bad sample, named), ResumeError (OUT holds another run), TrainingStopped.
    """
    # The data is checked first: a bad sample fails in a second, before torch is even imported.
    data = load_data(config, Path(train_path), Path(eval_path), captions_path and Path(captions_path))
    devices = setup_devices(config.precision)
    try:
        return _Run(config, devices, Path(out_dir), progress, should_stop).run(data)
    finally:
        devices.close()


class _Run:
    """One call of `train`: the objects of the run and the steps of the loop."""

    def __init__(self, config: TrainConfig, devices: Devices, out_dir: Path,
                 progress: Callable[[Progress], None] | None, should_stop: Callable[[], bool] | None) -> None:
        self.config, self.devices, self.out_dir = config, devices, out_dir
        self.progress, self.should_stop = progress, should_stop
        self.started = time.perf_counter()

    def run(self, data: TrainingData) -> dict[str, Any]:
        finished = read_finished(self.out_dir)
        if finished is not None:
            saved_config = json.loads((self.out_dir / CONFIG_FILE).read_text(encoding="utf-8"))
            check_same_run(saved_config, finished["data_hash"], finished["world_size"], self.config.to_dict(),
                           data.hash, self.devices.world, self.out_dir)
            return finished
        self._setup(data)
        while self.state.epoch < self.config.epochs:
            if self._train_epoch():
                break  # early stop
            self.state.epoch, self.state.batch = self.state.epoch + 1, 0
        metrics = self._metrics() if self.devices.is_main else None
        if self.devices.is_main:
            write_outputs(self.out_dir, self.state, metrics)
        return self.devices.from_main(metrics)

    def _setup(self, data: TrainingData) -> None:
        import torch  # worker-only

        config, devices = self.config, self.devices
        checkpoint = latest_checkpoint(self.out_dir)
        if checkpoint is not None:
            read_state(checkpoint).check_resumable(config.to_dict(), data.hash, devices.world, self.out_dir)
        self.data = data
        self.model, self.inputs = load_model(config, devices)
        self.dataset = TrainingDataset(self.inputs, data.train)
        total_steps = config.epochs * math.ceil(len(self._batches(epoch=0)) / config.grad_accum)
        self.optimizer = torch.optim.AdamW([p for p in self.model.parameters() if p.requires_grad],
                                           lr=config.learning_rate, weight_decay=config.weight_decay)
        self.scheduler = make_schedule(config, self.optimizer, total_steps)
        self.scaler = torch.amp.GradScaler(devices.device.type, enabled=devices.dtype == torch.float16)
        if checkpoint is not None:
            self.state = load_checkpoint(checkpoint, self.model, self.optimizer, self.scheduler, self.scaler)
        else:
            self.state = TrainerState(config.to_dict(), data.hash, devices.world, total_steps)
        self.saved_step = self.state.step if checkpoint is not None else None
        self.trained = self.model  # what the forward pass runs: the model, or its DDP wrapper
        if devices.distributed:
            from torch.nn.parallel import DistributedDataParallel

            self.trained = DistributedDataParallel(
                self.model, device_ids=[devices.device] if devices.device.type == "cuda" else None)
        self.model.train()

    def _batches(self, *, epoch: int) -> list[list[int]]:
        return epoch_batches(len(self.dataset), self.config.batch_size, seed=self.config.seed, epoch=epoch,
                             rank=self.devices.rank, world=self.devices.world)

    # --- the loop --------------------------------------------------------------------------------------

    def _train_epoch(self) -> bool:
        """The rest of the current epoch; True when early stopping ended the run."""
        import torch  # worker-only
        from torch.utils.data import DataLoader

        config, state = self.config, self.state
        batches = self._batches(epoch=state.epoch)
        # Its own generator: creating the loader must not draw from the global random state (resume).
        loader = DataLoader(self.dataset, batch_sampler=batches[state.batch:], num_workers=config.num_workers,
                            collate_fn=functools.partial(collate_examples, pad_id=self.inputs.pad_id),
                            generator=torch.Generator())
        step_loss = 0.0
        for index, batch in enumerate(loader, start=state.batch):
            if isinstance(batch, Unreadable):
                raise batch.error()
            group_start = index - index % config.grad_accum
            group_size = min(config.grad_accum, len(batches) - group_start)
            if index == group_start:
                # Dropout draws from the global generator: seeded per step, a resumed run draws the same.
                torch.manual_seed(config.seed * 1_000_003 + state.step * 1_009 + self.devices.rank)
            last_in_group = index + 1 == group_start + group_size
            step_loss += self._forward_backward(batch, group_size, sync=last_in_group)
            if last_in_group:
                self._optimizer_step()
                state.step, state.batch = state.step + 1, index + 1
                state.train_loss, step_loss = self.devices.mean(step_loss), 0.0
                if self._after_step(end_of_epoch=state.batch == len(batches)):
                    return True
        return False

    def _forward_backward(self, batch: dict[str, Any], group_size: int, *, sync: bool) -> float:
        """One batch's share of the step's gradient; DDP syncs gradients only on the step's last batch."""
        batch = self.devices.put(batch)
        accumulate = self.devices.distributed and not sync
        with self.trained.no_sync() if accumulate else contextlib.nullcontext():
            with self.devices.autocast():
                loss = self.trained(**batch).loss / group_size
            self.scaler.scale(loss).backward()
        return float(loss.detach())

    def _optimizer_step(self) -> None:
        import torch  # worker-only

        if self.config.max_grad_norm > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_([p for p in self.model.parameters() if p.requires_grad],
                                           self.config.max_grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)

    def _after_step(self, *, end_of_epoch: bool) -> bool:
        """Evaluate, report, or stop on request; True when early stopping ends the run."""
        state, every = self.state, self.config.eval_every
        stop_early = False
        if state.step == state.total_steps or (state.step % every == 0 if every else end_of_epoch):
            stop_early = self._evaluate_and_save()
        elif state.step % self.config.log_every == 0:
            self._report()
        if self.devices.agree(bool(self.should_stop and self.should_stop())):
            if self.saved_step != state.step and self.devices.is_main:
                self._save()
            self.devices.barrier()
            raise TrainingStopped(state.step, checkpoint_dir(self.out_dir, state.step))
        return stop_early

    # --- evaluation, checkpoints, progress -------------------------------------------------------------

    def _evaluate_and_save(self) -> bool:
        """Rank 0 evaluates and writes a checkpoint while the others wait; True when patience ran out."""
        config, state = self.config, self.state
        if self.devices.is_main:
            figures, predictions = evaluate(self.model, self.inputs, self.data.eval, devices=self.devices,
                                            batch_size=config.batch_size, num_workers=config.num_workers,
                                            max_new_tokens=config.max_new_tokens)
            figures = {"step": state.step, "epoch": state.epoch, **figures}
            state.record(figures, config.monitor)
            self._save(predictions)
            self._report(figures)
        self.devices.barrier()
        patience_over = bool(config.patience) and state.evals_without_improvement >= config.patience
        return self.devices.agree(self.devices.is_main and patience_over)

    def _save(self, predictions: list[dict[str, Any]] | None = None) -> None:
        save_checkpoint(self.out_dir, self.state, self.model, self.optimizer, self.scheduler, self.scaler,
                        predictions)
        self.saved_step = self.state.step

    def _report(self, evaluation: dict[str, Any] | None = None) -> None:
        if self.progress is not None and self.devices.is_main:
            state = self.state
            self.progress(Progress(step=state.step, total_steps=state.total_steps, epoch=state.epoch,
                                   loss=state.train_loss, lr=self.scheduler.get_last_lr()[0],
                                   elapsed_s=time.perf_counter() - self.started, eval=evaluation))

    def _metrics(self) -> dict[str, Any]:
        state, config = self.state, self.config
        best = next(entry for entry in state.history if entry["step"] == state.best_step)
        return {
            "eval": best,
            "best_step": state.best_step,
            "steps": state.step,
            "total_steps": state.total_steps,
            "stopped_early": state.step < state.total_steps,
            "train_loss": state.train_loss,
            "history": state.history,
            "seed": config.seed,
            "data_hash": self.data.hash,
            "samples": self.data.counts,
            "prompt_versions": {LABELS: INTERNVL_PROMPT_VERSION, CAPTION: INTERNVL_CAPTION_PROMPT_VERSION},
            "base_model": config.base_model,
            "versions": library_versions(),
            "device": str(self.devices.device),
            "world_size": self.devices.world,
            "seconds": round(time.perf_counter() - self.started, 3),
        }


# --- setup -----------------------------------------------------------------------------------------------

def load_model(config: TrainConfig, devices: Devices):
    """The base through `from_pretrained` (as inference loads it) with LoRA on the target modules, and the
    `InternVLInputs` that encode samples for it."""
    from transformers import AutoProcessor, InternVLForConditionalGeneration

    processor = AutoProcessor.from_pretrained(config.base_model)
    base = InternVLForConditionalGeneration.from_pretrained(config.base_model, dtype=devices.dtype)
    base.to(devices.device)
    return with_lora(base, processor, config)


def with_lora(base, processor, config: TrainConfig):
    """`base` (already on its device, in its dtype) made trainable as a run of `config` trains it. Split from
    `load_model` so that the GPU-sizing benchmark measures exactly this model without writing a multi-GB
    checkpoint to disk first."""
    import torch  # worker-only
    from peft import LoraConfig, get_peft_model

    from ml.backends.internvl import InternVLInputs, stop_token_ids

    inputs = InternVLInputs(processor, base.config, config.num_frames)
    end_of_turn = processor.tokenizer.convert_tokens_to_ids(inputs.end_of_turn)
    if end_of_turn not in stop_token_ids(base, processor.tokenizer):
        raise ValueError(f"answers end with {inputs.end_of_turn!r}, which does not stop generation: a "
                         f"trained model would never stop")
    if config.gradient_checkpointing:
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        base.enable_input_require_grads()
    torch.manual_seed(config.seed)  # LoRA's A matrices are drawn now
    lora = LoraConfig(r=config.lora_rank, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules=config.target_modules)
    if config.init_adapter:
        return continued_model(base, lora, config.init_adapter), inputs
    return get_peft_model(base, lora), inputs


def continued_model(base, lora, folder: str):
    """`base` with the trainable LoRA of the adapter in `folder`: a run that continues a parent's training.
    The parent's rank, alpha and target modules must be this run's, or the adapter could not be the same
    kind of object as a fresh one (and resuming or comparing runs would mislead); dropout may differ."""
    from peft import PeftConfig, PeftModel

    path = Path(folder)
    if not (path / "adapter_config.json").is_file():
        raise ConfigError(f"init_adapter {folder}: no adapter_config.json there")
    saved = PeftConfig.from_pretrained(str(path))
    differ = [f"{name} {getattr(saved, name)!r} (this run: {getattr(lora, name)!r})"
              for name in ("r", "lora_alpha", "target_modules") if getattr(saved, name) != getattr(lora, name)]
    if differ:
        raise ConfigError(f"init_adapter {folder} was trained with another LoRA shape: {'; '.join(differ)}")
    return PeftModel.from_pretrained(base, str(path), config=lora, is_trainable=True)


def make_schedule(config: TrainConfig, optimizer, total_steps: int):
    from transformers import get_scheduler  # worker-only

    name = "constant_with_warmup" if config.schedule == "constant" else config.schedule
    return get_scheduler(name, optimizer, num_warmup_steps=round(config.warmup_ratio * total_steps),
                         num_training_steps=total_steps)


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for package in ("torch", "transformers", "peft", "av", "numpy", "safetensors"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "absent"
    return versions
