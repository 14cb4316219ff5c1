"""Predictions from elsewhere: one model's answers in a MER-OV CSV (`name,openset`), stored like a worker's.

This gives label chips, fused labels and an annotation order without a GPU (tests, the demo, users' own
models). It runs wherever the database is, the web image included: no torch on this path.

- **Parsing.** Each `openset` cell is the model's raw answer and goes through `ml.labels.analyse`, the parser
  the GPU backends use (`ml.scoring.scored_labels`), here with the project's vocabulary. `expect_json` is off:
  a MER-OV answer is a comma list, not a JSON one. Labels are canonical terms with `score` None (a CSV carries
  no token probabilities), and the prediction keeps the parser's flags (`empty`, `refusal`, `unknown_terms`).
  A CSV cannot tell whether the model's answer was cut off, so `truncated` is never set here.
- **The model.** An imported model has no files here, so it is not identified (`registry.identify` hashes
  files). Its registry row is named `<backend>:<V>`, after the registry's `<backend>:…` identities, so that
  one V imported for two backends gives two rows (names are unique per project). It has no `base_model`
  (the mark of an imported row), no prompt version, and stays a *candidate*: the import never activates
  anything, so the GPU plan (`services/prelabel.plan`) and the active versions are untouched; GPU workers
  keep running and wanting their own versions. (Were an imported row promoted for a configured backend,
  `plan` would find its base unlike the configured one and register the configured model again.) The row is
  reused by later imports of the same backend and V; a name held by a model registered from its files, or by
  another backend, is refused. Predictions carry the row's name as their `model_version`.
- **Fusion and scoring.** Each clip that got a new prediction is fused and scored by the worker's own step
  (`prelabel_run.fuse_and_score`), over one prediction per backend the clip has: the imported one for this
  backend; for each other backend its active registry version's, else its newest (so two imported backends
  fuse with each other). The fused version names that set, so the same set is never fused twice.
- **Bad input.** The whole file is read and checked before anything is written. A broken file (unreadable,
  not UTF-8, not CSV, no `name` and `openset` columns) raises `PredictionImportError` and stores nothing.
  Every row gets an outcome: imported, skipped (a repeated row, or an answer already stored for this model
  version: re-running a file adds nothing) or error (a malformed row, an unknown or unready clip, a second
  answer that differs from the first or from the stored one). Stored predictions are never replaced.
- **Atomic per batch of rows** (`BATCH`). A batch's predictions, their clips' fused predictions and
  priorities, and its audit event (the run's id, file hash and counts, the clips) commit together or not at
  all, so a clip never keeps a prediction without its fusion, and an interrupted run leaves whole batches:
  running the file again completes it, since stored rows are skipped. Not one transaction per run: on the
  embedded SQLite a transaction holds the database's only write lock, and a 10,000-row file (~15 s here)
  would stall every annotator's autosave behind it. Not one per row: a row is never half-useful, and
  thousands of audit events per file say less than a few. Rows that fail are decided before any write and
  never abort a batch.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from django.db import transaction

from ..models import Clip, ModelVersion, Prediction, Project
from ..project_config import ConfigError, project_config
from . import audit

COLUMNS = ("name", "openset")
BACKEND_NAME = re.compile(r"[a-z][a-z0-9_-]{0,15}")  # ModelVersion.backend holds 16 characters
RESERVED_BACKENDS = ("fused",)  # the fusion's own rows
NAME_MAX = 200  # ModelVersion.name and Prediction.model_version
CHUNK = 500  # ids per IN (...) query
# Rows per transaction: on SQLite a transaction holds the database's one write lock, and annotators' saves
# wait at most 20 s for it; 200 rows take about 0.3 s here.
BATCH = 200


class PredictionImportError(ValueError):
    """The file or the options cannot be imported at all; nothing was stored. Safe to show."""


@dataclass(frozen=True)
class Row:
    line: int
    name: str
    answer: str


@dataclass(frozen=True)
class Outcome:
    status: str  # imported | skipped | error
    line: int
    name: str
    reason: str

    def text(self) -> str:
        where = f"{_shown(self.name)} (line {self.line})" if self.name else f"line {self.line}"
        return f"{self.status} {where}: {self.reason}"


@dataclass
class ImportResult:
    name: str  # the model version's registry name
    model: ModelVersion | None
    outcomes: list[Outcome] = field(default_factory=list)
    fused: int = 0

    def count(self, status: str) -> int:
        return sum(1 for outcome in self.outcomes if outcome.status == status)

    def summary(self) -> str:
        return (f"imported {self.count('imported')}, skipped {self.count('skipped')}, errors {self.count('error')} "
                f"({self.name}; {self.fused} clip(s) fused and scored)")


def model_version_name(backend: str, version: str) -> str:
    """The registry name (and prediction version) of an imported model: `<backend>:<version>`."""
    if not BACKEND_NAME.fullmatch(backend or "") or backend in RESERVED_BACKENDS:
        raise PredictionImportError(
            f"backend {backend!r} must be 1-16 lowercase letters, digits, '-' or '_', starting with a letter, "
            f"and not {' or '.join(RESERVED_BACKENDS)}")
    version = (version or "").strip()
    if not version or not version.isprintable() or any(ch.isspace() for ch in version):
        raise PredictionImportError(f"model version {version!r} must be non-empty, without spaces")
    name = version if version.startswith(f"{backend}:") else f"{backend}:{version}"
    if len(name) > NAME_MAX:
        raise PredictionImportError(f"model version {name[:40]!r}... is longer than {NAME_MAX} characters")
    return name


def read_rows(data: bytes) -> tuple[list[Row], list[Outcome]]:
    """The rows of a `name,openset` file, and an error outcome for each malformed one. Raises
    PredictionImportError when the file as a whole cannot be read as such a CSV."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise PredictionImportError(
            f"the file is not UTF-8 (line {line}: byte 0x{data[exc.start]:02x} at offset {exc.start})") from None
    if "\x00" in text:  # binary, and PostgreSQL text cannot hold it
        line = text.count("\n", 0, text.index("\x00")) + 1
        raise PredictionImportError(f"the file is not valid CSV (line {line}): it contains a NUL byte")
    # strict: a stray quote is an error to report, not a cell to guess.
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    rows, errors = [], []
    try:
        header = [cell.strip().lower() for cell in next(reader, [])]
        if not header:
            raise PredictionImportError("the file is empty (expected the header name,openset)")
        if any(column not in header for column in COLUMNS) or len(set(header)) != len(header):
            raise PredictionImportError(
                f"the header must name the columns name,openset once each (MER-OV); found: "
                f"{_shown(','.join(header))}")
        name_at, answer_at = header.index("name"), header.index("openset")
        while True:
            line = reader.line_num + 1
            record = next(reader, None)
            if record is None:
                break
            if not any(cell.strip() for cell in record):
                continue
            if len(record) > len(header) and answer_at == len(header) - 1:
                # An unquoted answer "happy, sad" spills into extra fields: they can only be its own.
                record = record[:answer_at] + [",".join(record[answer_at:])]
            if len(record) != len(header):
                errors.append(Outcome("error", line, "", f"{len(record)} field(s), the header has {len(header)}"))
                continue
            name = record[name_at].strip()
            if not name:
                errors.append(Outcome("error", line, "", "empty name"))
                continue
            rows.append(Row(line, name, record[answer_at]))
    except csv.Error as exc:
        raise PredictionImportError(f"the file is not valid CSV (line {reader.line_num}): {exc}") from None
    return rows, errors


