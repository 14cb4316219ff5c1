"""Co-judgment fusion on OV-MERD: every fusion strategy against every single predictor, on held-out clips.

    python bench/fusion_ovmerd.py --out DIR [--reference DIR]

Each file in <reference>/ovmerd/predictions/ is one backend. Every strategy is fitted on the `dev` split
(split.csv) with the emotion-wheel metric (level 1) as its scorer, then applied unchanged to the `test`
split, written to DIR/<strategy>.csv (`name,openset`, re-scorable with `python -m ml.evaluate`) and
DIR/<strategy>.json (the fitted fusion). Prints EW level-1 F/P/R on test for each strategy and each
single predictor, marks the best single predictor, and each strategy's F ratio against it.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ml.fusion import STRATEGIES
from ml.metrics import REFERENCE_DIR, REFERENCE_DIR_ENV, Scores, load_ovmerd, wheel_scores


def write_labels(path: Path, labels: dict[str, list[str]]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["name", "openset"])
        writer.writerows((name, repr(list(terms))) for name, terms in labels.items())


def row(name: str, scores: Scores, mark: str = "", extra: str = "") -> str:
    figures = " ".join(f"{x * 100:6.2f}" for x in (scores.f, scores.precision, scores.recall))
    return f"{name:<22} {figures}  {mark:<4} {extra}".rstrip()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--reference", type=Path, default=REFERENCE_DIR,
                        help=f"the reference data (default {REFERENCE_DIR}; env {REFERENCE_DIR_ENV})")
    args = parser.parse_args()

    try:
        ref = load_ovmerd(args.reference)
    except FileNotFoundError as exc:
        print(exc, file=sys.stderr)
        return 2
    wheel, dev, test, backends = ref.wheel, ref.split("dev"), ref.split("test"), ref.predictors

    def scorer(truth, pred) -> Scores:
        return wheel_scores(truth, pred, wheel, level=1)

    args.out.mkdir(parents=True, exist_ok=True)
    singles = {name: scorer(test, labels) for name, labels in backends.items()}
    best = max(singles, key=lambda name: singles[name].f)
    results: dict[str, tuple[Scores, float]] = {}
    for name, strategy in STRATEGIES.items():
        start = time.perf_counter()
        fusion = strategy().fit(backends, dev, scorer)
        seconds = time.perf_counter() - start
        fused = fusion.fuse_many(backends, test)
        write_labels(args.out / f"{name}.csv", fused)
        (args.out / f"{name}.json").write_text(json.dumps(fusion.to_dict(), indent=1, sort_keys=True))
        results[name] = (scorer(test, fused), seconds)

    print(f"OV-MERD: {len(backends)} backends, fitted on dev ({len(dev)} clips), "
          f"scored on test ({len(test)} clips); EW level 1, %")
    print(f"{'':<22} {'F':>6} {'P':>6} {'R':>6}")
    for name, (scores, seconds) in results.items():
        ratio = scores.f / singles[best].f
        floor = "P ok" if scores.precision >= singles[best].precision else "P low"
        note = f"F x{ratio:.3f} vs best single, {floor}, fit {seconds:.1f} s"
        print(row(f"fusion:{name}", scores, extra=note))
    for name, scores in singles.items():
        print(row(name, scores, "best" if name == best else ""))
    print(f"written: {args.out}/<strategy>.csv and .json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
