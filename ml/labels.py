"""Turn a multimodal LLM's free-text answer into a list of emotion labels.

Standard library only: the web process imports this (a test proves that torch and Django stay out).

``parse_labels`` returns the emotion words an answer lists, in order; ``analyse`` also maps them to
the vocabulary's canonical terms and says how the answer was written. Formats are tried from the
most to the least explicit: JSON or python-ish list (also inside a fenced block), a statement such
as "The character's emotional state is a, b and c.", a bullet or numbered list, a bare list such as
"anxious; hesitant", and finally prose, where only words the vocabulary knows count.
"""

from __future__ import annotations

import ast
import json
import re
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ml.vocabulary import Vocabulary

JSON, PYTHON_LIST, STATEMENT, BULLETS, LIST, PROSE = (
    "json", "python_list", "statement", "bullets", "list", "prose")
EMPTY, REFUSAL = "empty", "refusal"
_PUNCTUATION = str.maketrans({"’": "'", "‘": "'", "“": '"', "”": '"', "\ufeff": None})


@dataclass(frozen=True)
class ParsedLabels:
    raw: list[str]
    """The emotion words as the answer wrote them (lowercased, filler removed, de-duplicated)."""
    terms: list[str]
    """Canonical vocabulary terms in order, de-duplicated; unknown words kept as themselves."""
    unknown: list[str]
    """Words of ``raw`` that the vocabulary does not know: kept and flagged, never dropped."""
    refusal: bool
    flags: list[str] = field(default_factory=list)
    """Any of "refusal", "empty", "unknown_terms", "format_ignored"."""
    format: str = EMPTY
    """How the labels were written: json, python_list, statement, bullets, list, prose, empty, refusal."""


def parse_labels(text: str | None, vocabulary: Vocabulary | None = None) -> list[str]:
    return _parse(text or "", vocabulary or Vocabulary.default())[0]


def analyse(text: str | None, vocabulary: Vocabulary | None = None, *,
            expect_json: bool = True) -> ParsedLabels:
    """Parse and canonicalise. ``expect_json`` says whether the prompt asked for a JSON list; when it
    did, labels recovered from any other format are flagged "format_ignored"."""
    vocab = vocabulary or Vocabulary.default()
    raw, fmt = _parse(text or "", vocab)
    terms = _unique(vocab.canonical(word) or word for word in raw)
    unknown = [word for word in raw if word not in vocab]
    flags = [flag for flag, on in (("refusal", fmt == REFUSAL),
                                   ("empty", not raw and fmt != REFUSAL),
                                   ("unknown_terms", bool(unknown)),
                                   ("format_ignored", expect_json and bool(raw) and fmt not in (JSON, EMPTY)))
             if on]
    return ParsedLabels(raw=raw, terms=terms, unknown=unknown, refusal=fmt == REFUSAL, flags=flags,
                        format=fmt)


def _parse(text: str, vocab: Vocabulary) -> tuple[list[str], str]:
    text = text.translate(_PUNCTUATION).strip()
    if not text:
        return [], EMPTY
    fence = _FENCE.search(text)
    if fence:
        text = fence.group(1).strip()
    structured = _structured(text)
    if structured is not None:
        items, fmt = structured
        return _unique(_items(items, vocab)), fmt
    text, refused = _drop_refusals(text)
    for fmt, chunks in ((STATEMENT, _statement(text)), (BULLETS, _bullets(text)),
                        (LIST, _bare_list(text, vocab))):
        labels = _unique(_items(chunks, vocab)) if chunks else []
        if labels:
            return labels, fmt
    labels = _unique(_prose(text, vocab))
    if labels:
        return labels, PROSE
    return [], REFUSAL if refused else EMPTY


# --- structured answers: JSON, python-ish lists, fenced blocks -------------------------------------

_FENCE = re.compile(r"```[\w+-]*[ \t]*\n?(.*?)(?:```|$)", re.DOTALL)
_LABEL_KEY = re.compile(r"emotion|label|feeling|affect|mood|term|tag", re.IGNORECASE)


