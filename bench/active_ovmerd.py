"""Active-learning scores on OV-MERD: how well each strategy puts the clips whose pre-label is bad first.

    python bench/active_ovmerd.py [--out DIR] [--reference DIR]

Each file in <reference>/ovmerd/predictions/ is one backend. A clip's pre-label is *bad* when the union of
all backends' labels scores an emotion-wheel F below 0.5 against gt.csv (level 1; per clip, F from the
P and R that ``sample_scores`` averages over the wheels). A clip whose ground truth maps to no wheel word
(``sample_scores`` gives None) has no measurable pre-label quality and is left out of the AUROCs.
The verified pool for novelty is the dev split's ground truth (a dev clip never sees its own labels).
Every strategy in ``ml.active.STRATEGIES`` is printed with its AUROC on dev and test and the ratio of its
test AUROC to the plain family-disagreement baseline; weights are refitted on dev to show they match the
stored ones. With --out, DIR/<strategy>.csv holds `name,score` for the test clips. With --cv, it also
cross-validates on dev (5 folds, 6 shuffles) equal against fitted weights for a few candidate signal sets:
how the 'combined' strategy was chosen without looking at test.
"""

from __future__ import annotations

import argparse
import csv
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ml.active import COMBINED_WEIGHTS, STRATEGIES, Pool, Strategy, auroc, fit_weights
from ml.metrics import REFERENCE_DIR, REFERENCE_DIR_ENV, load_ovmerd, sample_scores

BAD_F = 0.5
CANDIDATE_SETS = {
    "combined": tuple(COMBINED_WEIGHTS),
    "basic": ("disagreement", "spread", "weak_support"),
    "combined+family+novelty+empty": ("disagreement", "family_disagreement", "term_disagreement", "spread",
                                      "weak_support", "novelty", "empty"),
}


def bad_prelabels(gt: dict[str, list[str]], clips: dict[str, dict[str, list[str]]], wheel) -> dict[str, bool]:
    """clip → whether the union of its backends' labels scores F < 0.5; clips the metric skips are absent."""
    out: dict[str, bool] = {}
    for name, truth in gt.items():
        union = sorted({label for labels in clips[name].values() for label in labels})
        if (pr := sample_scores(truth, union, wheel, level=1)) is not None:
            p, r = pr
            out[name] = (2 * p * r / (p + r) if p + r else 0.0) < BAD_F
    return out


def cross_validate(clips: dict, bad: dict[str, bool], gt: dict[str, list[str]], dev: list[str],
                   signals: tuple[str, ...], folds: int = 5, repeats: int = 6) -> tuple[float, float]:
    """Mean held-out AUROC over dev folds of equal weights and of weights fitted on the other folds."""
    names = [c for c in dev if c in bad]
    equal = Strategy("equal", {s: 1 / len(signals) for s in signals})
    results: tuple[list[float], list[float]] = ([], [])
    for repeat in range(repeats):
        order = random.Random(repeat).sample(names, len(names))
        for k in range(folds):
            held = order[k::folds]
            train = [c for c in order if c not in set(held)]
            pool = Pool({c: gt[c] for c in train})  # the held-out clips are not verified yet
            fitted, _ = fit_weights({c: clips[c] for c in train}, {c: bad[c] for c in train}, verified=pool,
                                    signals=signals)
            for strategy, out in zip((equal, fitted), results):
                scores = strategy.score({c: clips[c] for c in held}, pool)
                out.append(auroc([scores[c] for c in held], [bad[c] for c in held]))
    return sum(results[0]) / len(results[0]), sum(results[1]) / len(results[1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--reference", type=Path, default=REFERENCE_DIR,
                        help=f"the reference data (default {REFERENCE_DIR}; env {REFERENCE_DIR_ENV})")
    parser.add_argument("--cv", action="store_true", help="also cross-validate candidate signal sets on dev")
    args = parser.parse_args()

    try:
        ref = load_ovmerd(args.reference)
    except FileNotFoundError as exc:
        print(exc, file=sys.stderr)
        return 2
    wheel, gt, splits, backends = ref
    clips = {name: {b: labels.get(name, []) for b, labels in backends.items()} for name in gt}
    bad = bad_prelabels(gt, clips, wheel)
    dev = [c for c in gt if splits.get(c) == "dev"]
    test = [c for c in gt if splits.get(c) == "test"]
    pool = Pool({c: gt[c] for c in dev})

    start = time.perf_counter()
    fitted, fit_auroc = fit_weights({c: clips[c] for c in dev}, {c: bad[c] for c in dev if c in bad},
                                    verified=pool)
    fit_seconds = time.perf_counter() - start

    def aurocs(scores: dict[str, float], names: list[str]) -> float:
        kept = [c for c in names if c in bad]
        return auroc([scores[c] for c in kept], [bad[c] for c in kept])

    results: dict[str, tuple[float, float]] = {}
    strategies = [Strategy.named(name) for name in STRATEGIES] + [fitted]
    for strategy in strategies:
        scores = strategy.score(clips, pool)
        results[strategy.name] = (aurocs(scores, dev), aurocs(scores, test))
        if args.out:
            args.out.mkdir(parents=True, exist_ok=True)
            with open(args.out / f"{strategy.name}.csv", "w", newline="", encoding="utf-8") as handle:
                writer = csv.writer(handle)
                writer.writerow(["name", "score"])
                writer.writerows((c, scores[c]) for c in test)

    n_dev, n_test = (sum(1 for c in names if c in bad) for names in (dev, test))
    bad_dev, bad_test = (sum(1 for c in names if bad.get(c)) for names in (dev, test))
    print(f"OV-MERD: {len(backends)} backends; bad pre-label = union EW F (level 1) < {BAD_F}; "
          f"dev {bad_dev}/{n_dev} bad, test {bad_test}/{n_test} bad "
          f"({len(gt) - len(bad)} clip(s) with no wheel-mappable truth left out)")
    print(f"{'strategy':<22} {'dev':>6} {'test':>6}  test vs family_disagreement")
    baseline = results["family_disagreement"][1]
    for name, (d, t) in results.items():
        print(f"{name:<22} {d:6.3f} {t:6.3f}  x{t / baseline:.3f}")
    weights = ", ".join(f"{k} {w:g}" for k, w in fitted.weights.items())
    print(f"fitted: fit_weights on dev in {fit_seconds:.1f} s: {weights} (dev AUROC {fit_auroc:.3f})")
    if args.cv:
        print("5-fold cross-validation on dev, mean held-out AUROC: equal weights / fitted weights")
        for name, signals in CANDIDATE_SETS.items():
            equal, fit = cross_validate(clips, bad, gt, dev, signals)
            print(f"  {name:<30} {equal:.3f} / {fit:.3f}")
    if args.out:
        print(f"written: {args.out}/<strategy>.csv (test clips)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
