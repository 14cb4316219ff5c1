"""The model registry: which model each backend of a project runs, and what that model is.

A model's identity (ml.versions) comes from its files, so only a process that has them computes it:
`register_model` runs on a worker (the `register_model` command, the GPU task that registers the configured
models, or the task that trained the model). Everything else (what needs pre-labeling, progress, the
admin) reads the identity from the database, so the web process and beat never need the model volume.

Paths are stored relative to AFFECTLOOP_MODEL_DIR; hub ids stay as they are. Promote, roll back and retire
are the only ways a version's status changes, each atomic and audited; one active version per project and
backend is a database rule.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from ..models import ModelVersion, Project
from ..project_config import HUB_ID, ConfigError, project_config
from . import audit

BACKENDS = ("internvl", "affectgpt")
MAX_MODEL_FILES = 20_000  # a model folder with more entries than this is refused rather than walked
log = logging.getLogger(__name__)


class RegistryError(ValueError):
    """Safe to show: names the model by its reference, never a server path."""


def models_dir() -> Path:
    return Path(settings.MODEL_DIR)


def _inside(real: Path, root: Path) -> bool:
    return real == root or root in real.parents


def _check_entry(path: Path, root: Path, ref: str) -> Path:
    """`path` after symlinks: inside the model directory and a regular file or folder. Devices, FIFOs and
    sockets are refused (reading /dev/zero would never end)."""
    real = path.resolve(strict=True)  # RuntimeError on a symlink loop, OSError on a dangling link
    if not _inside(real, root):
        raise RegistryError(f"model {ref!r} leaves the model directory (symbolic link)")
    mode = os.stat(real).st_mode
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise RegistryError(f"model {ref!r} contains something that is not a regular file")
    return real


def _check_tree(folder: Path, root: Path, ref: str) -> None:
    """Every entry under a model folder, as the loaders will open it (links followed), stays inside the model
    directory and is a regular file or folder. Each real folder is walked once, so links back up end."""
    seen, visited, pending = 0, {folder}, [folder]
    while pending:
        with os.scandir(pending.pop()) as entries:
            for entry in entries:
                seen += 1
                if seen > MAX_MODEL_FILES:
                    raise RegistryError(f"model {ref!r} has more than {MAX_MODEL_FILES} files")
                real = _check_entry(Path(entry.path), root, ref)
                if real.is_dir() and real not in visited:
                    visited.add(real)
                    pending.append(real)


def resolve(ref: str) -> str:
    """A stored model reference → what the loaders take: an absolute path inside the model directory (after
    symlinks, every file in it included), or a hub id where the operator allows hub models. Errors name the
    reference only, never a server path or an OS error: managers see them."""
    if not ref or ref.startswith("/") or ".." in Path(ref).parts:
        raise RegistryError(f"model reference {ref!r} must be relative to the model directory")
    root = models_dir().resolve()
    path = root / ref
    try:
        if os.path.lexists(path):
            real = _check_entry(path, root, ref)
            if real.is_dir():
                _check_tree(real, root, ref)
            return str(real)
    except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop
        log.warning("model %r: %s", ref, exc)
        raise RegistryError(f"model {ref!r} cannot be read on this worker (see its log)") from None
    if HUB_ID.match(ref):
        if not settings.ALLOW_HUB_MODELS:
            raise RegistryError(f"model {ref!r} is not in the model directory, and this server does not load "
                                f"models from the hub (AFFECTLOOP_ALLOW_HUB_MODELS)")
        return ref
    raise RegistryError(f"model folder {ref!r} is not in the model directory (AFFECTLOOP_MODEL_DIR) of this "
                        f"process")


def _sha256(path: Path) -> str:
    from ml.versions import file_sha256

    return file_sha256(path)


def _fingerprint(resolved: str) -> str:
    config = Path(resolved) / "config.json"
    return hashlib.sha256(config.read_bytes()).hexdigest() if config.is_file() else ""


def identify(backend: str, *, model: str, adapter: str | None = None, checkpoint: str | None = None) -> dict:
    """Read the files and return the registry fields of this model. Runs where the files are."""
    from ml.versions import adapter_weights, identify_affectgpt, identify_internvl

    base = resolve(model)
    fields = {"base_model": model, "base_fingerprint": "", "adapter_path": "", "adapter_sha256": "",
              "checkpoint_path": "", "checkpoint_sha256": ""}
    try:
        fields["base_fingerprint"] = _fingerprint(base)
        if backend == "internvl":
            if checkpoint:
                raise RegistryError("an InternVL model has no checkpoint (use an adapter)")
            adapter_abs = resolve(adapter) if adapter else None
            fields["name"] = identify_internvl(base, adapter_abs)
            if adapter_abs:
                fields.update(adapter_path=adapter, adapter_sha256=_sha256(adapter_weights(adapter_abs)))
        elif backend == "affectgpt":
            if adapter:
                raise RegistryError("an AffectGPT model has no adapter (use its checkpoint)")
            if not Path(base).is_dir():
                raise RegistryError(f"AffectGPT model {model!r} must be a folder in the model directory")
            ckpt_abs = resolve(checkpoint) if checkpoint else None
            if ckpt_abs and not Path(ckpt_abs).is_file():
                raise RegistryError(f"checkpoint {checkpoint!r} is not a file")
            fields["name"] = identify_affectgpt(base, ckpt_abs)
            if ckpt_abs:
                fields.update(checkpoint_path=checkpoint, checkpoint_sha256=_sha256(Path(ckpt_abs)))
        else:
            raise RegistryError(f"unknown backend {backend!r} (use {' or '.join(BACKENDS)})")
    except FileNotFoundError:
        raise RegistryError(f"{backend} model {model!r}: the weights are missing (no adapter or checkpoint file)"
                            ) from None
    except OSError as exc:
        log.warning("%s model %r: %s", backend, model, exc)
        raise RegistryError(f"{backend} model {model!r} cannot be read on this worker (see its log)") from None
    return fields


def register_model(project: Project, backend: str, *, model: str, adapter: str | None = None,
                   checkpoint: str | None = None, activate: bool = False, actor=None, training_run=None,
                   parent: ModelVersion | None = None) -> ModelVersion:
    """Record a model's identity (idempotent: the same files give the same row), optionally activating it."""
    from ml.prompts import AFFECTGPT_PROMPT_VERSION, INTERNVL_PROMPT_VERSION  # torch-free

    fields = identify(backend, model=model, adapter=adapter, checkpoint=checkpoint)
    prompt = INTERNVL_PROMPT_VERSION if backend == "internvl" else AFFECTGPT_PROMPT_VERSION
    with transaction.atomic():
        version, created = ModelVersion.objects.get_or_create(
            project=project, name=fields.pop("name"),
            defaults={**fields, "backend": backend, "prompt_version": prompt, "training_run": training_run,
                      "parent": parent})
        if created:
            audit.record("model.registered", version, actor=actor, project=project,
                         changes={"backend": backend, "name": version.name, "base_model": model,
                                  "adapter": adapter or "", "checkpoint": checkpoint or ""})
        if activate and version.status != ModelVersion.Status.ACTIVE:
            _activate(version, actor=actor, action="model.activated")
    return version


