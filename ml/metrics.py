"""Emotion-wheel (EW) metric of OV-MER, and set-agreement measures for annotators.

Stdlib only; openpyxl is imported inside the loader, so importing this module stays cheap.
The wheel data files are research data read from a directory given at run time, never shipped.
"""

from __future__ import annotations

import ast
import csv
import functools
import os
import re
import zipfile
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from ml.vocabulary import Vocabulary

WHEEL_DIR_ENV = "AFFECTLOOP_WHEEL_DIR"
REFERENCE_DIR_ENV = "AFFECTLOOP_REFERENCE_DIR"
# The OV-MER reference data (emotion wheel, OV-MERD, AffectGPT layout) that tests and benchmarks read:
# research data under its own terms, so it lives beside the checkout (../shared/reference), never in it.
REFERENCE_DIR = Path(os.environ.get(REFERENCE_DIR_ENV)
                     or Path(__file__).resolve().parents[1].parent / "shared" / "reference")
N_WHEELS = 5


class WheelDataError(ValueError):
    """The wheel directory is missing or one of its files is malformed."""


class Scores(NamedTuple):
    f: float
    precision: float
    recall: float
    n: int


def _norm(word: object) -> str:
    return str(word).strip().lower()


@dataclass(frozen=True, eq=False)
class EmotionWheel:
    forms: Mapping[str, frozenset[str]]  # surface form -> base words
    synonym_of: Mapping[str, frozenset[str]]  # base word -> the wheel words it is, or is a synonym of
    # per wheel: (word -> its level-1 word, word -> its level-2 word)
    levels: tuple[tuple[Mapping[str, str], Mapping[str, str]], ...]
    # Scoring is called in loops (fitting fusion thresholds); the label -> cluster lookup dominates it.
    _clusters: dict[tuple[str, int, int], str | None] = field(default_factory=dict, init=False, repr=False)

    def candidates(self, label: str) -> tuple[str, ...]:
        """Every wheel word reachable from the label, sorted: the official tie-break is alphabetical."""
        words: set[str] = set()
        for base in self.forms.get(_norm(label), ()):
            words |= self.synonym_of.get(base, frozenset())
        return tuple(sorted(words))

    def cluster(self, label: str, wheel: int, level: int = 1) -> str | None:
        key = (label, wheel, level)
        if key not in self._clusters:
            mapping = self.levels[wheel][level - 1]
            self._clusters[key] = next((mapping[w] for w in self.candidates(label) if w in mapping), None)
        return self._clusters[key]


def default_wheel_dir() -> Path | None:
    if env := os.environ.get(WHEEL_DIR_ENV):
        return Path(env)
    sibling = REFERENCE_DIR / "emotion_wheel"
    return sibling if sibling.is_dir() else None


def load_wheel(wheel_dir: str | os.PathLike[str] | None = None) -> EmotionWheel:
    """Load (once per directory) format.csv, synonym.xlsx and wheel1..5.xlsx."""
    path = Path(wheel_dir) if wheel_dir is not None else default_wheel_dir()
    if path is None:
        raise WheelDataError(f"no emotion-wheel directory: pass one or set {WHEEL_DIR_ENV}")
    return _load_wheel(path.resolve())


@functools.lru_cache(maxsize=8)
def _load_wheel(path: Path) -> EmotionWheel:
    if not path.is_dir():
        raise WheelDataError(f"emotion-wheel directory not found: {path}")
    return EmotionWheel(_read_forms(path / "format.csv"), _read_synonyms(path / "synonym.xlsx"),
                        tuple(_read_levels(path / f"wheel{i}.xlsx") for i in range(1, N_WHEELS + 1)))


def _read_forms(path: Path) -> dict[str, frozenset[str]]:
    forms: dict[str, set[str]] = {}
    for line, row in _read_csv(path, {"name", "format"}):
        base = _norm(row["name"] or "")
        if not base:
            raise WheelDataError(f"{path}, line {line}: no base word")
        # A base word counts as its own form: one base ('no words') lists none.
        for form in {base, *map(_norm, (row["format"] or "").split(","))} - {""}:
            forms.setdefault(form, set()).add(base)
    return {form: frozenset(bases) for form, bases in forms.items()}


