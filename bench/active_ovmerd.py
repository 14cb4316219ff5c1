"""Active-learning scores on OV-MERD: how well each strategy puts the clips whose pre-label is bad first.

    python bench/active_ovmerd.py [--out DIR] [--reference DIR] [--cv]

Each file in <reference>/ovmerd/predictions/ is one backend. A clip's pre-label is *bad* when the union of
its backends' labels scores an emotion-wheel F below 0.5 against gt.csv (level 1; per clip, F from the
P and R that ``sample_scores`` averages over the wheels). A clip whose ground truth maps to no wheel word
(``sample_scores`` gives None) has no measurable pre-label quality and is left out of the AUROCs.
The verified pool for novelty is the dev split's ground truth (a dev clip never sees its own labels).

Two settings: all predictor files, and a two-backend subset (``SUBSET``: AffectGPT at epoch 30 and the
MER2024 baseline, two different models, as in a project that pre-labels with its two model backends; the
pair whose union the reference data publishes), where *bad* is judged on the union of those two.

Every strategy in ``ml.active.STRATEGIES`` is printed with its AUROC on dev and test, a 95% bootstrap
interval of the test AUROC (``BOOTSTRAP`` resamples of the test clips), and the ratio of its test AUROC to the
plain family-disagreement baseline; weights are refitted on dev to show what fitting finds. The default
strategy of new projects (``ml.active.DEFAULT_STRATEGY``) is also compared with the old ``combined`` on the
same resamples (paired difference). With --out, DIR/<strategy>.csv holds `name,score` for the test clips
of all files, and DIR/default.csv the default strategy's.

With --cv, the bench prints no test figure: it cross-validates ``CANDIDATE_SETS`` on dev (5 folds,
6 shuffles), equal weights against weights fitted on the other folds, in both settings, and names the
winner: the highest mean held-out AUROC over the two settings with equal weights, ties to fewer signals
(fitted weights are shown beside, not chosen: a default cannot be fitted to each project's backends, and they
gain little over equal ones on these 135-clip folds). That is how the default strategy was chosen without
looking at test.
"""

from __future__ import annotations

import argparse
import csv
import random
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ml.active import (  # noqa: E402
    COMBINED_WEIGHTS,
    DEFAULT_STRATEGY,
    FAMILY_SIGNALS,
    STRATEGIES,
    Pool,
    Strategy,
    auroc,
    fit_weights,
)
from ml.metrics import REFERENCE_DIR, REFERENCE_DIR_ENV, load_ovmerd, sample_scores  # noqa: E402

BAD_F = 0.5
SUBSET = ("affectgpt_ep30", "mer2024_baseline")
BOOTSTRAP = 2000
BASIC_SET = ("disagreement", "spread", "weak_support")
CANDIDATE_SETS: dict[str, tuple[str, ...]] = {
    "combined": tuple(COMBINED_WEIGHTS),
    "basic": BASIC_SET,
    "combined+family+novelty+empty": ("disagreement", "family_disagreement", "term_disagreement", "spread",
                                      "weak_support", "novelty", "empty"),
    "families": ("family_spread", "family_weak_support"),
    "families (all five)": FAMILY_SIGNALS,
    "combined+family_spread": (*COMBINED_WEIGHTS, "family_spread"),
    "combined+families": (*COMBINED_WEIGHTS, "family_spread", "family_weak_support"),
    "basic+family_spread": (*BASIC_SET, "family_spread"),
    "basic+families": (*BASIC_SET, "family_spread", "family_weak_support"),
    "basic+family_spread+lone": (*BASIC_SET, "family_spread", "family_lone"),
    "disagreement+family_spread": ("disagreement", "family_spread"),
}


@dataclass
class Setting:
    """One set of backends: its clips' predictions, which pre-labels are bad, and the measurable clips."""
    name: str
    clips: dict[str, dict[str, list[str]]]
    bad: dict[str, bool]
    dev: list[str]  # measurable dev clips (in ``bad``)
    test: list[str]  # measurable test clips
    test_all: list[str]  # every test clip, for the score files


def bad_prelabels(gt: dict[str, list[str]], clips: dict[str, dict[str, list[str]]], wheel) -> dict[str, bool]:
    """clip → whether the union of its backends' labels scores F < 0.5; clips the metric skips are absent."""
    out: dict[str, bool] = {}
    for name, truth in gt.items():
        union = sorted({label for labels in clips[name].values() for label in labels})
        if (pr := sample_scores(truth, union, wheel, level=1)) is not None:
            p, r = pr
            out[name] = (2 * p * r / (p + r) if p + r else 0.0) < BAD_F
    return out