# --- status changes ---------------------------------------------------------------------------------------
def _activate(version: ModelVersion, *, actor, action: str) -> ModelVersion:
    """Make `version` its backend's active model; the previous one is retired. Clips that still need humans
    become eligible for pre-labeling again (their old errors may have been this model's)."""
    if (version.metrics or {}).get("files_removed_at"):
        raise RegistryError(f"{version.name} cannot be active again: its adapter files were removed "
                            f"(config.training.keep_retired_days)")
    now = timezone.now()
    with transaction.atomic():
        # Lock the project's versions of this backend: two promotions at once serialise here.
        list(ModelVersion.objects.select_for_update().filter(project=version.project, backend=version.backend))
        previous = ModelVersion.objects.filter(project=version.project, backend=version.backend,
                                               status=ModelVersion.Status.ACTIVE).exclude(pk=version.pk).first()
        if previous is not None:
            ModelVersion.objects.filter(pk=previous.pk).update(status=ModelVersion.Status.RETIRED, retired_at=now)
        ModelVersion.objects.filter(pk=version.pk).update(status=ModelVersion.Status.ACTIVE, promoted_at=now,
                                                          retired_at=None)
        audit.record(action, version, actor=actor, project=version.project,
                     changes={"backend": version.backend, "active": version.name,
                              "previous": previous.name if previous else None})
        from . import prelabel

        prelabel.models_changed(version.project)
    version.refresh_from_db()
    return version


def promote(version: ModelVersion, *, actor=None) -> ModelVersion:
    if version.status == ModelVersion.Status.ACTIVE:
        raise RegistryError(f"{version.name} is already active")
    return _activate(version, actor=actor, action="model.promoted")


