"""The typed training configuration (standard library only).

One frozen dataclass; every field carries its help text, which `python -m ml.train --help` prints. Values
come from the defaults, then a JSON or YAML file (`TrainConfig.from_file`), then command-line flags; each
value is checked when the config is built, and a bad one fails naming the field. A run saves its config
as `training_config.json` next to the adapter (`to_dict`), and a resumed run must have the same one.
Field names follow the project's `config.training` settings (annotations/project_config.py), so a
worker can fill one from the other field by field.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints

# LoRA wraps only the language model: a bare ["q_proj", ...] list would also wrap the vision tower's
# projections (DESIGN.md, ML notes).
LORA_TARGET_MODULES = r".*language_model\.layers\.\d+\.(self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down)_proj)"


class ConfigError(ValueError):
    """A bad configuration value or file; the message names the field."""


def setting(default: Any, help: str, check=None) -> Any:
    return field(default=default, metadata={"help": help, "check": check})


def _positive(value) -> str | None:
    return None if value > 0 else "must be > 0"


def _non_negative(value) -> str | None:
    return None if value >= 0 else "must be >= 0"


def _fraction(value) -> str | None:
    return None if 0 <= value <= 1 else "must be between 0 and 1"


def _below_one(value) -> str | None:
    return None if 0 <= value < 1 else "must be >= 0 and < 1"


@dataclass(frozen=True)
class TrainConfig:
    """What a LoRA fine-tuning run of InternVL does; the data files and output folder are not part of it."""

    base_model: str = setting("", "InternVL base model folder (or hub id) to fine-tune")
    num_frames: int = setting(8, "frames per clip, sampled at segment centres as at inference", _positive)

    lora_rank: int = setting(16, "LoRA rank r", _positive)
    lora_alpha: int = setting(32, "LoRA alpha (the update is scaled by alpha / r)", _positive)
    lora_dropout: float = setting(0.05, "dropout on the LoRA input", _below_one)
    target_modules: str = setting(LORA_TARGET_MODULES,
                                  "regex of the modules LoRA wraps (default: the language model's linears)")
    init_adapter: str = setting("", "LoRA adapter folder (peft layout) to continue training from, instead of a "
                                    "fresh LoRA; it must have this run's rank and target modules")

    learning_rate: float = setting(1e-4, "peak learning rate (AdamW)", _positive)
    schedule: Literal["linear", "cosine", "constant"] = setting(
        "linear", "learning-rate schedule after warm-up: linear or cosine decay to 0, or constant")
    warmup_ratio: float = setting(0.03, "share of the optimiser steps warming up linearly", _fraction)
    weight_decay: float = setting(0.0, "AdamW weight decay", _non_negative)
    max_grad_norm: float = setting(1.0, "clip the gradient norm to this; 0 turns clipping off", _non_negative)
    epochs: int = setting(3, "passes over the training samples", _positive)
    batch_size: int = setting(4, "clips per forward pass on each device (also for evaluation)", _positive)
    grad_accum: int = setting(4, "forward passes accumulated per optimiser step", _positive)
    seed: int = setting(0, "seed of the LoRA initialisation, sample order, dropout and caption mix")
    precision: Literal["auto", "bf16", "fp16", "fp32"] = setting(
        "auto", "weights and compute: auto is bf16 on GPU and fp32 on CPU; LoRA weights stay fp32")
    gradient_checkpointing: bool = setting(False, "recompute activations in the backward pass to save memory")

    caption_ratio: float = setting(
        0.0, "caption samples mixed in, as a share of the labelled training samples (needs a captions file)",
        _non_negative)

    eval_every: int = setting(0, "optimiser steps between evaluations; 0: at the end of each epoch",
                              _non_negative)
    monitor: Literal["eval_loss", "exact_match", "f"] = setting(
        "eval_loss", "the evaluation figure that picks the best adapter and drives early stopping")
    patience: int = setting(0, "stop after this many evaluations without improvement; 0: never stop early",
                            _non_negative)
    max_new_tokens: int = setting(48, "answer length limit when evaluation generates labels", _positive)
    keep_checkpoints: int = setting(2, "resumable checkpoints kept in OUT/checkpoints (the newest ones)",
                                    _positive)
    log_every: int = setting(10, "optimiser steps between progress reports", _positive)
    num_workers: int = setting(2, "data-loader processes decoding videos; 0 decodes in the training process",
                               _non_negative)

    def __post_init__(self) -> None:
        hints = get_type_hints(type(self))
        for f in fields(self):
            value = getattr(self, f.name)
            problem = _type_problem(value, hints[f.name])
            if problem is None and f.metadata.get("check"):
                problem = f.metadata["check"](value)
            if problem:
                raise ConfigError(f"{f.name} {problem} (got {value!r})")

    # --- building --------------------------------------------------------------------------------------

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, base: TrainConfig | None = None,
                  source: str = "config") -> TrainConfig:
        """`base` (default: the defaults) with the values in `data`; an unknown key is an error."""
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: expected a mapping of field names to values")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"{source}: unknown field(s) {', '.join(unknown)}")
        return replace(base or cls(), **data)

    @classmethod
    def from_file(cls, path: str | Path, *, base: TrainConfig | None = None) -> TrainConfig:
        """Read a JSON file, or YAML when the name ends in .yaml/.yml."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"{path}: {exc.strerror or exc}") from None
        try:
            if path.suffix.lower() in (".yaml", ".yml"):
                import yaml  # comes with transformers, which every training worker has

                data = yaml.safe_load(text)
            else:
                data = json.loads(text)
        except Exception as exc:  # noqa: BLE001 - JSON and YAML raise different types; both mean "bad file"
            raise ConfigError(f"{path}: not valid {path.suffix.lstrip('.') or 'JSON'}: {exc}") from None
        return cls.from_dict(data or {}, base=base, source=str(path))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _type_problem(value: Any, hint: Any) -> str | None:
    if get_origin(hint) is Literal:
        choices = get_args(hint)
        return None if value in choices else f"must be one of {', '.join(map(str, choices))}"
    if hint is bool:
        return None if isinstance(value, bool) else "must be true or false"
    if hint is int:
        return None if isinstance(value, int) and not isinstance(value, bool) else "must be an integer"
    if hint is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        return None if ok else "must be a number"
    if hint is str:
        return None if isinstance(value, str) else "must be a string"
    raise TypeError(f"no check for {hint!r}")  # a new field type needs a rule here
