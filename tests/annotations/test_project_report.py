"""`manage.py project_report`: the quality figures from the shell, as readable tables or one JSON object, and
the emotion-wheel figures exactly as `python -m ml.evaluate` computes them on the same labels."""

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from tests.annotations import test_quality
from tests.conftest import reference_path

pytestmark = pytest.mark.django_db

REPO = Path(__file__).resolve().parents[2]
MODEL_KEYS = {"backend", "model_version", "clips", "precision", "recall", "f"}

# The small project of test_quality, whose figures are computed by hand there.
people, agreement_clips, scored = test_quality.people, test_quality.agreement_clips, test_quality.scored


@pytest.fixture(autouse=True)
def _no_configured_wheel(settings, monkeypatch):
    """The vocabulary metric unless a test names a wheel folder."""
    settings.WHEEL_DIR = None
    monkeypatch.delenv("AFFECTLOOP_WHEEL_DIR", raising=False)


def report(*args) -> str:
    out = io.StringIO()
    call_command("project_report", *args, stdout=out)
    return out.getvalue()


def test_json_is_one_object_with_models_agreement_and_labels(project, scored, agreement_clips):
    data = json.loads(report("--project", project.name, "--json"))
    assert [(m["backend"], m["model_version"]) for m in data["models"]] == [("internvl", scored["v1"]),
                                                                          ("fused", "fused:v1")]
    for entry in data["models"]:
        assert MODEL_KEYS <= set(entry)
        assert set(entry["ci"]) == {"precision", "recall", "f"}
    internvl = data["models"][0]
    # The hand-computed figures of test_quality: P = R = F = 1/2 on 3 clips (6 decimals, as ml.evaluate).
    assert {k: internvl[k] for k in MODEL_KEYS} == {"backend": "internvl", "model_version": scored["v1"],
                                                     "clips": 3, "precision": 0.5, "recall": 0.5, "f": 0.5}
    assert isinstance(internvl["at"], str)  # ISO time: the dashboard's time axis
    assert data["agreement"]["n"] == 3
    assert data["agreement"]["alpha"] == round(1 - 19.98 / 35.99, 6)
    assert data["agreement"]["jaccard"] == round((1 + 1 / 2 + 1 / 3) / 3, 6)
    assert data["labels"] == {"joy": 3, "anger": 1, "calm": 1, "sadness": 1}
    assert data["split"] == "test" and data["verified_clips"] == 5


def test_split_all_scores_every_verified_clip(project, scored):
    data = json.loads(report("--project", project.slug, "--split", "all", "--json"))
    assert (data["models"][0]["clips"], data["models"][0]["f"]) == (4, 0.625)


def test_the_text_form_is_a_readable_table(project, scored, agreement_clips):
    text = report("--project", project.slug)
    lines = text.splitlines()
    assert lines[0].startswith(f"Project {project.slug} ")
    header = next(line for line in lines if line.strip().startswith("backend"))
    assert header.split() == ["backend", "model", "version", "clips", "precision", "recall", "F", "since"]
    row = next(line for line in lines if line.strip().startswith("internvl"))
    assert row.split()[:4] == ["internvl", scored["v1"], "3", "0.500"]
    assert "[" in row and "]" in row  # the interval
    assert any(line.strip().startswith("project") and "0.611" in line for line in lines)
    assert any(line.split()[:2] == ["carol", "0.000"] for line in lines)
    assert any(line.split() == ["joy", "3"] for line in lines)
    assert "Traceback" not in text and "{" not in text


def test_an_empty_project_reports_no_data(project):
    data = json.loads(report("--project", project.slug, "--json"))
    assert data["models"] == [] and data["labels"] == {}
    assert {k: data["agreement"][k] for k in ("alpha", "jaccard", "n")} == {"alpha": None, "jaccard": None, "n": 0}
    assert "no model has predictions" in report("--project", project.slug)


def test_unknown_project_and_bad_wheel_dir_are_one_line_errors(project, tmp_path):
    with pytest.raises(CommandError) as unknown:
        report("--project", "no-such-project")
    assert str(unknown.value) == "no project named 'no-such-project'"
    with pytest.raises(CommandError) as bad:
        report("--project", project.slug, "--wheel-dir", str(tmp_path / "missing"))
    assert str(bad.value).startswith("bad --wheel-dir: ") and "\n" not in str(bad.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(CommandError) as empty:
        report("--project", project.slug, "--wheel-dir", str(tmp_path / "empty"))
    assert str(empty.value).startswith("bad --wheel-dir: ") and "\n" not in str(empty.value)


def _write(path: Path, labels: dict[str, list[str]]) -> Path:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["name", "openset"])
        for name, words in labels.items():
            writer.writerow([name, repr(list(words))])
    return path


def test_wheel_figures_equal_ml_evaluate_on_the_same_labels(project, scored, tmp_path):
    wheel_dir = reference_path("emotion_wheel")
    data = json.loads(report("--project", project.slug, "--wheel-dir", str(wheel_dir), "--json"))
    # The verified labels of the test split and what each model said, as CSVs: each model is scored on the
    # verified clips it has a prediction for.
    gold = {"T1": ["happy", "excited"], "T2": ["sad"], "T3": ["angry"]}
    predicted = {("internvl", scored["v1"]): {"T1": ["glad"], "T2": ["sad", "tired"], "T3": []},
                 ("fused", "fused:v1"): {"T1": ["happy", "excited"], "T2": ["sad"]}}
    assert [(m["backend"], m["model_version"]) for m in data["models"]] == list(predicted)
    for i, (model, labels) in enumerate(predicted.items()):
        gt = _write(tmp_path / f"gt{i}.csv", {name: gold[name] for name in labels})
        pred = _write(tmp_path / f"pred{i}.csv", labels)
        done = subprocess.run([sys.executable, "-m", "ml.evaluate", "--gt", str(gt), "--pred", str(pred),
                               "--wheel-dir", str(wheel_dir)], cwd=REPO, capture_output=True, text=True, check=True)
        expected = json.loads(done.stdout)
        entry = data["models"][i]
        assert entry["metric"] == "wheel"
        assert {k: entry[k] for k in ("f", "precision", "recall", "clips")} == {
            "f": expected["f"], "precision": expected["precision"], "recall": expected["recall"],
            "clips": expected["n"]}
        assert entry["vocabulary"]["term"]["n"] == entry["clips"]  # the vocabulary figures stay beside
    # Not a trivial agreement: the fusion's exact labels score 1, InternVL's do not.
    assert data["models"][1]["f"] == 1.0 and data["models"][0]["f"] < 1.0


def test_a_configured_wheel_folder_is_used_without_the_option(project, scored, settings):
    settings.WHEEL_DIR = str(reference_path("emotion_wheel"))
    data = json.loads(report("--project", project.slug, "--json"))
    assert data["models"][0]["metric"] == "wheel" and "wheel" in data["models"][0]