def make_setting(name: str, backends: Mapping[str, Mapping[str, list[str]]], gt, splits, wheel) -> Setting:
    clips = {c: {b: labels.get(c, []) for b, labels in backends.items()} for c in gt}
    bad = bad_prelabels(gt, clips, wheel)
    test_all = [c for c in gt if splits.get(c) == "test"]
    return Setting(name, clips, bad, [c for c in gt if splits.get(c) == "dev" and c in bad],
                   [c for c in test_all if c in bad], test_all)


def cross_validate(setting: Setting, gt: Mapping[str, list[str]], signals: Sequence[str], folds: int = 5,
                   repeats: int = 6, base: Mapping[str, Mapping[str, float]] | None = None) -> tuple[float, float]:
    """Mean held-out AUROC over dev folds of equal weights and of weights fitted on the other folds.

    ``base``: the dev clips' signals without a verified pool, computed once; novelty, which depends on the
    pool, is computed again per fold (the held-out clips are not verified yet)."""
    names, bad = setting.dev, setting.bad
    equal = Strategy("equal", {s: 1 / len(signals) for s in signals})
    probe = Strategy("probe", {})
    if base is None:
        base = probe.signals({c: setting.clips[c] for c in names})
    results: tuple[list[float], list[float]] = ([], [])
    for repeat in range(repeats):
        order = random.Random(repeat).sample(names, len(names))
        for k in range(folds):
            held = order[k::folds]
            train = [c for c in order if c not in set(held)]
            values = base
            if "novelty" in signals:
                values = probe.signals({c: setting.clips[c] for c in names}, Pool({c: gt[c] for c in train}))
            fitted, _ = fit_weights({c: setting.clips[c] for c in train}, {c: bad[c] for c in train},
                                    signals=signals, values=values)
            for strategy, out in zip((equal, fitted), results):
                out.append(auroc([strategy.combine(values[c]) for c in held], [bad[c] for c in held]))
    return sum(results[0]) / len(results[0]), sum(results[1]) / len(results[1])


def bootstrap(positives: Sequence[bool], *scores: Sequence[float], n: int = BOOTSTRAP,
              seed: int = 0) -> list[tuple[float, float]]:
    """95% percentile intervals of the AUROC of each score list over ``n`` resamples of the clips (the same
    resamples for every list); with two lists, a third interval for the first AUROC minus the second."""
    rng = random.Random(seed)
    k = len(positives)
    draws: list[list[float]] = [[] for _ in range(len(scores) + (len(scores) == 2))]
    while len(draws[0]) < n:
        idx = [rng.randrange(k) for _ in range(k)]
        labels = [positives[i] for i in idx]
        if all(labels) or not any(labels):
            continue
        values = [auroc([s[i] for i in idx], labels) for s in scores]
        for out, value in zip(draws, values):
            out.append(value)
        if len(scores) == 2:
            draws[2].append(values[0] - values[1])

    def interval(values: list[float]) -> tuple[float, float]:
        values = sorted(values)
        return values[int(0.025 * len(values))], values[int(0.975 * len(values)) - 1]

    return [interval(d) for d in draws]


