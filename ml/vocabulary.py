"""The project's own emotion vocabulary: canonical terms with family, valence, word forms and synonyms.

The default vocabulary (``ml/data/emotion_vocabulary.json``) was authored for Affectloop from public
emotion taxonomies (Parrott's tree, Plutchik's wheel with its intensities and dyads, the Willcox
feeling wheel) plus the words multimodal LLMs emit when describing people on video. A project can
load its own edited copy with ``Vocabulary.from_records``. Standard library only: the web process
and ``ml.labels`` import this module.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path

DEFAULT_PATH = Path(__file__).resolve().parent / "data" / "emotion_vocabulary.json"

FAMILIES = frozenset({
    "joy", "love", "trust", "calm", "interest", "thought", "surprise", "confusion",
    "fear", "sadness", "anger", "disgust", "shame", "confidence",
    "neutral",  # flat, detached or unemotional states
    "general",  # valence-only or unspecific labels: positive, negative, mixed, emotional
    "unassigned",  # proposed by an annotator, waiting for a manager to place it
})
UNASSIGNED = "unassigned"
VALENCES = frozenset({"positive", "negative", "neutral", "ambiguous"})


class VocabularyError(ValueError):
    """The vocabulary breaks a consistency rule; the message names the offending entry."""


def normalise(word: str) -> str:
    """The lookup key of a surface form: lowercase, trimmed, and with hyphens, underscores and runs of
    spaces folded to one space, so "light-hearted", "light hearted" and "Light_Hearted" meet."""
    return re.sub(r"[\s\-_‐-―]+", " ", word.strip().lower()).strip()


@dataclass(frozen=True)
class Term:
    term: str
    family: str
    valence: str
    synonyms: tuple[str, ...] = ()
    word_forms: tuple[str, ...] = ()

    @property
    def surface_forms(self) -> tuple[str, ...]:
        """Every string that resolves to this term, the term itself first."""
        return (self.term, *self.word_forms, *self.synonyms)

    def to_record(self) -> dict:
        return {"term": self.term, "family": self.family, "valence": self.valence,
                "word_forms": list(self.word_forms), "synonyms": list(self.synonyms)}


class Vocabulary:
    """Canonical emotion terms, indexed by every surface form. Validated on construction."""

    def __init__(self, terms: Iterable[Term]) -> None:
        self._terms: dict[str, Term] = {}
        self._index: dict[str, Term] = {}
        for term in terms:
            self._add(term)
        self.max_words = max((len(key.split()) for key in self._index), default=0)

    def _add(self, term: Term) -> None:
        for value in (term.term, term.family, term.valence, *term.surface_forms):
            if not value or value != value.strip().lower():
                raise VocabularyError(f"{term.term!r}: {value!r} must be non-empty, lowercase and trimmed")
        if term.family not in FAMILIES:
            raise VocabularyError(f"{term.term!r}: unknown family {term.family!r}")
        if term.valence not in VALENCES:
            raise VocabularyError(f"{term.term!r}: unknown valence {term.valence!r}")
        if term.term in self._terms:
            raise VocabularyError(f"{term.term!r} is defined twice")
        for form in term.surface_forms:
            owner = self._index.setdefault(normalise(form), term)
            if owner.term != term.term:
                raise VocabularyError(f"{form!r} maps to both {owner.term!r} and {term.term!r}")
        self._terms[term.term] = term

    @classmethod
    def from_records(cls, records: Iterable[Mapping]) -> Vocabulary:
        """Build from dicts with keys term, family, valence and optional synonyms, word_forms
        (the shape of the JSON file and of the project's EmotionTerm rows)."""
        try:
            return cls(Term(term=r["term"], family=r["family"], valence=r["valence"],
                            synonyms=tuple(r.get("synonyms") or ()),
                            word_forms=tuple(r.get("word_forms") or ())) for r in records)
        except KeyError as missing:
            raise VocabularyError(f"record without {missing}") from None

    @classmethod
    def from_json(cls, path: str | Path) -> Vocabulary:
        return cls.from_records(json.loads(Path(path).read_text(encoding="utf-8")))

    @classmethod
    @cache
    def default(cls) -> Vocabulary:
        return cls.from_json(DEFAULT_PATH)

    def lookup(self, word: str) -> Term | None:
        return self._index.get(normalise(word))

    def canonical(self, word: str) -> str | None:
        term = self.lookup(word)
        return term.term if term else None

    def family(self, word: str) -> str | None:
        term = self.lookup(word)
        return term.family if term else None

    def valence(self, word: str) -> str | None:
        term = self.lookup(word)
        return term.valence if term else None

    def terms(self) -> Iterator[Term]:
        return iter(self._terms.values())

    def surface_forms(self) -> Iterator[tuple[str, Term]]:
        """(form, term) for every surface form, e.g. to feed autocomplete."""
        return ((form, term) for term in self._terms.values() for form in term.surface_forms)

    def to_records(self) -> list[dict]:
        return [term.to_record() for term in self._terms.values()]

    def __contains__(self, word: object) -> bool:
        return isinstance(word, str) and self.lookup(word) is not None

    def __len__(self) -> int:
        return len(self._terms)
