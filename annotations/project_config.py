"""The project configuration: one typed, documented schema for `Project.config`, and its one accessor.

`Project.config` is JSON that managers edit. Every reader goes through `project_config(project)`, which
returns these frozen dataclasses with defaults filled in; nothing else reads the raw JSON. `parse` rejects
unknown keys and wrong types with the key's full path (``config.prelabel.backends.internvl.num_frames must
be an integer 1..64``), so a bad value is refused when it is saved, not discovered on a GPU worker later.
An explicit ``null`` for a section means "the defaults", the same as leaving it out.

The README's "Project configuration" section is generated from `describe()`; so is the admin's help.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

from django.utils.html import format_html, format_html_join

_REQUIRED = object()
# A hub id is "org/name"; anything else is a path relative to AFFECTLOOP_MODEL_DIR (see models_dir()).
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_CRON = re.compile(r"^\S+( \S+){4}$")
# The default of config.training.min_test_clips (services.evaluation's promotion rule).
MIN_TEST_CLIPS = 30


class ConfigError(ValueError):
    """One or more keys are wrong; `errors` lists one message per key, each naming its full path."""

    def __init__(self, errors: list[str]):
        self.errors = errors
        super().__init__("; ".join(errors))


def setting(default: Any = _REQUIRED, help: str = "", *, expect: str = "", check=None) -> Any:  # noqa: A002
    """A documented key. `check(value)` returns an error phrase ("must be ...") or None; `expect` words the
    type for the error message and the docs."""
    meta = {"help": help, "expect": expect, "check": check}
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    if dataclasses.is_dataclass(default):
        return field(default_factory=lambda: default, metadata=meta)
    if default is _REQUIRED:
        return field(metadata=meta)
    return field(default=default, metadata=meta)


def _between(lo, hi, kind="an integer"):
    return lambda v: None if lo <= v <= hi else f"must be {kind} {lo}..{hi}"


def _model_ref(value: str) -> str | None:
    if value.startswith("/") or "\\" in value or ".." in value.split("/"):
        return "must be a hub id (org/name) or a path relative to the model directory (AFFECTLOOP_MODEL_DIR)"
    return None if value.strip() else "must not be empty"


def _optional_model_ref(value):
    return None if value is None else _model_ref(value)


# --- the schema ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class InternVLBackend:
    model: str = setting(help="base model: a hub id such as OpenGVLab/InternVL3-1B-hf, or a folder under the "
                              "model directory", expect="a string", check=_model_ref)
    adapter: str | None = setting(None, "LoRA adapter folder under the model directory, registered with the "
                                        "base; an active trained ModelVersion replaces it",
                                  expect="a string or null", check=_optional_model_ref)
    num_frames: int = setting(8, "frames sampled at segment centres, 256 tokens each at 448 px",
                              expect="an integer 1..64", check=_between(1, 64))
    enabled: bool = setting(True, "false keeps the settings but stops pre-labeling with this backend")


@dataclass(frozen=True)
class AffectGPTBackend:
    model: str = setting(help="folder under the model directory holding clip/, hubert/ and llm/",
                         expect="a string", check=_model_ref)
    checkpoint: str | None = setting(None, "the release checkpoint (.pth) under the model directory",
                                     expect="a string or null", check=_optional_model_ref)
    enabled: bool = setting(True, "false keeps the settings but stops pre-labeling with this backend")
    # No num_frames: the checkpoint was trained on 8 frames, so the number is not a choice.


@dataclass(frozen=True)
class Backends:
    internvl: InternVLBackend | None = setting(None, "InternVL from frames and transcript; null: not used")
    affectgpt: AffectGPTBackend | None = setting(None, "AffectGPT from frames, audio and transcript; null: not used")


def _fusion(value) -> str | None:
    from ml.fusion import FORMAT, STRATEGIES  # torch-free

    if isinstance(value, str):
        return None if value in STRATEGIES else f"must be one of {', '.join(STRATEGIES)} or a fitted fusion"
    if isinstance(value, dict):
        if value.get("format") != FORMAT or value.get("strategy") not in STRATEGIES:
            return f"must be a fitted fusion of format {FORMAT} (from bench/fusion_ovmerd.py)"
        return None
    return "must be a strategy name or a fitted fusion object"


@dataclass(frozen=True)
class Prelabel:
    backends: Backends = setting(Backends(), "which models pre-label the clips")
    fusion: str | dict = setting("union", "how the backends' labels are fused: union, intersection, vote, "
                                          "reliability, or a fitted fusion object",
                                 expect="a strategy name or a fitted fusion", check=_fusion)
    batch_size: int = setting(8, "clips per GPU task", expect="an integer 1..256", check=_between(1, 256))


def _al_strategy(value: str) -> str | None:
    from ml.active import STRATEGIES  # torch-free

    return None if value in STRATEGIES else f"must be one of {', '.join(STRATEGIES)}"


def _al_fitted(value) -> str | None:
    from ml.active import FORMAT

    if value is None:
        return None
    ok = value.get("format") == FORMAT and isinstance(value.get("weights"), dict)
    return None if ok else f"must be a fitted strategy of format {FORMAT} (from bench/active_ovmerd.py) or null"


@dataclass(frozen=True)
class ActiveLearning:
    strategy: str = setting("families", "the order of the annotation queue; random is the baseline",
                            expect="a strategy name", check=_al_strategy)
    seed: int = setting(0, "seed of the random strategy and tie-breaks", expect="an integer")
    fitted: dict | None = setting(None, "a fitted strategy object; used instead of `strategy` when set",
                                  expect="an object or null", check=_al_fitted)


@dataclass(frozen=True)
class Annotation:
    overlap: int = setting(1, "annotators per clip before it goes to review", expect="an integer 1..20",
                           check=_between(1, 20))
    lease_minutes: int = setting(30, "how long a claimed clip stays with an annotator without a heartbeat",
                                 expect="an integer 1..1440", check=_between(1, 1440))
    suggestions: Literal["preselect", "show", "hide"] = setting(
        "show", "model labels: preselected as chips, shown beside the editor, or hidden (blind)")
    guidelines: str = setting("", "annotation guidelines shown on the clip page (plain text)",
                              expect="a string of at most 20000 characters",
                              check=lambda v: None if len(v) <= 20000 else "must be at most 20000 characters")


@dataclass(frozen=True)
class Gold:
    rate: float = setting(0.0, "share of queue items that are gold clips with known labels",
                          expect="a number 0..0.5", check=_between(0, 0.5, "a number"))
    accuracy_floor: float = setting(0.7, "an annotator below this gold F score is flagged to managers",
                                    expect="a number 0..1", check=_between(0, 1, "a number"))
    min_answers: int = setting(5, "gold answers an annotator needs before the floor can flag them",
                               expect="an integer 1..1000", check=_between(1, 1000))


@dataclass(frozen=True)
class Split:
    train: float = setting(0.8, "share of clips in the training split", expect="a number 0..1",
                           check=_between(0, 1, "a number"))
    val: float = setting(0.1, "share for validation and early stopping", expect="a number 0..1",
                         check=_between(0, 1, "a number"))
    test: float = setting(0.1, "share held out for evaluation; annotated blind", expect="a number 0..1",
                          check=_between(0, 1, "a number"))


def _cron(value: str) -> str | None:
    return None if value == "" or _CRON.match(value) else "must be a 5-field cron expression or empty"


@dataclass(frozen=True)
class Training:
    base_model: str | None = setting(None, "InternVL base to fine-tune; null: the pre-labeling InternVL model",
                                     expect="a string or null", check=_optional_model_ref)
    lora_rank: int = setting(16, "LoRA rank r", expect="an integer 1..256", check=_between(1, 256))
    lora_alpha: int = setting(32, "LoRA alpha", expect="an integer 1..1024", check=_between(1, 1024))
    lora_dropout: float = setting(0.05, "LoRA dropout", expect="a number 0..0.9", check=_between(0, 0.9, "a number"))
    learning_rate: float = setting(1e-4, "peak learning rate", expect="a number 1e-7..1",
                                   check=_between(1e-7, 1, "a number"))
    schedule: Literal["linear", "cosine", "constant"] = setting("linear", "learning-rate schedule after warm-up")
    epochs: int = setting(3, "passes over the training split", expect="an integer 1..100", check=_between(1, 100))
    batch_size: int = setting(4, "clips per step on one GPU", expect="an integer 1..256", check=_between(1, 256))
    grad_accum: int = setting(4, "steps accumulated per optimiser update", expect="an integer 1..1024",
                              check=_between(1, 1024))
    num_frames: int = setting(8, "frames per clip, as at inference", expect="an integer 1..64",
                              check=_between(1, 64))
    seed: int = setting(0, "training seed", expect="an integer")
    continue_from_parent: bool = setting(False, "start from the active InternVL version's adapter (same rank and "
                                                "alpha) instead of a fresh LoRA; the candidate records it as "
                                                "its parent")
    precision: Literal["auto", "bf16", "fp16", "fp32"] = setting("auto", "auto: bf16 on GPU, fp32 on CPU")
    trigger: Literal["manual", "verified", "schedule"] = setting(
        "manual", "manual; verified: when `min_new_verified` clips were verified since the last run; "
                  "schedule: on `cron`")
    min_new_verified: int = setting(200, "new verified clips that start a run with trigger=verified",
                                    expect="an integer 1..1000000", check=_between(1, 1_000_000))
    cron: str = setting("", "schedule for trigger=schedule, e.g. '0 3 * * 1'", expect="a cron expression",
                        check=_cron)
    auto_promote: bool = setting(False, "promote a candidate that beats the active model by `promote_margin`; "
                                        "otherwise a manager promotes")
    promote_margin: float = setting(0.01, "F gain over the active model on held-out test clips needed to promote",
                                    expect="a number 0..1", check=_between(0, 1, "a number"))
    min_test_clips: int = setting(MIN_TEST_CLIPS, "test clips a candidate needs before it can be promoted "
                                                  "automatically",
                                  expect="an integer 1..100000", check=_between(1, 100_000))
    max_hours: float = setting(12.0, "a run's own time limit in hours (per start of the worker); past it the "
                                     "run fails and keeps its last checkpoint",
                               expect="a number 0.1..168", check=_between(0.1, 168, "a number"))
    caption_ratio: float = setting(0.0, "human-centric caption samples mixed into a run per labelled training "
                                        "sample: captions = round(caption_ratio x labelled train samples), "
                                        "drawn from the kept captions of clips outside the run's val/test "
                                        "splits; 0: no captions",
                                   expect="a number 0..1", check=_between(0, 1, "a number"))
    caption_agreement: float = setting(0.5, "a caption is kept for training only when the Jaccard overlap of "
                                            "the emotion terms extracted from it and the clip's fused "
                                            "pre-labels is at least this",
                                       expect="a number 0..1", check=_between(0, 1, "a number"))
    keep_retired_days: int = setting(30, "days after retirement that a trained adapter's files are kept; then a "
                                         "daily job removes them unless the version is active, a candidate or "
                                         "an ancestor of one; 0: keep forever",
                                     expect="an integer 0..3650", check=_between(0, 3650))
    split: Split = setting(Split(), "train/val/test ratios; frozen once the first snapshot exists")
    group_key: str = setting("", "clip metadata key (e.g. speaker) whose clips share a split; frozen once "
                                 "the first snapshot exists", expect="a string")


def _url(value: str) -> str | None:
    return None if value == "" or re.match(r"^https?://[^\s/]+", value) else "must be an http(s) URL or empty"


@dataclass(frozen=True)
class LabelStudio:
    url: str = setting("", "Label Studio base URL; empty: not connected", expect="a URL", check=_url)
    project_id: int | None = setting(None, "the Label Studio project this project is mapped to",
                                     expect="a positive integer or null",
                                     check=lambda v: None if v is None or v > 0 else "must be positive or null")
    push_predictions: bool = setting(True, "send our predictions as pre-annotations")


@dataclass(frozen=True)
class ProjectConfig:
    prelabel: Prelabel = setting(Prelabel(), "pre-labeling models and fusion")
    active_learning: ActiveLearning = setting(ActiveLearning(), "annotation queue order")
    annotation: Annotation = setting(Annotation(), "how annotators work")
    gold: Gold = setting(Gold(), "gold clips for quality control")
    training: Training = setting(Training(), "LoRA retraining of InternVL")
    labelstudio: LabelStudio = setting(LabelStudio(), "Label Studio connection")

    def backends(self) -> dict[str, InternVLBackend | AffectGPTBackend]:
        """The enabled pre-labeling backends by name."""
        out = {}
        for name in ("internvl", "affectgpt"):
            spec = getattr(self.prelabel.backends, name)
            if spec is not None and spec.enabled:
                out[name] = spec
        return out


# --- parsing ------------------------------------------------------------------------------------------
def _hints(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls, include_extras=False)


def _type_error(tp) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "must be one of " + ", ".join(map(str, typing.get_args(tp)))
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false", dict: "an object"}
    if dataclasses.is_dataclass(tp):
        return "must be an object"
    return f"must be {names.get(tp, tp)}"


def _matches(tp, value) -> bool:
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if typing.get_origin(tp) is Literal:
        return value in typing.get_args(tp)
    return isinstance(value, tp)


def _parse(cls, raw, path: str, errors: list[str]):
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        errors.append(f"{path} must be an object")
        return None
    hints = _hints(cls)
    unknown = sorted(set(raw) - set(hints))
    for key in unknown:
        errors.append(f"{path}.{key} is not a known key (known: {', '.join(hints)})")
    values = {}
    for f in dataclasses.fields(cls):
        key_path = f"{path}.{f.name}"
        tp = hints[f.name]
        if f.name not in raw:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                errors.append(f"{key_path} is required")
            continue
        value = _value(tp, raw[f.name], key_path, f.metadata, errors)
        if value is not _INVALID:
            values[f.name] = value
    if errors:
        return None
    return cls(**values)


_INVALID = object()


def _value(tp, value, path: str, meta, errors: list[str]):
    options = typing.get_args(tp) if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union \
        else (tp,)
    if value is None and type(None) in options:
        return None
    options = tuple(o for o in options if o is not type(None))
    for option in options:
        if dataclasses.is_dataclass(option):
            before = len(errors)
            parsed = _parse(option, value, path, errors)
            return parsed if len(errors) == before else _INVALID
    if not any(_matches(option, value) for option in options):
        if meta.get("expect"):
            errors.append(f"{path} must be {meta['expect']}")
        else:
            errors.append(f"{path} {_type_error(options[0])}")
        return _INVALID
    if float in options and isinstance(value, int):
        value = float(value)
    check = meta.get("check")
    problem = check(value) if check else None
    if problem:
        errors.append(f"{path} {problem}")
        return _INVALID
    return value


def _cross_checks(config: ProjectConfig, errors: list[str]) -> None:
    split = config.training.split
    if abs(split.train + split.val + split.test - 1.0) > 1e-6:
        errors.append("config.training.split must add up to 1 (train + val + test)")
    if split.train <= 0 or split.test <= 0:
        errors.append("config.training.split needs a share above 0 for train and for test")
    if config.training.trigger == "schedule" and not config.training.cron:
        errors.append("config.training.cron is required when config.training.trigger is schedule")


def parse(raw) -> ProjectConfig:
    """Validate raw JSON into a ProjectConfig; ConfigError lists every wrong key with its full path."""
    errors: list[str] = []
    config = _parse(ProjectConfig, raw, "config", errors)
    if config is not None:
        _cross_checks(config, errors)
    if errors:
        raise ConfigError(errors)
    return config


def project_config(project) -> ProjectConfig:
    """The one accessor: the project's configuration with defaults. Raises ConfigError if the stored JSON
    is invalid (it is validated on save, so only a hand-edited database gets here)."""
    cached = getattr(project, "_parsed_config", None)
    if cached is not None and cached[0] == project.config:
        return cached[1]
    config = parse(project.config)
    project._parsed_config = (project.config, config)
    return config


# --- diffs and docs -------------------------------------------------------------------------------------
def flatten(raw, prefix: str = "config") -> dict[str, Any]:
    """`{"config.a.b": value}` for every leaf of a JSON object (fitted objects stay whole)."""
    out: dict[str, Any] = {}
    if isinstance(raw, dict) and raw and "format" not in raw:
        for key, value in raw.items():
            out.update(flatten(value, f"{prefix}.{key}"))
    elif raw is not None and raw != {}:
        out[prefix] = raw
    return out


def diff(old, new) -> dict[str, list]:
    """Changed leaves as `{path: [old, new]}` (None where a key is absent): the audit record of a change."""
    a, b = flatten(old or {}), flatten(new or {})
    return {k: [a.get(k), b.get(k)] for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}


def section_changed(old, new, section: str) -> bool:
    return any(path == f"config.{section}" or path.startswith(f"config.{section}.") for path in diff(old, new))


@dataclass(frozen=True)
class Key:
    path: str
    expect: str
    default: Any
    help: str


def describe(cls=ProjectConfig, prefix: str = "config") -> list[Key]:
    """Every key with its type, default and help, for the README and the admin."""
    out: list[Key] = []
    hints = _hints(cls)
    for f in dataclasses.fields(cls):
        tp, path = hints[f.name], f"{prefix}.{f.name}"
        options = [o for o in (typing.get_args(tp) if isinstance(tp, types.UnionType) else (tp,))
                   if o is not type(None)]
        nested = next((o for o in options if dataclasses.is_dataclass(o)), None)
        default = (f.default if f.default is not dataclasses.MISSING else
                   f.default_factory() if f.default_factory is not dataclasses.MISSING else "(required)")
        if nested is not None:
            nullable = type(None) in typing.get_args(tp)
            out.append(Key(path, "object or null" if nullable else "object", None if default is None else "{}",
                           f.metadata.get("help", "")))
            out.extend(describe(nested, path))
            continue
        expect = f.metadata.get("expect") or _type_error(tp).removeprefix("must be ")
        out.append(Key(path, expect, default, f.metadata.get("help", "")))
    return out


def _shown(value) -> str:
    import json

    return value if value in ("(required)", "{}") else json.dumps(value)


def admin_help() -> str:
    rows = format_html_join("", "<tr><td><code>{}</code></td><td>{}</td><td><code>{}</code></td><td>{}</td></tr>",
                            ((k.path.removeprefix("config."), k.expect, _shown(k.default), k.help)
                             for k in describe()))
    return format_html('JSON; every key is optional unless marked required. Unknown keys are refused.'
                       '<table class="config-keys"><tr><th>key</th><th>type</th><th>default</th><th>meaning</th>'
                       '</tr>{}</table>', rows)


def markdown_table() -> str:
    lines = ["| key | type | default | meaning |", "| --- | --- | --- | --- |"]
    for k in describe():
        lines.append(f"| `{k.path.removeprefix('config.')}` | {k.expect} | `{_shown(k.default)}` | {k.help} |")
    return "\n".join(lines)
