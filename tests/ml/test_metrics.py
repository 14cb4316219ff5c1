"""The OV-MER emotion-wheel metric against its published figures, and the annotator-agreement measures."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ml.metrics import (
    jaccard,
    krippendorff_alpha,
    krippendorff_alpha_masi,
    load_wheel,
    masi_distance,
    read_label_csv,
    sample_scores,
    wheel_scores,
)
from tests.conftest import reference_path

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel_dir() -> Path:
    return reference_path("emotion_wheel")


@pytest.fixture(scope="module")
def ovmerd_dir() -> Path:
    return reference_path("ovmerd")


@pytest.fixture(scope="module")
def wheel(wheel_dir):
    return load_wheel(wheel_dir)


@pytest.fixture(scope="module")
def gt(ovmerd_dir):
    return read_label_csv(ovmerd_dir / "gt.csv")


@pytest.fixture(scope="module")
def predictions(ovmerd_dir):
    """name -> that predictor's labels from the reference predictions."""
    return lambda name: read_label_csv(ovmerd_dir / "predictions" / f"{name}.csv")


# --- the metric ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("truth", "pred", "expected"), [
    (["happy"], ["joyful"], (1.0, 1.0)),
    (["angry"], ["anger", "angered"], (1.0, 1.0)),
    (["happy"], ["happy", "excited", "proud", "nervous"], (0.367, 1.0)),
    (["worried", "sad", "angry"], ["anxious"], (1.0, 0.333)),
    (["sad"], [], (0.0, 0.0)),
    (["neutral"], ["happy"], None),
])
def test_per_sample_table(wheel, truth, pred, expected):
    scores = sample_scores(truth, pred, wheel)
    assert (None if scores is None else tuple(round(x, 3) for x in scores)) == expected


def test_labels_are_lowercased_and_stripped_and_unknown_ones_dropped(wheel):
    assert sample_scores([" Happy "], ["JOYFUL", "not-an-emotion-xyz"], wheel) == (1.0, 1.0)


@pytest.mark.parametrize(("pred", "level", "expected"), [
    ("mer2024_baseline", 1, (0.5537, 0.5594, 0.5485)),
    ("affectgpt_ep30", 1, (0.6586, 0.6370, 0.6827)),
])
def test_published_figures(wheel, gt, predictions, pred, level, expected):
    scores = wheel_scores(gt, predictions(pred), wheel, level=level)
    assert scores.n == 332
    assert (round(scores.f, 4), round(scores.precision, 4), round(scores.recall, 4)) == expected


def test_published_level2_figure(wheel, gt, predictions):
    assert round(wheel_scores(gt, predictions("mer2024_baseline"), wheel, level=2).f, 4) == 0.4245


def test_union_of_two_predictors_trades_precision_for_recall(wheel, gt, predictions):
    a, b = predictions("mer2024_baseline"), predictions("affectgpt_ep30")
    union = {name: a.get(name, []) + b.get(name, []) for name in gt}
    scores = wheel_scores(gt, union, wheel)
    rounded = (round(scores.f, 4), round(scores.precision, 4), round(scores.recall, 4))
    assert rounded == (0.6668, 0.5802, 0.7838)


def test_missing_prediction_counts_as_empty(wheel):
    gt = {"x": ["happy"], "y": ["sad"]}
    scores = wheel_scores(gt, {"x": ["joyful"]}, wheel)
    assert (scores.precision, scores.recall, scores.n) == (0.5, 0.5, 2)
    assert scores == wheel_scores(gt, {"x": ["joyful"], "y": []}, wheel)


def test_missing_wheel_dir_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        load_wheel(tmp_path / "nope")


# --- the CLI ------------------------------------------------------------------------------------

