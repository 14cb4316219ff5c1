"""A project's quality figures from the shell: model quality per model version on the verified clips, agreement
between annotators and the verified labels by family (services.quality)."""

import json

from django.core.management.base import BaseCommand, CommandError

from annotations.management import arguments
from annotations.services import evaluation, quality


def _num(value, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _ci(figures: dict, name: str) -> str:
    lo, hi = figures["ci"][name]
    return f"{figures[name]:.3f} [{lo:.3f}, {hi:.3f}]"


class Command(BaseCommand):
    help = ("Print a project's quality figures: precision, recall and F of every model version against the "
            "verified labels (with n and a 95% bootstrap interval), agreement between annotators "
            "(Krippendorff's alpha with MASI distance, mean pairwise Jaccard) and the verified labels by family.")

    def add_arguments(self, parser):
        parser.add_argument("--project", required=True, help="project name or slug")
        parser.add_argument("--split", choices=quality.SPLITS, default="test",
                            help="the verified clips the models are scored on (default: test, annotated blind)")
        parser.add_argument("--wheel-dir", metavar="DIR",
                            help="emotion-wheel folder: P/R/F become the official wheel metric at level 1 "
                                 "(default: settings.WHEEL_DIR or $AFFECTLOOP_WHEEL_DIR, if set)")
        parser.add_argument("--json", action="store_true", dest="as_json", help="print one JSON object")

    def handle(self, *args, project, split, wheel_dir, as_json, **options):
        proj = arguments.project(project)
        folder = wheel_dir or evaluation.wheel_dir()
        wheel = None
        if folder:
            from ml.metrics import WheelDataError, load_wheel

            try:
                wheel = load_wheel(folder)
            except WheelDataError as exc:
                raise CommandError(f"bad --wheel-dir: {' '.join(str(exc).split())}") from None
        report = quality.project_report(proj, split=split, wheel=wheel)
        if as_json:
            self.stdout.write(json.dumps(_rounded(report)))
        else:
            self._text(report)

    def _text(self, report: dict) -> None:
        out = self.stdout.write
        out(f"Project {report['project']} (vocabulary version {report['vocabulary_version']})")
        out("")
        out(f"Models on the verified {report['split']}-split clips; {report['metric']}; "
            f"95% bootstrap intervals in brackets")
        if report["models"]:
            rows = [("backend", "model version", "clips", "precision", "recall", "F", "since")]
            rows += [(m["backend"], m["model_version"], str(m["clips"]), _ci(m, "precision"), _ci(m, "recall"),
                      _ci(m, "f"), (m["at"] or "")[:16].replace("T", " ")) for m in report["models"]]
            self._table(rows, right=(2,))
        else:
            out("  (no model has predictions on these clips)")
        out("")
        agreement = report["agreement"]
        out("Agreement between annotators over canonical terms, all clips with two or more annotators")
        self._table([("", "alpha (MASI)", "mean Jaccard", "clips"),
                     ("project", _num(agreement["alpha"]), _num(agreement["jaccard"]), str(agreement["n"]))],
                    right=(1, 2, 3))
        if agreement["annotators"]:
            out("")
            out("Each annotator against the others, on the clips they coded")
            self._table([("annotator", "alpha (MASI)", "mean Jaccard", "clips")]
                        + [(a["annotator"], _num(a["alpha"]), _num(a["jaccard"]), str(a["n"]))
                           for a in agreement["annotators"]], right=(1, 2, 3))
        if agreement["families"]:
            out("")
            out("Per emotion family: alpha on whether each annotator used it, Jaccard within it where used")
            self._table([("family", "alpha (nominal)", "mean Jaccard", "clips", "used on")]
                        + [(f["family"], _num(f["alpha"]), _num(f["jaccard"]), str(f["n"]), str(f["used"]))
                           for f in agreement["families"]], right=(1, 2, 3, 4))
        out("")
        out(f"Verified labels by family ({report['verified_clips']} verified clips, a term counted once per clip)")
        if report["labels"]:
            self._table([("family", "labels")] + [(k, str(v)) for k, v in report["labels"].items()], right=(1,))
            top = list(report["terms"].items())[:20]
            out("")
            out(f"Most used terms (top {len(top)} of {len(report['terms'])})")
            self._table([("term", "labels")] + [(k, str(v)) for k, v in top], right=(1,))
        else:
            out("  (no verified clips)")

    def _table(self, rows: list[tuple], right: tuple[int, ...] = ()) -> None:
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]

        def line(row):
            return "  " + "  ".join(cell.rjust(w) if i in right else cell.ljust(w)
                                    for i, (cell, w) in enumerate(zip(row, widths))).rstrip()

        self.stdout.write(line(rows[0]))
        self.stdout.write("  " + "  ".join("-" * w for w in widths))
        for row in rows[1:]:
            self.stdout.write(line(row))


def _rounded(value):
    """Floats to 6 decimals, as `python -m ml.evaluate` prints them."""
    if isinstance(value, float):
        return round(value, 6)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value