def _structured(text: str) -> tuple[list[str], str] | None:
    for start in sorted(i for i in (text.find("["), text.find("{")) if i >= 0):
        try:
            value, end = json.JSONDecoder().raw_decode(text, start)
            items = _from_value(value)
            if items is not None or (start, end) == (0, len(text)):  # a whole-JSON answer without labels
                return items or [], JSON
        except (ValueError, RecursionError):  # RecursionError: a model stuck repeating "[[[["
            pass
        end = _closing_bracket(text, start)
        if end is None:
            continue
        span = text[start:end + 1]
        try:
            with warnings.catch_warnings():  # odd text such as "[1j2]" warns while being rejected
                warnings.simplefilter("ignore")
                value = ast.literal_eval(span)
            items = _from_value(value)
            if items is None and span == text:
                items = []
        except (ValueError, SyntaxError, MemoryError, RecursionError, TypeError):
            items = None
            # An unquoted "[a, b]" is a list only when it is the whole answer (after a "Label:" prefix);
            # inside prose, brackets are stage directions like "[laughs]".
            prefix, suffix = text[:start].strip(), text[end + 1:].strip(" .")
            if span[0] == "[" and not re.search(r"[\[\]{}\"']", span[1:-1]) and suffix == "" \
                    and (prefix == "" or prefix.endswith(":")):
                items = span[1:-1].split(",")
        if items is not None:
            return items, PYTHON_LIST
    return None


def _closing_bracket(text: str, start: int) -> int | None:
    depth, quote = 0, ""
    for i in range(start, len(text)):
        ch = text[i]
        if quote:
            if ch == quote and text[i - 1] != "\\":
                quote = ""
        elif ch in "\"'" and (i == start or not text[i - 1].isalnum()):  # not the apostrophe in "can't"
            quote = ch
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
            if depth == 0:
                return i
    return None