def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ml.evaluate", *args], check=False, cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def test_cli_prints_scores(ovmerd_dir, wheel_dir):
    out = run_cli("--gt", str(ovmerd_dir / "gt.csv"), "--wheel-dir", str(wheel_dir),
                  "--pred", str(ovmerd_dir / "predictions" / "affectgpt_ep30.csv"))
    assert out.returncode == 0, out.stderr
    scores = json.loads(out.stdout)
    assert scores["n"] == 332
    assert (round(scores["f"], 4), round(scores["precision"], 4), round(scores["recall"], 4)) == (
        0.6586, 0.6370, 0.6827)


def test_cli_level2_on_a_split(ovmerd_dir, wheel_dir):
    out = run_cli("--gt", str(ovmerd_dir / "gt.csv"), "--wheel-dir", str(wheel_dir), "--level", "2",
                  "--pred", str(ovmerd_dir / "predictions" / "mer2024_baseline.csv"),
                  "--names-from", str(ovmerd_dir / "split.csv"), "--split", "test")
    assert out.returncode == 0, out.stderr
    scores = json.loads(out.stdout)
    assert scores["n"] == 163 and 0 < scores["f"] < 1


def test_cli_missing_wheel_dir_exits_2(tmp_path):
    (tmp_path / "gt.csv").write_text("name,openset\na,\"['happy']\"\n")
    out = run_cli("--gt", str(tmp_path / "gt.csv"), "--pred", str(tmp_path / "gt.csv"),
                  "--wheel-dir", str(tmp_path / "missing"))
    assert out.returncode == 2
    assert "emotion-wheel directory not found" in out.stderr and not out.stdout


def test_cli_malformed_wheel_file_exits_2(tmp_path):
    (tmp_path / "wheel").mkdir()
    (tmp_path / "wheel" / "format.csv").write_text("word,forms\nhappy,happy\n")
    (tmp_path / "gt.csv").write_text("name,openset\na,\"['happy']\"\n")
    out = run_cli("--gt", str(tmp_path / "gt.csv"), "--pred", str(tmp_path / "gt.csv"),
                  "--wheel-dir", str(tmp_path / "wheel"))
    assert out.returncode == 2
    assert "format.csv: expected columns" in out.stderr


# --- reading label files ------------------------------------------------------------------------

