"""Label parsing: every answer format models give, refusals, canonicalisation, real AffectGPT outputs."""

import csv
import re
from pathlib import Path

import pytest

from ml.labels import analyse, parse_labels
from tests.conftest import reference_path

BULLETED = ("Emotions:\n- Anxious\n- **Sad**: she looks at the floor\n* a sense of relief\n"
            "1. happy (smiling)\n2) proud")


@pytest.mark.parametrize("text, labels", [
    ('["anxious", "hesitant", "relieved"]', ["anxious", "hesitant", "relieved"]),
    ('Here are the emotions: ["Sad", "lonely", "sad"]', ["sad", "lonely"]),
    ("['anxious', 'hesitant']", ["anxious", "hesitant"]),
    ("[anxious, hesitant]", ["anxious", "hesitant"]),
    ('```json\n["calm", "curious"]\n```', ["calm", "curious"]),
    ('```json\n{"emotions": ["Happy", "Excited"]}\n```', ["happy", "excited"]),
    ('```\n{"labels": ["calm", "worried"], "confidence": 0.8}\n```', ["calm", "worried"]),
    ('[{"label": "happy", "score": 0.9}, {"label": "proud", "score": 0.4}]', ["happy", "proud"]),
    ('{"emotions": {"primary": "sad", "secondary": ["tired"]}}', ["sad", "tired"]),
    ("The character's emotional state is unease, anxiety.", ["unease", "anxiety"]),
    ("The character's emotional state is happy, excited and nervous.", ["happy", "excited", "nervous"]),
    ("The character’s emotional state is “tense”, 'wary', or afraid.", ["tense", "wary", "afraid"]),
    ("The person's emotions are calm, slightly worried, and a bit of relief.", ["calm", "worried", "relief"]),
    ("Based on the video, the person's emotions are sad but hopeful. She looks down.", ["sad", "hopeful"]),
    ("Emotions: anxious; hesitant", ["anxious", "hesitant"]),
    ("Emotion: frustration", ["frustration"]),
    (BULLETED,
     ["anxious", "sad", "relief", "happy", "proud"]),
    ("anxious; hesitant or relieved", ["anxious", "hesitant", "relieved"]),
    ("anxious and worried", ["anxious", "worried"]),
    ("The person's emotions are sad, needing comfort and support.", ["sad", "needing comfort and support"]),
    ("Very happy.", ["happy"]),
    ("She seems mostly calm but slightly worried.", ["calm", "worried"]),
    ("He is not happy at all; he looks tired and somewhat irritated.", ["tired", "irritated"]),
    ("She says [laughs] and smiles, clearly amused.", ["amused"]),
])
def test_formats(text, labels):
    assert parse_labels(text) == labels


@pytest.mark.parametrize("text", [
    "We cannot recognize his emotional state.",
    "I'm sorry, I can't determine the person's emotions from this clip.",
    "It is not possible to identify the emotional state of the character.",
    "The character's emotional state is unclear.",
    "There is not enough information to tell how she feels.",
])
def test_refusals_give_no_labels(text):
    parsed = analyse(text)
    assert parsed.raw == [] and parsed.terms == [] and parsed.refusal
    assert parsed.flags == ["refusal"]


def test_a_hedge_before_an_answer_is_not_a_refusal():
    parsed = analyse("It's hard to tell for sure, but she seems anxious.")
    assert parsed.raw == ["anxious"] and not parsed.refusal


@pytest.mark.parametrize("text", ["", "   \n", None, "[]", '{"emotions": []}', '{"score": 0.9}', "[1, 2]",
                                  "N/A", "None.", "- "])
def test_empty_answers(text):
    parsed = analyse(text)
    assert parsed.raw == [] and not parsed.refusal and parsed.flags == ["empty"]


def test_terms_are_canonical_and_unknown_words_are_kept_and_flagged():
    parsed = analyse('["anxiety", "worry", "gobbledygook", "anxious", "light hearted"]')
    assert parsed.raw == ["anxiety", "worry", "gobbledygook", "anxious", "light hearted"]
    assert parsed.terms == ["anxious", "worried", "gobbledygook", "light-hearted"]
    assert parsed.unknown == ["gobbledygook"]
    assert parsed.flags == ["unknown_terms"] and parsed.format == "json"


def test_answers_in_another_format_than_the_requested_json_are_flagged():
    statement = "The character's emotional state is anger, helplessness."
    assert analyse(statement).flags == ["format_ignored"]
    assert analyse(statement).terms == ["angry", "helpless"]
    assert analyse(statement, expect_json=False).flags == []
    assert analyse("['sad']").format == "python_list" and "format_ignored" in analyse("['sad']").flags


def _raw_text_files() -> list[Path]:
    return sorted(reference_path("ovmerd", "raw_text").glob("*.csv"))


def _listed_words(response: str) -> list[str]:
    """What an AffectGPT response lists, by a rule written for these texts alone: drop the fixed
    lead-in and final period, split on commas, lowercase, drop the hedge word some items start with
    ("feeling overwhelmed", "possibly frustrated"), keep first occurrences."""
    body = response.removeprefix("The character's emotional state is ").removesuffix(".")
    hedge = re.compile(r"^(?:feeling|being|possibly|relatively) ")
    words = [hedge.sub("", w.strip().lower()) for w in body.split(",")]
    return list(dict.fromkeys(words))


def test_every_affectgpt_response_parses_to_the_words_it_lists():
    files = _raw_text_files()
    assert len(files) == 7
    rows = 0
    for path in files:
        with path.open(newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f):
                rows += 1
                assert row["response"].startswith("The character's emotional state is "), row
                assert parse_labels(row["response"]) == _listed_words(row["response"]), \
                    f"{path.name} {row['name']}: {row['response']!r}"
    assert rows == 7 * 332