def _from_value(value: Any) -> list[str] | None:
    """The label strings of a decoded answer, or None when it holds none (then the text is no list)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, (list, tuple)):
        items = []
        for element in value:
            if isinstance(element, str):
                items.append(element)
            elif isinstance(element, dict):  # [{"label": "happy", "score": 0.9}, ...]
                names = [v for k, v in element.items() if _LABEL_KEY.search(str(k)) or k in ("name", "word")]
                items += names[:1]
        return items if items or not value else None
    if isinstance(value, dict):
        for key, inner in value.items():
            if _LABEL_KEY.search(str(key)) and (items := _from_value(inner)) is not None:
                return items
        # {"primary": "sad", "secondary": ["tired"]}: without a label key, every string in it is a label.
        items = [label for inner in value.values() if isinstance(inner, (str, list))
                 for label in _from_value(inner) or []]
        return items or None
    return None


# --- text answers ----------------------------------------------------------------------------------

_REFUSAL = re.compile(r"""
    \b(?:can\s*not|can't|could\s*not|couldn't|unable\s+to|not\s+able\s+to|impossible\s+to|not\s+possible\s+to
       |difficult\s+to|hard\s+to|no\s+way\s+to)\s+(?:\w+\s+){0,3}?
       (?:recogni[sz]e|determine|identify|tell|infer|detect|assess|judge|ascertain|discern|read|say|know|see
       |analy[sz]e|evaluate|gauge|interpret|guess|provide|make\s+out)\b
  | \b(?:can\s*not|can't|could\s*not|couldn't)\s+be
       \s+(?:determined|identified|recogni[sz]ed|inferred|assessed|detected)
  | \b(?:not\s+(?:enough|sufficient)|insufficient)\s+(?:information|context|evidence|cues)
  | ^(?:i'm|i\s+am|we\s+are|we're)\s+(?:sorry|afraid)\b
  | \bas\s+an\s+ai\b
  | \b(?:don't|do\s+not)\s+know\b
  | \b(?:is|are|remains?)\s+(?:not\s+(?:clear|evident|apparent|obvious|discernible)
       |unclear|unknown|undetermined|indeterminate)\b
  | \bno\s+(?:clear\s+|obvious\s+|visible\s+|discernible\s+)?
       (?:emotions?|emotional\s+(?:state|cues?|expressions?))
       \s+(?:can|could|is|are|was|were)\b
""", re.IGNORECASE | re.VERBOSE)

_STATEMENT = re.compile(
    r"(?:\b(?:emotional\s+states?|emotions?|feelings?|moods?|emotional\s+tones?|(?:emotion\s+)?labels?)"
    r"(?:\s+(?:is|are|was|were|includes?|would\s+be|could\s+be|can\s+be\s+described\s+as|seems?\s+to\s+be"
    r"|appears?\s+to\s+be)\b|\s*:)|^[ \t]*(?:answer|output|result|prediction)s?\s*:)[ \t]*(?P<rest>[^\n]*)",
    re.IGNORECASE | re.MULTILINE)
_BULLET = re.compile(r"^[ \t]*(?:[-*•+]|\d+[.)])[ \t]+(.+)$", re.MULTILINE)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_JOINER = re.compile(r"\s+(?:and|or|but|yet|as\s+well\s+as|&)\s+")
_FILLER = re.compile(  # multi-word fillers first: "a bit of" must win over the article "a"
    r"^(?:(?:a\s+bit(?:\s+of)?|a\s+little(?:\s+bit)?(?:\s+of)?|kind\s+of|sort\s+of"
    r"|(?:a\s+)?(?:sense|hint|hints|touch|mix|mixture|combination|blend|state|feeling|feelings|signs?)\s+of"
    r"|a|an|the|and|or|but|also|overall|some|slight|mild|slightly|very|really|quite|rather|somewhat|fairly"
    r"|mildly|moderately|extremely|highly|deeply|truly|incredibly|particularly|increasingly|mostly|mainly"
    r"|primarily|predominantly|largely|partly|possibly|perhaps|maybe|probably|likely|potentially|relatively"
    r"|seemingly"
    r"|apparently|visibly|clearly|feeling|feelings|feels?|being|showing|expressing|displaying|exhibiting"
    r"|experiencing)\s+)+")
_NO_ANSWER = frozenset({
    "none", "null", "nil", "n/a", "na", "unknown", "nothing", "no emotion", "no emotions",
})
_TRAILING_FILLER = re.compile(r"\s+(?:overall|too|as\s+well|at\s+times|in\s+general)$")
# Words a bare list never contains: their presence means the answer is a sentence.
_SENTENCE_WORDS = frozenset({
    "i", "he", "she", "they", "we", "you", "it", "his", "her", "their", "this", "that", "there", "is",
    "are", "was", "were", "seems", "seem", "looks", "appears", "appear", "feels", "feel", "person",
    "character", "man", "woman", "video", "clip", "speaker",
})


def _drop_refusals(text: str) -> tuple[str, bool]:
    """Remove the sentences (or ", but"-clauses) that decline to answer; say whether there were any."""
    refused, lines = False, []
    for line in text.splitlines():
        kept = []
        for sentence in _SENTENCE_END.split(line):
            for clause in re.split(r",\s*(?=(?:but|however|although|though|yet)\b)", sentence):
                if _REFUSAL.search(clause.strip()):
                    refused = True
                else:
                    kept.append(clause)
        lines.append(" ".join(kept))
    return "\n".join(lines).strip(), refused


def _statement(text: str) -> list[str]:
    match = _STATEMENT.search(text)
    return [_SENTENCE_END.split(match["rest"])[0]] if match and match["rest"].strip() else []


def _bullets(text: str) -> list[str]:
    items = []
    for item in _BULLET.findall(text):
        head, sep, tail = re.sub(r"[*_`]", "", item).partition(":")
        # "- Emotion: anxious" names the field first; "- Anxious: she looks away" explains after it.
        names_field = re.fullmatch(r"(?:\w+\s+)?(?:emotions?|labels?|feelings?)", head.strip(), re.IGNORECASE)
        item = tail if sep and names_field else head
        items.append(re.split(r"\s+[-–—]\s+|\s*\(", item, maxsplit=1)[0])
    return items


def _bare_list(text: str, vocab: Vocabulary) -> list[str]:
    chunks = re.split(r"[,;\n]", text)
    for chunk in chunks:
        item = _strip_filler(_clean(chunk))
        words = item.split()
        if item and item not in vocab and (len(words) > 3 or _SENTENCE_WORDS.intersection(words)):
            return []
    return chunks


def _items(chunks: Iterable[str], vocab: Vocabulary) -> list[str]:
    return [label for chunk in chunks for part in re.split(r"[,;\n]", chunk)
            for label in _expand(part, vocab)]


def _expand(part: str, vocab: Vocabulary) -> list[str]:
    """One list item → its labels: filler removed, "a and b" split, a sentence reduced to known words."""
    item = _clean(part)
    if not item or item in vocab:
        return [item] if item else []
    item = _strip_filler(item)
    pieces = [_strip_filler(piece) for piece in _JOINER.split(item)]
    # "anxious and worried" is two labels, "needing comfort and support" is one phrase: split only
    # when every piece is a single word or a known phrase.
    if len(pieces) > 1 and all(len(p.split()) == 1 or p in vocab for p in pieces):
        return pieces
    words = item.split()
    if (len(words) > 5 or _SENTENCE_WORDS.intersection(words)) and (known := _prose(item, vocab)):
        return known
    return [item]


def _clean(item: str) -> str:
    item = re.sub(r"\([^)]*\)|[*`]", " ", item)
    item = item.strip(" \t\r\n\"'_.,;:!?[]{}#>").lower()
    item = _TRAILING_FILLER.sub("", re.sub(r"\s+", " ", item))
    return item if re.search(r"[a-z]", item) and item not in _NO_ANSWER else ""


def _strip_filler(item: str) -> str:
    return _FILLER.sub("", item) or item


# --- prose -----------------------------------------------------------------------------------------

_TOKEN = re.compile(r"[a-z]+(?:['-][a-z]+)*")
_NEGATORS = frozenset({
    "not", "no", "never", "without", "nor", "hardly", "barely", "neither", "lacks",
})
_SKIPPABLE = frozenset({
    "is", "are", "was", "were", "be", "been", "being", "seem", "seems", "seemed", "look", "looks",
    "looked", "appear", "appears", "appeared", "feel", "feels", "felt", "to", "very", "really",
    "particularly", "especially", "too", "overly", "at", "all", "so", "any", "the", "a", "an", "of",
    "sign", "signs", "trace", "hint", "show", "shows", "showing", "display", "displays", "express",
    "expresses",
})
# Words the vocabulary knows that prose mostly uses in another sense ("the content of", "sat down").
_PROSE_AMBIGUOUS = frozenset({
    "content", "down", "lost", "cold", "distant", "warm", "blank", "casual", "sorry", "moved",
    "touched", "firm", "firmly", "hopefully", "honestly", "carefully", "emotional", "emotionally",
    "ease", "care", "forced", "driven", "involved", "wonder", "welcome", "patient", "reasonable",
    "logical", "sensible", "practical", "objective", "harsh", "powerful", "reserved", "collected",
    "composed", "mock",
})


def _prose(text: str, vocab: Vocabulary) -> list[str]:
    tokens = _TOKEN.findall(text.lower())
    found, i = [], 0
    while i < len(tokens):
        for n in range(min(vocab.max_words, len(tokens) - i), 0, -1):
            phrase = " ".join(tokens[i:i + n])
            if phrase in vocab and not (n == 1 and phrase in _PROSE_AMBIGUOUS) and not _negated(tokens, i):
                found.append(phrase)
                i += n
                break
        else:
            i += 1
    return found


def _negated(tokens: list[str], i: int) -> bool:
    for token in reversed(tokens[max(0, i - 4):i]):
        if token in _NEGATORS or token.endswith("n't"):
            return True
        if token not in _SKIPPABLE:
            return False
    return False



def _unique(words: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(word for word in words if word))