def import_predictions(project: Project, path: Path, *, backend: str, model_version: str,
                       actor=None) -> ImportResult:
    """Store the file's answers as `backend` predictions of model version `model_version`, then fuse and score
    the clips that got one. See the module docstring for every rule."""
    from ml.labels import analyse  # torch-free

    from . import prelabel, prelabel_run
    from .vocabulary import project_vocabulary

    name = model_version_name(backend, model_version)
    existing = ModelVersion.objects.filter(project=project, name=name).first()
    _check_reusable(existing, backend)
    try:
        config = project_config(project)
    except ConfigError as exc:
        raise PredictionImportError(f"the project's configuration is invalid: {exc}") from None
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise PredictionImportError(f"cannot read {Path(path).name}: {exc.strerror}") from None
    rows, outcomes = read_rows(data)
    result = ImportResult(name, existing, outcomes)

    first: dict[str, Row] = {}
    unique = []
    for row in rows:
        seen = first.get(row.name)
        if seen is None:
            first[row.name] = row
            unique.append(row)
        elif seen.answer == row.answer:
            outcomes.append(Outcome("skipped", row.line, row.name, f"repeats line {seen.line}"))
        else:
            outcomes.append(Outcome("error", row.line, row.name,
                                    f"a second, different answer for this clip (line {seen.line}'s is imported)"))

    clips = {clip.name: clip for names in _chunks([r.name for r in unique])
             for clip in project.clips.filter(name__in=names)}
    stored = {}
    for ids in _chunks([clip.pk for clip in clips.values()]):
        stored.update(Prediction.objects.filter(model_version=name, clip_id__in=ids).values_list("clip_id", "raw_text"))
    todo: list[tuple[Row, Clip]] = []
    for row in unique:
        clip = clips.get(row.name)
        if clip is None:
            outcomes.append(Outcome("error", row.line, row.name, f"no clip of this name in project {project.name!r}"))
        elif clip.pk in stored:
            if stored[clip.pk] == row.answer:
                outcomes.append(Outcome("skipped", row.line, row.name, f"already imported as {name}"))
            else:
                outcomes.append(Outcome("error", row.line, row.name,
                                        f"{name} already has another answer for this clip; predictions are never "
                                        f"replaced: import this file under a new --model-version"))
        elif clip.status != Clip.Status.READY:
            outcomes.append(Outcome("error", row.line, row.name,
                                    f"the clip is {clip.status}, not ready: import again once it is"))
        else:
            todo.append((row, clip))

    vocabulary, current = project_vocabulary(project), prelabel.plan(project)
    batches = [todo[i:i + BATCH] for i in range(0, len(todo), BATCH)]
    event = {"sha256": hashlib.sha256(data).hexdigest(), "run": uuid.uuid4().hex,
             "backend": backend, "model_version": name, "skipped": result.count("skipped"),
             "errors": result.count("error")}
    for number, batch in enumerate(batches, start=1):
        with transaction.atomic():
            result.model = _model_version(project, backend, name, actor)
            new: list[Clip] = []
            for row, clip in batch:
                parsed = analyse(row.answer, vocabulary, expect_json=False)
                pred = _prediction(clip, parsed, row.answer, backend, name)
                if prelabel_run.store_prediction(clip, pred, backend=backend, model=result.model,
                                                 prompt_version=""):
                    new.append(clip)
                    labels = ", ".join(parsed.terms) or "no labels"
                    flags = f" [{', '.join(parsed.flags)}]" if parsed.flags else ""
                    outcomes.append(Outcome("imported", row.line, row.name, f"{labels}{flags}"))
                else:  # stored meanwhile by a concurrent import of the same model version
                    outcomes.append(Outcome("skipped", row.line, row.name,
                                            f"already stored for {name} by a concurrent import"))
            members = _fusion_members(current, new, backend, name)
            fused = prelabel_run.fuse_and_score(project, config, members)
            result.fused += len(fused)
            if new:
                audit.record("predictions.imported", result.model, actor=actor, project=project, changes={
                    **event, "batch": f"{number}/{len(batches)}", "imported": len(new), "fused": len(fused),
                    "clips": [clip.pk for clip in new]})
    result.outcomes.sort(key=lambda outcome: outcome.line)
    return result