def roll_back(project: Project, backend: str, *, actor=None) -> ModelVersion:
    """Re-activate the version that was active before the current one."""
    previous = (ModelVersion.objects.filter(project=project, backend=backend, status=ModelVersion.Status.RETIRED,
                                            promoted_at__isnull=False).order_by("-retired_at", "-pk").first())
    if previous is None:
        raise RegistryError(f"{backend}: no earlier active version to roll back to")
    return _activate(previous, actor=actor, action="model.rolled_back")


def retire(version: ModelVersion, *, actor=None) -> ModelVersion:
    """Take a version out of service; if it was active, its backend has no active model until one is promoted."""
    if version.status == ModelVersion.Status.RETIRED:
        raise RegistryError(f"{version.name} is already retired")
    with transaction.atomic():
        was_active = version.status == ModelVersion.Status.ACTIVE
        ModelVersion.objects.filter(pk=version.pk).update(status=ModelVersion.Status.RETIRED,
                                                          retired_at=timezone.now())
        audit.record("model.retired", version, actor=actor, project=version.project,
                     changes={"backend": version.backend, "name": version.name, "was_active": was_active})
    version.refresh_from_db()
    return version


# --- what the configuration asks for ---------------------------------------------------------------------
def active_versions(project: Project) -> dict[str, ModelVersion]:
    return {v.backend: v for v in ModelVersion.objects.filter(project=project, status=ModelVersion.Status.ACTIVE)}


def unregistered_backends(project: Project, active: dict[str, ModelVersion] | None = None) -> list[str]:
    """Enabled backends with no active version, or whose active version is on another base than the
    configured one. An active version with another adapter or checkpoint on the configured base stands (a
    promotion chose it); a configuration change of adapter or checkpoint registers anew
    (`changed_model_backends`)."""
    active = active_versions(project) if active is None else active
    return [name for name, spec in project_config(project).backends().items()
            if active.get(name) is None or active[name].base_model != spec.model]


def changed_model_backends(changes: dict) -> list[str]:
    """The backends whose model, adapter or checkpoint a configuration diff changed."""
    out = []
    for name in BACKENDS:
        prefix = f"config.prelabel.backends.{name}"
        if any(path == prefix or path in (f"{prefix}.model", f"{prefix}.adapter", f"{prefix}.checkpoint")
               for path in changes):
            out.append(name)
    return out


def register_configured(project: Project, backends: list[str] | None = None, *, actor=None) -> dict[str, str]:
    """Register and activate the configured model of every backend that needs it (worker side). Returns
    {backend: version name or error}; an error is also recorded on the clips waiting for that backend, so
    the beat job does not send the registration again until the configuration or the files change."""
    from . import prelabel

    outcome: dict[str, str] = {}
    try:
        config = project_config(project)
    except ConfigError as exc:
        return {"config": str(exc)}
    wanted = set(unregistered_backends(project)) | set(backends or ())
    for name in [n for n in BACKENDS if n in wanted and n in config.backends()]:
        spec = config.backends()[name]
        try:
            version = register_model(project, name, model=spec.model, adapter=getattr(spec, "adapter", None),
                                     checkpoint=getattr(spec, "checkpoint", None), activate=True, actor=actor)
            outcome[name] = version.name
        except RegistryError as exc:
            outcome[name] = f"error: {exc}"
            prelabel.mark_waiting_clips(project, f"{name}: {exc}")
    return outcome


def check_models(project: Project | None = None) -> list[tuple[ModelVersion, str]]:
    """Verify every active model's files against its registered identity; [(version, "ok" or the problem)]."""
    out = []
    versions = ModelVersion.objects.filter(status=ModelVersion.Status.ACTIVE).select_related("project")
    if project is not None:
        versions = versions.filter(project=project)
    for version in versions.order_by("project__name", "backend"):
        try:
            found = identify(version.backend, model=version.base_model, adapter=version.adapter_path or None,
                             checkpoint=version.checkpoint_path or None)
        except RegistryError as exc:
            out.append((version, str(exc)))
            continue
        problems = [f"{key} is {found[key]!r}, registered {getattr(version, key)!r}"
                    for key in ("name", "adapter_sha256", "checkpoint_sha256", "base_fingerprint")
                    if found[key] != getattr(version, key) and (key != "base_fingerprint" or version.base_fingerprint)]
        out.append((version, "; ".join(problems) or "ok"))
    return out

