"""Per-label scores come from the tokens of that word, never from a word that contains it."""

from ml.scoring import label_scores


def pieces(text, probs_by_word):
    tokens, probs = [], []
    for word in text.split(" "):
        tokens.append(word + " ")
        probs.append(probs_by_word.get(word.strip(".,"), 0.5))
    return tokens, probs


def test_a_label_is_scored_by_its_own_word_not_a_longer_one():
    tokens, probs = pieces("Her voice is intense and she seems tense.", {"intense": 0.05, "tense": 0.9})
    assert label_scores(tokens, probs, ["tense"]) == [0.9]


def test_labels_are_found_in_order_and_missing_ones_get_the_mean():
    tokens, probs = pieces("happy, then sad, then happy", {"happy": 0.8, "sad": 0.2})
    scores = label_scores(tokens, probs, ["happy", "sad", "angry"])
    assert scores[:2] == [0.8, 0.2] and abs(scores[2] - sum(probs) / len(probs)) < 1e-9