def _read_synonyms(path: Path) -> dict[str, frozenset[str]]:
    header, rows = _read_xlsx(path)
    runs = sorted(int(m[1]) for h in header if (m := re.fullmatch(r"word_run(\d+)", h)))
    if not runs or any(f"synonym_run{r}" not in header for r in runs):
        raise WheelDataError(f"{path}: expected columns word_runN / synonym_runN, got {header}")
    synonym_of: dict[str, set[str]] = {}
    for row in rows:
        for run in runs:
            word = _norm(row[header.index(f"word_run{run}")] or "")
            if not word:
                continue
            # The mapping runs synonym -> wheel word (and a wheel word reaches itself); the reverse
            # direction does not reproduce the published figures.
            synonyms = str(row[header.index(f"synonym_run{run}")] or "").split(",")
            for synonym in {word, *map(_norm, synonyms)} - {""}:
                synonym_of.setdefault(synonym, set()).add(word)
    return {s: frozenset(words) for s, words in synonym_of.items()}


def _read_levels(path: Path) -> tuple[dict[str, str], dict[str, str]]:
    header, rows = _read_xlsx(path)
    try:
        cols = [header.index(f"level{i}") for i in (1, 2, 3)]
    except ValueError:
        raise WheelDataError(f"{path}: expected columns level1, level2, level3, got {header}") from None
    level1: dict[str, str] = {}
    level2: dict[str, str] = {}
    children: dict[str, set[str]] = {}
    current: list[str] = ["", "", ""]
    for i, row in enumerate(rows, start=2):
        cells = [_norm(row[c]) if row[c] is not None else "" for c in cols]
        current = [cell or above for cell, above in zip(cells, current)]
        if not all(current):
            raise WheelDataError(f"{path}: row {i} has a blank cell with no value above it")
        inner, middle, outer = current
        # A word listed twice in one wheel (e.g. 'overwhelmed' in wheel 2) takes its last row's
        # clusters: keeping the first one does not reproduce the published figures.
        level1.update({inner: inner, middle: inner, outer: inner})
        level2.update({middle: middle, outer: middle})
        children.setdefault(inner, set()).add(middle)
    level2.update({inner: min(kids) for inner, kids in children.items()})
    return level1, level2


def _read_csv(path: Path, required: set[str]) -> list[tuple[int, dict[str, str]]]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            if not required <= set(reader.fieldnames or ()):
                raise WheelDataError(f"{path}: expected columns {sorted(required)}, got {reader.fieldnames}")
            return [(reader.line_num, row) for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise WheelDataError(f"cannot read {path}: {exc}") from None


def _read_xlsx(path: Path) -> tuple[list[str], list[tuple[object, ...]]]:
    try:
        import openpyxl
        from openpyxl.utils.exceptions import InvalidFileException
    except ImportError:
        raise WheelDataError("reading the emotion wheel needs openpyxl (pip install openpyxl)") from None
    try:
        book = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, InvalidFileException) as exc:
        raise WheelDataError(f"cannot read {path}: {exc}") from None
    try:
        rows = [row for row in book.active.iter_rows(values_only=True) if any(c is not None for c in row)]
    finally:
        book.close()
    if not rows:
        raise WheelDataError(f"{path}: empty sheet")
    return [_norm(h or "") for h in rows[0]], rows[1:]


# --- the metric ---------------------------------------------------------------------------------

def _per_wheel(gt_labels: Iterable[str], pred_labels: Iterable[str], wheel: EmotionWheel,
               level: int) -> list[tuple[float, float] | None]:
    """One sample's (precision, recall) on each wheel; None where its ground truth maps to nothing."""
    if level not in (1, 2):
        raise ValueError(f"level must be 1 or 2, got {level}")
    out: list[tuple[float, float] | None] = []
    for i in range(len(wheel.levels)):
        g = {c for label in gt_labels if (c := wheel.cluster(label, i, level)) is not None}
        p = {c for label in pred_labels if (c := wheel.cluster(label, i, level)) is not None}
        hit = len(g & p)
        out.append(None if not g else (0.0, 0.0) if not p else (hit / len(p), hit / len(g)))
    return out


def _mean_pr(pairs: Sequence[tuple[float, float]]) -> tuple[float, float]:
    return sum(p for p, _ in pairs) / len(pairs), sum(r for _, r in pairs) / len(pairs)


def sample_scores(gt_labels: Sequence[str], pred_labels: Sequence[str], wheel: EmotionWheel,
                  level: int = 1) -> tuple[float, float] | None:
    """(precision, recall) of one sample, averaged over the wheels that do not skip it."""
    scored = [s for s in _per_wheel(gt_labels, pred_labels, wheel, level) if s is not None]
    return _mean_pr(scored) if scored else None


