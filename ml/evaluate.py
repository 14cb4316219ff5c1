"""Score open-vocabulary predictions with the emotion-wheel metric.

    python -m ml.evaluate --gt GT.csv --pred PRED.csv [--wheel-dir DIR] [--level 1|2]
                          [--names-from SPLIT.csv --split test]

Prints {"f", "precision", "recall", "n"} as JSON (fractions, 6 decimals); exits 2 on bad input.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

from ml.metrics import load_wheel, read_label_csv, read_splits, wheel_scores


def _split_names(path: Path, split: str) -> set[str]:
    names = {name for name, value in read_splits(path).items() if value == split}
    if not names:
        raise ValueError(f"{path}: no sample in split {split!r}")
    return names


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ml.evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--gt", type=Path, required=True, help="ground truth, columns name,openset")
    parser.add_argument("--pred", type=Path, required=True, help="predictions, columns name,openset")
    parser.add_argument("--wheel-dir", type=Path, help="emotion-wheel data (default: $AFFECTLOOP_WHEEL_DIR)")
    parser.add_argument("--level", type=int, choices=(1, 2), default=1)
    parser.add_argument("--names-from", type=Path, help="split file, columns name,split")
    parser.add_argument("--split", help="keep only the ground-truth samples of this split")
    args = parser.parse_args(argv)
    if (args.names_from is None) != (args.split is None):
        parser.error("--names-from and --split go together")
    try:
        wheel = load_wheel(args.wheel_dir)
        gt = read_label_csv(args.gt)
        pred = read_label_csv(args.pred)
        if args.names_from is not None:
            keep = _split_names(args.names_from, args.split)
            gt = {name: labels for name, labels in gt.items() if name in keep}
        scores = wheel_scores(gt, pred, wheel, level=args.level)
    except (OSError, ValueError, csv.Error) as exc:  # WheelDataError is a ValueError
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({"f": round(scores.f, 6), "precision": round(scores.precision, 6),
                      "recall": round(scores.recall, 6), "n": scores.n}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
