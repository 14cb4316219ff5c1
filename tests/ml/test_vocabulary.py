"""The project's own emotion vocabulary: lookups through word forms and synonyms; its consistency rules."""

import pytest

from ml.vocabulary import FAMILIES, UNASSIGNED, VALENCES, Term, Vocabulary, VocabularyError, normalise

RECORD = {"term": "anxious", "family": "fear", "valence": "negative",
          "word_forms": ["anxiety", "anxiously"], "synonyms": ["on edge"]}


@pytest.fixture(scope="module")
def vocab() -> Vocabulary:
    return Vocabulary.default()


@pytest.mark.parametrize("word, canonical", [
    ("anxiety", "anxious"), ("Anxiously ", "anxious"), ("unease", "uneasy"), ("worry", "worried"),
    ("anger", "angry"), ("angered", "angry"), ("angrily", "angry"), ("mad", "angry"),
    ("happiness", "happy"), ("glad", "happy"), ("joy", "joyful"),
    ("skepticism", "skeptical"), ("sceptical", "skeptical"), ("dissatisfaction", "dissatisfied"),
    ("disapproval", "disapproving"), ("helplessness", "helpless"), ("determination", "determined"),
    ("seriousness", "serious"), ("contemplation", "contemplative"), ("curiosity", "curious"),
    ("confusion", "confused"), ("embarrassment", "embarrassed"), ("nervousness", "nervous"),
    ("excitement", "excited"), ("questioning", "questioning"), ("afraid", "fearful"), ("scared", "fearful"),
    ("lighthearted", "light-hearted"), ("light hearted", "light-hearted"), ("under pressure", "pressured"),
    ("self-doubt", "insecure"), ("lack of confidence", "insecure"), ("emotionally detached", "detached"),
])
def test_word_forms_and_synonyms_resolve_to_the_canonical_term(vocab, word, canonical):
    assert vocab.canonical(word) == canonical


def test_lookup_gives_family_and_valence(vocab):
    assert vocab.lookup("anxiety") is vocab.lookup("anxious")
    assert (vocab.family("anxiety"), vocab.valence("anxiety")) == ("fear", "negative")
    assert (vocab.family("relief"), vocab.valence("relief")) == ("joy", "positive")
    assert (vocab.family("neutrality"), vocab.valence("neutrality")) == ("neutral", "neutral")
    assert vocab.lookup("table") is None and vocab.canonical("") is None and vocab.family("table") is None
    assert "worry" in vocab and "table" not in vocab


def test_default_vocabulary_is_cached_and_sized_for_open_vocabulary_labels(vocab):
    assert Vocabulary.default() is vocab
    assert 250 <= len(vocab) <= 400
    assert sum(1 for _ in vocab.surface_forms()) > 4 * len(vocab)
    assert {t.family for t in vocab.terms()} == FAMILIES - {UNASSIGNED}  # no seed term waits for approval


def test_default_vocabulary_keeps_the_consistency_rules(vocab):
    owners: dict[str, str] = {}
    for term in vocab.terms():
        assert term.family in FAMILIES and term.valence in VALENCES
        for form in term.surface_forms:
            assert form == form.strip().lower(), form
            assert owners.setdefault(normalise(form), term.term) == term.term, form


def test_records_round_trip(vocab):
    again = Vocabulary.from_records(vocab.to_records())
    assert [t.term for t in again.terms()] == [t.term for t in vocab.terms()]
    assert again.canonical("anxiety") == "anxious"


def test_a_project_can_load_its_own_vocabulary():
    own = Vocabulary.from_records([RECORD, {"term": "bored", "family": "neutral", "valence": "negative"}])
    assert own.canonical("ON EDGE") == "anxious" and own.canonical("bored") == "bored"
    assert [t.term for t in own.terms()] == ["anxious", "bored"]
    expected = Term("anxious", "fear", "negative", synonyms=("on edge",), word_forms=("anxiety", "anxiously"))
    assert own.lookup("anxiety") == expected


@pytest.mark.parametrize("records, message", [
    ([RECORD, {**RECORD, "term": "nervous", "word_forms": ["anxiety"], "synonyms": []}],
     "'anxiety' maps to both"),
    ([RECORD, {**RECORD, "term": "tense", "word_forms": [], "synonyms": ["on-edge"]}], "maps to both"),
    ([RECORD, RECORD], "defined twice"),
    ([{**RECORD, "family": "gloom"}], "unknown family"),
    ([{**RECORD, "valence": "bad"}], "unknown valence"),
    ([{**RECORD, "synonyms": ["On edge"]}], "lowercase"),
    ([{**RECORD, "term": " anxious"}], "lowercase"),
    ([{"term": "anxious", "family": "fear"}], "without 'valence'"),
])
def test_inconsistent_vocabularies_are_rejected(records, message):
    with pytest.raises(VocabularyError, match=message):
        Vocabulary.from_records(records)