def _check_reusable(version: ModelVersion | None, backend: str) -> None:
    if version is None:
        return
    if version.base_model:
        raise PredictionImportError(f"{version.name} is a model registered from its files; imported predictions "
                                    f"need a --model-version of their own")
    if version.backend != backend:
        raise PredictionImportError(f"{version.name} is already a model of backend {version.backend!r}")


def _model_version(project: Project, backend: str, name: str, actor) -> ModelVersion:
    """The imported model's registry row, made on first use (a candidate without files, never activated)."""
    version, created = ModelVersion.objects.get_or_create(
        project=project, name=name, defaults={"backend": backend, "base_model": "", "prompt_version": ""})
    _check_reusable(version, backend)  # again: registered meanwhile
    if created:
        audit.record("model.registered", version, actor=actor, project=project,
                     changes={"backend": backend, "name": name, "imported": True})
    return version


def _prediction(clip: Clip, parsed, answer: str, backend: str, name: str):
    from ml.types import Label
    from ml.types import Prediction as MLPrediction

    return MLPrediction(clip_id=str(clip.pk), labels=[Label(term, None, backend) for term in parsed.terms],
                        raw_text=answer, model_version=name, prompt_tokens=0,
                        seconds=None, flags=list(parsed.flags))  # seconds: unknown, the model ran elsewhere


def _fusion_members(plan, clips: list[Clip], backend: str, name: str) -> dict[Clip, list[str]]:
    """Per clip, the prediction version of each backend that counts: the import for `backend`; for another
    backend its active registry version's when the clip has it, else its newest."""
    active = {run.backend: run.version for run in plan.runs}
    chosen: dict[int, dict[str, str]] = {clip.pk: {backend: name} for clip in clips}
    for ids in _chunks(list(chosen)):
        rows = (Prediction.objects.filter(clip_id__in=ids).exclude(backend__in=[backend, *RESERVED_BACKENDS])
                .order_by("clip_id", "-id").values_list("clip_id", "backend", "model_version"))
        for clip_id, other, version in rows:  # newest first
            if other not in chosen[clip_id] or version == active.get(other):
                chosen[clip_id][other] = version
    return {clip: list(chosen[clip.pk].values()) for clip in clips}


def _chunks(items: list) -> Iterator[list]:
    for start in range(0, len(items), CHUNK):
        yield items[start:start + CHUNK]


def _shown(text: str, limit: int = 80) -> str:
    """A name or header from the file as a report line can show it: printable, one line, bounded."""
    shown = text if text.isprintable() else ascii(text)[1:-1]
    return shown if len(shown) <= limit else shown[:limit] + "..."