def wheel_scores(gt: Mapping[str, Sequence[str]], pred: Mapping[str, Sequence[str]], wheel: EmotionWheel,
                 level: int = 1) -> Scores:
    """Dataset EW score: per wheel, F of the sample-averaged P and R; then the mean over wheels."""
    by_wheel: list[list[tuple[float, float]]] = [[] for _ in wheel.levels]
    for name, labels in gt.items():
        for scored, s in zip(by_wheel, _per_wheel(labels, pred.get(name, ()), wheel, level)):
            if s is not None:
                scored.append(s)
    fpr = [(2 * p * r / (p + r) if p + r else 0.0, p, r) for p, r in map(_mean_pr, filter(None, by_wheel))]
    if not fpr:
        return Scores(0.0, 0.0, 0.0, len(gt))
    f, p, r = (sum(col) / len(fpr) for col in zip(*fpr))
    return Scores(f, p, r, len(gt))


def vocabulary_scores(gt: Mapping[str, Sequence[str]], pred: Mapping[str, Sequence[str]],
                      vocabulary: Vocabulary, level: str = "family") -> Scores:
    """The wheel metric's set-level P/R/F with the project's vocabulary as the one "wheel": each label maps
    to its canonical term or its family; a word the vocabulary does not know maps to itself, so it only
    matches the same word. Samples without ground truth are skipped; an empty prediction scores 0."""
    if level not in ("family", "term"):
        raise ValueError(f"level must be 'family' or 'term', got {level!r}")

    def mapped(labels: Iterable[str]) -> set[tuple[str, str]]:
        out: set[tuple[str, str]] = set()
        for label in labels:
            if entry := vocabulary.lookup(label):
                out.add(("known", entry.family if level == "family" else entry.term))
            elif word := _norm(label):
                out.add(("unknown", word))  # tagged so that an unknown word never equals a family name
        return out

    pairs: list[tuple[float, float]] = []
    for name, labels in gt.items():
        g, p = mapped(labels), mapped(pred.get(name, ()))
        if g:
            hit = len(g & p)
            pairs.append((hit / len(p), hit / len(g)) if p else (0.0, 0.0))
    if not pairs:
        return Scores(0.0, 0.0, 0.0, len(gt))
    precision, recall = _mean_pr(pairs)
    f = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return Scores(f, precision, recall, len(gt))


def read_splits(path: str | os.PathLike[str]) -> dict[str, str]:
    """A `name,split` file (OV-MERD's split.csv) → name → split."""
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        if not {"name", "split"} <= set(reader.fieldnames or ()):
            raise ValueError(f"{path}: expected columns name, split, got {reader.fieldnames}")
        return {row["name"].strip(): (row["split"] or "").strip() for row in reader}


def read_predictor_dir(path: str | os.PathLike[str]) -> dict[str, dict[str, list[str]]]:
    """Every `name,openset` CSV in a folder → file stem (the predictor) → name → labels."""
    return {p.stem: read_label_csv(p) for p in sorted(Path(path).glob("*.csv"))}


class OVMERD(NamedTuple):
    """The OV-MERD reference set: wheel, ground truth, dev/test split and every predictor file."""

    wheel: EmotionWheel
    gt: dict[str, list[str]]
    splits: dict[str, str]
    predictors: dict[str, dict[str, list[str]]]

    def split(self, name: str) -> dict[str, list[str]]:
        return {clip: labels for clip, labels in self.gt.items() if self.splits.get(clip) == name}


def load_ovmerd(reference: str | os.PathLike[str]) -> OVMERD:
    """Read `<reference>/ovmerd` and `<reference>/emotion_wheel`; FileNotFoundError when absent."""
    root = Path(reference)
    if not (root / "ovmerd").is_dir():
        raise FileNotFoundError(f"reference data not found: {root / 'ovmerd'}")
    return OVMERD(load_wheel(root / "emotion_wheel"), read_label_csv(root / "ovmerd" / "gt.csv"),
                  read_splits(root / "ovmerd" / "split.csv"), read_predictor_dir(root / "ovmerd" / "predictions"))


