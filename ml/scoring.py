"""Per-label confidence from the generated tokens, without torch.

A backend decodes greedily and keeps, for every generated token, its text and its probability. Each parsed
label is located in the generated text (in order), and its score is the mean probability of the tokens that
overlap it. A label the text does not contain verbatim (a canonicalised form) gets the mean over the whole
answer, flagged by the caller if it matters.
"""

from __future__ import annotations

import re
from collections.abc import Sequence


def label_scores(token_texts: Sequence[str], token_probs: Sequence[float], labels: Sequence[str]) -> list[float]:
    if len(token_texts) != len(token_probs):
        raise ValueError("one probability per token is needed")
    spans, pos = [], 0
    for text in token_texts:
        spans.append((pos, pos + len(text)))
        pos += len(text)
    full = "".join(token_texts).lower()
    overall = sum(token_probs) / len(token_probs) if token_probs else 0.0
    scores, cursor = [], 0
    for label in labels:
        needle = label.lower()
        # Whole words only: "tense" must not be scored by the tokens of "intense".
        pattern = re.compile(rf"(?<![^\W\d_]){re.escape(needle)}(?![^\W\d_])") if needle else None
        match = (pattern.search(full, cursor) or pattern.search(full)) if pattern else None
        if match is None:
            scores.append(overall)
            continue
        start, end = match.span()
        cursor = end
        probs = [p for (a, b), p in zip(spans, token_probs) if a < end and b > start]
        scores.append(sum(probs) / len(probs) if probs else overall)
    return scores


def scored_labels(raw_text: str, token_texts: Sequence[str], token_probs: Sequence[float], *, source: str,
                  expect_json: bool) -> tuple[list, list[str]]:
    """Canonical labels of an answer, each scored by the tokens that wrote its first raw form.

    The raw word is what the text contains; the canonical term is what is stored.
    """
    from .labels import analyse
    from .types import Label
    from .vocabulary import Vocabulary

    parsed = analyse(raw_text, expect_json=expect_json)
    vocab = Vocabulary.default()
    scores = dict(zip(parsed.raw, label_scores(token_texts, token_probs, parsed.raw), strict=True))
    first_raw: dict[str, str] = {}
    for word in parsed.raw:
        first_raw.setdefault(vocab.canonical(word) or word, word)
    labels = [Label(term=term, score=scores.get(first_raw.get(term, "")), source=source) for term in parsed.terms]
    return labels, list(parsed.flags)


def token_pieces(decode, ids: Sequence[int], *, skip_special_tokens: bool) -> list[str]:
    """Each generated token's share of the decoded text, so that the pieces join to the answer.

    A token ending inside a multi-byte character gets "" and the token completing the character carries it.
    `decode` is the tokenizer's decode function (no torch needed here).
    """
    texts, previous = [], ""
    for i in range(len(ids)):
        current = decode(list(ids[:i + 1]), skip_special_tokens=skip_special_tokens)
        if current.endswith("\ufffd") and i + 1 < len(ids):
            texts.append("")
            continue
        texts.append(current[len(previous):])
        previous = current
    return texts