def run_cv(settings: list[Setting], gt) -> None:
    """Print the dev cross-validation table and the winner; no test figure."""
    probe = Strategy("probe", {})
    bases = [probe.signals({c: s.clips[c] for c in s.dev}) for s in settings]
    print("5-fold cross-validation on dev (6 shuffles), mean held-out AUROC, equal weights / fitted weights:")
    header = "".join(f"  {s.name:>17}" for s in settings)
    print(f"  {'signal set':<30}{header}  {'mean (equal)':>12}")
    means: dict[str, float] = {}
    for name, signals in CANDIDATE_SETS.items():
        start = time.perf_counter()
        cells = [cross_validate(s, gt, signals, base=base) for s, base in zip(settings, bases)]
        means[name] = sum(equal for equal, _ in cells) / len(cells)
        row = "".join(f"  {equal:.3f} / {fit:.3f}".rjust(19) for equal, fit in cells)
        print(f"  {name:<30}{row}  {means[name]:12.3f}   ({time.perf_counter() - start:.0f} s)")
    best = max(means.values())
    winner = min((n for n, m in means.items() if round(m, 3) == round(best, 3)),
                 key=lambda n: len(CANDIDATE_SETS[n]))
    print(f"winner (highest mean with equal weights, ties to fewer signals): {winner}: "
          f"{', '.join(CANDIDATE_SETS[winner])}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--reference", type=Path, default=REFERENCE_DIR,
                        help=f"the reference data (default {REFERENCE_DIR}; env {REFERENCE_DIR_ENV})")
    parser.add_argument("--cv", action="store_true",
                        help="cross-validate candidate signal sets on dev only (prints no test figure)")
    args = parser.parse_args()

    try:
        ref = load_ovmerd(args.reference)
    except FileNotFoundError as exc:
        print(f"skipped: {exc} (the reference data is never copied into the repository)", file=sys.stderr)
        return 2
    wheel, gt, splits, backends = ref
    settings = [make_setting(f"all {len(backends)} files", backends, gt, splits, wheel)]
    if set(SUBSET) <= set(backends):
        settings.append(make_setting("2: " + "+".join(b.split("_")[0] for b in SUBSET),
                                     {b: backends[b] for b in SUBSET}, gt, splits, wheel))
    else:
        print(f"two-backend subset skipped: {', '.join(b for b in SUBSET if b not in backends)} not found")
    if args.cv:
        run_cv(settings, gt)
        return 0

    dev_names = [c for c in gt if splits.get(c) == "dev"]
    pool = Pool({c: gt[c] for c in dev_names})
    default = Strategy.named(DEFAULT_STRATEGY)
    for number, setting in enumerate(settings):
        bad = setting.bad
        start = time.perf_counter()
        fitted, fit_auroc = fit_weights({c: setting.clips[c] for c in setting.dev}, {c: bad[c] for c in setting.dev},
                                        verified=pool)
        fit_seconds = time.perf_counter() - start
        positives = [bad[c] for c in setting.test]
        results: dict[str, tuple[float, float, tuple[float, float]]] = {}
        test_scores: dict[str, list[float]] = {}
        for strategy in [Strategy.named(name) for name in STRATEGIES] + [fitted]:
            scores = strategy.score(setting.clips, pool)
            test_scores[strategy.name] = [scores[c] for c in setting.test]
            (interval,) = bootstrap(positives, test_scores[strategy.name])
            results[strategy.name] = (auroc([scores[c] for c in setting.dev], [bad[c] for c in setting.dev]),
                                      auroc(test_scores[strategy.name], positives), interval)
            if args.out and number == 0:
                args.out.mkdir(parents=True, exist_ok=True)
                names = [strategy.name] + (["default"] if strategy.name == default.name else [])
                for name in names:
                    with open(args.out / f"{name}.csv", "w", newline="", encoding="utf-8") as handle:
                        writer = csv.writer(handle)
                        writer.writerow(["name", "score"])
                        writer.writerows((c, scores[c]) for c in setting.test_all)

        n_dev, n_test = len(setting.dev), len(setting.test)
        bad_dev, bad_test = (sum(1 for c in names if bad[c]) for names in (setting.dev, setting.test))
        print(f"OV-MERD, {setting.name}: {len(next(iter(setting.clips.values())))} backends; bad pre-label = "
              f"union EW F (level 1) < {BAD_F}; dev {bad_dev}/{n_dev} bad, test {bad_test}/{n_test} bad "
              f"({len(gt) - len(bad)} clip(s) with no wheel-mappable truth left out)")
        print(f"{'strategy':<22} {'dev':>6} {'test':>6}  {'test 95% CI':<15} test vs family_disagreement")
        baseline = results["family_disagreement"][1]
        for name, (d, t, (lo, hi)) in results.items():
            mark = "  (default)" if name == default.name else ""
            print(f"{name:<22} {d:6.3f} {t:6.3f}  [{lo:.3f}, {hi:.3f}]  x{t / baseline:.3f}{mark}")
        weights = ", ".join(f"{k} {w:g}" for k, w in fitted.weights.items())
        print(f"fitted: fit_weights on dev in {fit_seconds:.1f} s: {weights} (dev AUROC {fit_auroc:.3f})")
        if default.name != "combined":
            _, _, (lo, hi) = bootstrap(positives, test_scores[default.name], test_scores["combined"])
            diff = results[default.name][1] - results["combined"][1]
            print(f"{default.name} - combined on test: {diff:+.3f} (paired 95% CI [{lo:+.3f}, {hi:+.3f}])")
        print()
    if args.out:
        print(f"written: {args.out}/<strategy>.csv and {args.out}/default.csv ({default.name}; test clips, "
              f"{settings[0].name})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