def read_label_csv(path: str | os.PathLike[str]) -> dict[str, list[str]]:
    """Read `name,openset` where openset is `['a', 'b']` or, as AffectGPT writes it, `[a, b]`."""
    out: dict[str, list[str]] = {}
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        if not {"name", "openset"} <= set(reader.fieldnames or ()):
            raise ValueError(f"{path}: expected columns name, openset, got {reader.fieldnames}")
        for row in reader:
            name = (row["name"] or "").strip()
            where = f"{path}, line {reader.line_num} ({name!r})"
            if not name or name in out:
                raise ValueError(f"{where}: {'duplicate' if name else 'empty'} name")
            out[name] = _parse_labels((row["openset"] or "").strip(), where)
    return out


def _parse_labels(cell: str, where: str) -> list[str]:
    if not cell:
        return []
    try:
        value = ast.literal_eval(cell)
    except (ValueError, SyntaxError):
        if not (cell.startswith("[") and cell.endswith("]")):
            raise ValueError(f"{where}: malformed openset cell {cell!r}") from None
        value = [item.strip().strip("'\"") for item in cell[1:-1].split(",")]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{where}: openset must be a list of strings, got {cell!r}")
    return [v.strip() for v in value if v.strip()]


# --- agreement between annotators ---------------------------------------------------------------

def jaccard(a: Iterable[str], b: Iterable[str]) -> float:
    a, b = set(a), set(b)
    return len(a & b) / len(a | b) if a or b else 1.0


def masi_distance(a: Iterable[str], b: Iterable[str]) -> float:
    """Passonneau's MASI distance, 1 - J*M; two empty sets are equal (distance 0)."""
    a, b = set(a), set(b)
    if a == b:
        return 0.0
    inter = a & b
    monotonicity = 0.67 if inter in (a, b) else 0.33 if inter else 0.0
    return 1.0 - jaccard(a, b) * monotonicity


def observed_disagreement(units: Sequence[Sequence[Iterable[str]]],
                          distance: Callable[[frozenset[str], frozenset[str]], float] = masi_distance,
                          ) -> tuple[Counter, int, float]:
    """Alpha's observed side: (how often each value was coded in units with >= 2 codings, n of those
    codings, D_o). ValueError when no unit has two codings."""
    pairable = [[frozenset(v) for v in unit] for unit in units if len(unit) >= 2]
    n = sum(len(unit) for unit in pairable)
    if not n:
        raise ValueError("no unit has two or more codings")
    # Ordered pairs within a unit, each unit weighted 1/(m_u - 1): Krippendorff's coincidence counts.
    observed = sum(sum(distance(x, y) for i, x in enumerate(unit) for j, y in enumerate(unit) if i != j)
                   / (len(unit) - 1) for unit in pairable) / n
    return Counter(v for unit in pairable for v in unit), n, observed


def krippendorff_alpha(units: Sequence[Sequence[Iterable[str]]],
                       distance: Callable[[frozenset[str], frozenset[str]], float] = masi_distance) -> float:
    """Krippendorff's alpha = 1 - D_o/D_e over pairable values (units with >= 2 codings)."""
    counts, n, observed = observed_disagreement(units, distance)
    if observed == 0:
        return 1.0
    expected = sum(counts[x] * counts[y] * distance(x, y) for x in counts for y in counts if x != y)
    expected /= n * (n - 1)
    return 1.0 - observed / expected


def krippendorff_alpha_masi(units: Sequence[Sequence[Iterable[str]]]) -> float:
    """Pure Python, as the web side may use it; ml.agreement sums the same with numpy for many label sets."""
    return krippendorff_alpha(units, masi_distance)


def krippendorff_alpha_binary(units: Iterable[tuple[int, int]], values: int) -> float | None:
    """Krippendorff's alpha with nominal distance on a present/absent value, from counts: `units` gives (coders,
    coders with the value present) for every unit where someone has it present, `values` the number of
    pairable values over ALL units. The same figure as krippendorff_alpha with a 0/1 distance,
    without a Python loop over the units where nobody has it:
    D_o = sum over units of 2 k (m - k) / (m - 1), over n; D_e = 2 P (n - P) / (n (n - 1))."""
    if values < 2:
        return None
    units = list(units)
    observed = sum(2 * k * (m - k) / (m - 1) for m, k in units) / values
    if observed == 0:
        return 1.0
    present = sum(k for _, k in units)
    expected = 2 * present * (values - present) / (values * (values - 1))
    return 1.0 - observed / expected
