"""Fused labels keep their evidence: which backends proposed each label, with each backend's own score."""

from ml.fusion import STRATEGIES, Union
from ml.types import Label


def test_each_fused_label_names_its_backends_and_their_scores():
    fused = Union().fuse({
        "internvl": [Label("anxious", 0.82, "internvl"), Label("happy", 0.4, "internvl")],
        "affectgpt": [Label("Anxiety", 0.64, "affectgpt"), Label("nervous", None, "affectgpt")],
    })
    by_term = {f.term: f for f in fused}
    assert by_term["anxious"].evidence == (("affectgpt", 0.64), ("internvl", 0.82))
    assert by_term["anxious"].support == 2
    assert by_term["happy"].evidence == (("internvl", 0.4),)
    # A backend that gives no score is still named, with None rather than an invented confidence.
    assert ("affectgpt", None) in by_term[[t for t in by_term if t != "anxious" and t != "happy"][0]].evidence


def test_a_backend_repeating_a_label_keeps_its_best_score():
    [fused] = Union().fuse({"internvl": [Label("calm", 0.3, "internvl"), Label("calm", 0.9, "internvl")]})
    assert fused.evidence == (("internvl", 0.9),)


def test_every_strategy_reports_evidence_for_what_it_keeps():
    per_backend = {"a": [Label("angry", 0.7, "a")], "b": [Label("angry", 0.5, "b")]}
    for name, cls in STRATEGIES.items():
        for label in cls().fuse(per_backend):
            assert {b for b, _ in label.evidence} == {"a", "b"}, name