def test_read_label_csv_accepts_quoted_bare_and_empty_lists(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text('name,openset\n'
                    'a,"[\'happy\', \'excited\']"\n'
                    'b,"[unease, anxiety]"\n'
                    'c,"[""don\'t believe"", \'doubt\']"\n'
                    'd,[]\n'
                    'e,\n')
    assert read_label_csv(path) == {"a": ["happy", "excited"], "b": ["unease", "anxiety"],
                                    "c": ["don't believe", "doubt"], "d": [], "e": []}


@pytest.mark.parametrize("cell", ["happy", "[1, 2]", "{'happy'}"])
def test_read_label_csv_names_the_malformed_row(tmp_path, cell):
    path = tmp_path / "labels.csv"
    path.write_text(f'name,openset\nok,[]\nbad_one,"{cell}"\n')
    with pytest.raises(ValueError, match=r"line 3 \('bad_one'\)"):
        read_label_csv(path)


# --- agreement between annotators ---------------------------------------------------------------

def test_jaccard_and_masi():
    assert jaccard({"a", "b"}, {"b", "c"}) == pytest.approx(1 / 3)
    assert jaccard(set(), set()) == 1.0
    assert masi_distance({"a"}, {"a"}) == 0.0
    assert masi_distance({"a"}, {"a", "b"}) == pytest.approx(1 - 0.5 * 0.67)  # subset
    assert masi_distance({"a", "b"}, {"b", "c"}) == pytest.approx(1 - (1 / 3) * 0.33)  # overlap
    assert masi_distance({"a"}, {"b"}) == 1.0  # disjoint
    assert masi_distance(set(), set()) == 0.0


def test_alpha_perfect_agreement_is_one():
    assert krippendorff_alpha_masi([[{"a"}, {"a"}, {"a"}], [{"b", "c"}, {"c", "b"}], [{"d"}]]) == 1.0


def test_alpha_masi_hand_worked():
    # Units: u1 = {a},{a}; u2 = {a},{a,b}; u3 = {b},{c}. n = 6 pairable values.
    # d({a},{a,b}) = 1 - 1/2 * 0.67 = 0.665 ; d({b},{c}) = 1 ; d({a,b},{b}) = 0.665 ; disjoint pairs = 1.
    # D_o = (1/n) * sum_u (ordered in-unit pair distances) / (m_u - 1) = (0 + 2*0.665 + 2*1) / 6 = 0.555
    # Values: {a} x3, {a,b} x1, {b} x1, {c} x1. Unordered cross-value pairs:
    #   {a}-{a,b}: 3 * 0.665 = 1.995 ; {a}-{b}: 3 ; {a}-{c}: 3 ; {a,b}-{b}: 0.665 ; {a,b}-{c}: 1 ; {b}-{c}: 1
    #   sum = 10.66, ordered = 21.32 ; D_e = 21.32 / (6 * 5) = 0.710667
    # alpha = 1 - 0.555 / 0.710667 = 0.219043
    units = [[{"a"}, {"a"}], [{"a"}, {"a", "b"}], [{"b"}, {"c"}], [{"z"}]]  # the last unit is not pairable
    assert krippendorff_alpha_masi(units) == pytest.approx(1 - 0.555 / (21.32 / 30))
    assert round(krippendorff_alpha_masi(units), 6) == 0.219043


def test_alpha_on_singletons_is_krippendorffs_nominal_alpha():
    # Krippendorff's (2011) worked example, 4 coders x 12 units, nominal alpha = 0.743. With one label
    # per coder MASI is 0/1, i.e. the nominal distance.
    coders = ["1 2 3 3 2 1 4 1 2 . . .", "1 2 3 3 2 2 4 1 2 5 . 3",
              ". 3 3 3 2 3 4 2 2 5 1 .", "1 2 3 3 2 4 4 1 2 5 1 ."]
    grid = [row.split() for row in coders]
    units = [[{grid[c][u]} for c in range(4) if grid[c][u] != "."] for u in range(12)]
    assert round(krippendorff_alpha_masi(units), 3) == 0.743
    nominal = krippendorff_alpha(units, lambda a, b: float(a != b))
    assert nominal == pytest.approx(krippendorff_alpha_masi(units))


def test_alpha_needs_a_pairable_unit():
    with pytest.raises(ValueError):
        krippendorff_alpha_masi([[{"a"}], []])


def test_the_vectorised_masi_alpha_is_the_plain_one():
    import random

    from ml.agreement import masi_alpha_vectorised
    from ml.metrics import krippendorff_alpha, masi_distance

    rng = random.Random(3)
    words = [f"w{i}" for i in range(12)]
    # Units of 2-4 coders whose sets share, contain or miss each other, some empty: every MASI case.
    units = [[frozenset(rng.sample(words, rng.choice([0, 1, 1, 2, 3]))) for _ in range(rng.choice([2, 2, 3, 4]))]
             for _ in range(400)]
    assert masi_alpha_vectorised(units) == pytest.approx(krippendorff_alpha(units, masi_distance), abs=1e-12)
    assert masi_alpha_vectorised([[frozenset({"a"}), frozenset({"a"})]]) == 1.0


def test_the_binary_alpha_from_counts_is_the_nominal_alpha():
    import random

    from ml.metrics import krippendorff_alpha, krippendorff_alpha_binary

    rng = random.Random(4)
    units = [[rng.random() < 0.3 for _ in range(rng.choice([2, 3, 4]))] for _ in range(300)]
    coded = [[frozenset({"x"}) if present else frozenset() for present in unit] for unit in units]
    expected = krippendorff_alpha(coded, lambda a, b: 0.0 if a == b else 1.0)
    counts = [(len(unit), sum(unit)) for unit in units if any(unit)]
    assert krippendorff_alpha_binary(counts, sum(map(len, units))) == pytest.approx(expected, abs=1e-12)
