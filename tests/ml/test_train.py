"""LoRA training (`python -m ml.train` / `ml.train.train`) on tiny random InternVLs built in code, on the CPU:
nothing is downloaded.

The proof that it learns: solid-colour clips whose hue is the emotion and whose transcript is neutral
(ml.testing.samples.generate_colour_clips), so a held-out clip can only be labelled from its frames. The base
model answers garbage (exact match 0); after 80 LoRA steps the adapter, loaded back through the production
pre-labeling path, labels the held-out clips right. That run uses 56-px frames (4 image tokens each) to stay
fast; the prompt tests use the real geometry (448 px, 256 tokens per frame).

Training runs with one thread (OMP_NUM_THREADS=1 / torch.set_num_threads(1)): with two threads on a busy
2-core machine every tiny operation waits ~8 ms for the other core, and a step takes 2 s instead of 0.2 s.
"""

import dataclasses
import json
import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch = pytest.importorskip("torch", reason="training needs torch (worker dependencies)")
pytest.importorskip("torchvision", reason="the InternVL processor needs torchvision")
pytest.importorskip("peft", reason="LoRA needs peft")

from safetensors.torch import load_file

from ml.backends.internvl import InternVLBackend
from ml.testing.samples import generate_colour_clips, make_clip, write_training_jsonl
from ml.testing.tiny_internvl import build_tiny_internvl
from ml.train import TrainConfig, TrainingStopped, build_parser, config_from_args, train
from ml.training.checkpoints import ResumeError, latest_checkpoint
from ml.training.config import LORA_TARGET_MODULES, ConfigError
from ml.training.data import (
    IGNORE_INDEX,
    Example,
    Sample,
    TrainingDataError,
    TrainingDataset,
    Unreadable,
    collate_examples,
    data_hash,
    epoch_batches,
    mix_captions,
    read_samples,
)
from ml.training.devices import setup_devices
from ml.training.loop import load_model
from ml.types import ClipInput
from tests.conftest import needs_ffmpeg

pytestmark = needs_ffmpeg
ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
# The colour task: 32 training clips, 16 held out, 4 emotions; 80 steps of batch 8 at lr 5e-3, r 8, 4 frames.
LEARN = ["--epochs", "20", "--batch-size", "8", "--grad-accum", "1", "--lr", "5e-3", "--lora-r", "8",
         "--num-frames", "4", "--eval-every", "40", "--log-every", "10", "--num-workers", "0",
         "--max-new-tokens", "12"]
# Short runs for the loop's mechanics (resume, early stopping): 16 steps of batch 4.
SHORT = TrainConfig(num_frames=4, lora_rank=8, learning_rate=5e-3, batch_size=4, grad_accum=2, epochs=4,
                    eval_every=3, log_every=1, num_workers=0, max_new_tokens=8)


def run_module(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], check=False, cwd=ROOT, env=ENV, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def small_model(tmp_path_factory) -> Path:
    """56-px frames, 4 image tokens each: the learning runs."""
    return build_tiny_internvl(tmp_path_factory.mktemp("models") / "tiny56", image_size=56)


@pytest.fixture(scope="module")
def real_geometry_model(tmp_path_factory) -> Path:
    """448-px frames, 256 image tokens each, as InternVL3: the prompt tests."""
    return build_tiny_internvl(tmp_path_factory.mktemp("models") / "tiny448")


@pytest.fixture(scope="module")
def colour_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("colour")
    write_training_jsonl(root / "train.jsonl", generate_colour_clips(root / "clips", 32, seed=1))
    write_training_jsonl(root / "eval.jsonl", generate_colour_clips(root / "clips", 16, seed=2))
    return root


def eval_clips(data: Path) -> tuple[list[ClipInput], list[list[str]]]:
    samples = read_samples(data / "eval.jsonl")
    return ([ClipInput(s.where, s.video, s.transcript) for s in samples], [list(s.labels) for s in samples])


def exact_match(backend: InternVLBackend, clips, gold) -> float:
    predictions = backend.predict(clips)
    right = sum({label.term for label in p.labels} == set(g) for p, g in zip(predictions, gold, strict=True))
    return right / len(gold)


# --- the learning proof (one CLI run shared by the tests below) ----------------------------------------

@pytest.fixture(scope="module")
def trained(small_model, colour_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "adapter"
    result = run_module("ml.train", "--base", str(small_model), "--train", str(colour_data / "train.jsonl"),
                        "--eval", str(colour_data / "eval.jsonl"), "--out", str(out), *LEARN)
    assert result.returncode == 0, result.stderr[-3000:]
    return out, result


def test_lora_learns_the_emotion_that_only_the_colour_tells(trained, small_model, colour_data):
    out, result = trained
    clips, gold = eval_clips(colour_data)
    base = InternVLBackend(str(small_model), num_frames=4, max_new_tokens=12)
    before = exact_match(base, clips, gold)

    final = json.loads(result.stdout.strip().splitlines()[-1])
    tuned = InternVLBackend(str(small_model), adapter=str(out), num_frames=4, max_new_tokens=12)
    after = exact_match(tuned, clips, gold)

    assert before <= 0.25
    assert after >= 0.9
    # Training's evaluation generates through the production predict step: the same answers.
    assert final["exact_match"] == pytest.approx(after)
    assert final["n"] == 16 and final["f"] >= 0.9 and final["eval_loss"] < 1.0


def test_adapter_loads_through_prelabel_and_changes_its_answer(trained, small_model, colour_data):
    out, _ = trained
    clip = next(c for c, g in zip(*eval_clips(colour_data), strict=True) if g == ["sad"])
    common = ["ml.prelabel", "--backend", "internvl", "--model", str(small_model),
              "--video", str(clip.video_path), "--transcript", clip.transcript, "--frames", "4"]
    base, tuned = run_module(*common), run_module(*common, "--adapter", str(out))
    assert base.returncode == 0 and tuned.returncode == 0, tuned.stderr[-2000:]
    base, tuned = json.loads(base.stdout), json.loads(tuned.stdout)
    assert [label["term"] for label in tuned["labels"]] == ["sad"]
    assert tuned["raw_text"] == '["sad"]' != base["raw_text"]
    assert base["model_version"] == "internvl:tiny56+base+ivl-p1+f4"
    assert tuned["model_version"].startswith("internvl:tiny56+adapter@")


def test_output_layout_and_what_the_metrics_record(trained, small_model, colour_data):
    out, result = trained
    assert {"adapter_model.safetensors", "adapter_config.json", "training_config.json", "metrics.json",
            "eval_predictions.jsonl", "checkpoints"} <= {p.name for p in out.iterdir()}
    adapter_config = json.loads((out / "adapter_config.json").read_text())
    assert adapter_config["r"] == 8 and adapter_config["target_modules"] == LORA_TARGET_MODULES
    weights = load_file(out / "adapter_model.safetensors")
    assert weights and all(".language_model.layers." in key and "lora_" in key for key in weights)

    config = json.loads((out / "training_config.json").read_text())
    assert config == TrainConfig.from_dict({**config}).to_dict()
    assert (config["base_model"], config["learning_rate"], config["lora_rank"], config["epochs"]) == \
        (str(small_model), 5e-3, 8, 20)

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["seed"] == 0 and metrics["steps"] == metrics["total_steps"] == 80
    assert metrics["eval"] == json.loads(result.stdout.strip().splitlines()[-1])
    assert [entry["step"] for entry in metrics["history"]] == [40, 80]
    assert set(metrics["versions"]) >= {"python", "torch", "transformers", "peft", "av"}
    assert metrics["versions"]["torch"] == metadata.version("torch")
    files = [colour_data / "train.jsonl", colour_data / "eval.jsonl"]
    samples = [*read_samples(files[0]), *read_samples(files[1])]
    assert metrics["data_hash"] == data_hash(files, samples)
    assert metrics["samples"] == {"train": 32, "captions": 0, "eval": 16}

    predictions = [json.loads(line) for line in (out / "eval_predictions.jsonl").read_text().splitlines()]
    assert len(predictions) == 16 and {"video", "gold", "predicted", "raw_text"} <= set(predictions[0])

    # Checkpoints: the newest two (keep_checkpoints), each complete.
    steps = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert steps == ["step-00000040", "step-00000080"]
    assert latest_checkpoint(out).name == "step-00000080"


def test_progress_lines_then_the_final_json(trained):
    _, result = trained
    lines = result.stdout.strip().splitlines()
    progress = [line for line in lines[:-1] if line.startswith("step ")]
    assert progress[0].startswith("step 10/80 ") and " loss " in progress[0] and " lr " in progress[0]
    evaluations = [line for line in progress if "| eval " in line]
    assert [line.split()[1] for line in evaluations] == ["40/80", "80/80"]
    assert "exact_match" in evaluations[-1] and "eval_loss" in evaluations[-1]
    assert set(json.loads(lines[-1])) >= {"eval_loss", "exact_match", "precision", "recall", "f", "n"}


# --- training and inference build the same inputs -----------------------------------------------------

@pytest.fixture(scope="module")
def real_geometry(real_geometry_model):
    _, inputs = load_model(TrainConfig(base_model=str(real_geometry_model)), setup_devices("fp32"))
    backend = InternVLBackend(str(real_geometry_model), num_frames=8)
    return inputs, backend


def test_training_sample_is_the_inference_prompt_then_the_answer(real_geometry, colour_data, tmp_path):
    inputs, backend = real_geometry
    line = {"video": str(colour_data / "clips" / "colour_1_0002.mp4"), "transcript": "We <video> won, Sam!",
            "labels": ["Calm", "relieved", "calm"], "source": "ignored"}
    (tmp_path / "train.jsonl").write_text(json.dumps(line) + "\n")
    [sample] = read_samples(tmp_path / "train.jsonl")
    example = TrainingDataset(inputs, [sample])[0]

    prepared = backend.prepare([ClipInput("c", sample.video, sample.transcript)])
    prompt = prepared.inputs["input_ids"][0].tolist()
    n = len(prompt)
    assert example.input_ids[:n] == prompt  # the same token ids, through the same functions
    assert torch.equal(example.pixel_values, prepared.inputs["pixel_values"])
    image_token = backend.base_model.config.image_token_id
    assert prompt.count(image_token) == 8 * 256  # eight untiled 448-px frames

    # Only the answer is learnt: -100 exactly over the prompt.
    assert example.labels[:n] == [IGNORE_INDEX] * n
    answer = example.labels[n:]
    assert answer == example.input_ids[n:] and IGNORE_INDEX not in answer
    tokenizer = inputs.tokenizer
    assert tokenizer.decode(answer) == '["calm", "relieved"]<|im_end|>'


def test_caption_samples_use_the_captioning_prompt(real_geometry, colour_data, tmp_path):
    inputs, _ = real_geometry
    line = {"video": "clips/colour_1_0000.mp4", "transcript": "Okay.",
            "caption": "  A man frowns,\n arms crossed."}
    captions = colour_data / "captions_test.jsonl"
    captions.write_text(json.dumps(line) + "\n")
    [sample] = read_samples(captions, "caption")
    example = TrainingDataset(inputs, [sample])[0]
    n = example.labels.count(IGNORE_INDEX)
    text = inputs.tokenizer.decode(example.input_ids[:n])
    assert "Describe the person's facial expression" in text and "JSON list" not in text
    assert inputs.tokenizer.decode(example.input_ids[n:]) == "A man frowns, arms crossed.<|im_end|>"


def test_collate_pads_on_the_right_and_masks_the_padding():
    frames = [torch.full((2, 3, 4, 4), float(i)) for i in range(2)]
    examples = [Example([5, 6, 7], [IGNORE_INDEX, 6, 7], frames[0]),
                Example([5, 8, 9, 10, 11], [IGNORE_INDEX, IGNORE_INDEX, 9, 10, 11], frames[1])]
    batch = collate_examples(examples, pad_id=0)
    assert batch["input_ids"].tolist() == [[5, 6, 7, 0, 0], [5, 8, 9, 10, 11]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]
    assert batch["labels"].tolist() == [[-100, 6, 7, -100, -100], [-100, -100, 9, 10, 11]]
    assert torch.equal(batch["pixel_values"], torch.cat(frames))  # clip after clip, frames in order
    bad = Unreadable(Sample("t.jsonl:2", Path("/x.mp4"), "", "labels", '["sad"]', ("sad",)), "cannot decode")
    assert collate_examples([examples[0], bad], pad_id=0) is bad


# --- the data: reading, checking, mixing, ordering, hashing ---------------------------------------------

def test_lines_are_read_with_paths_relative_to_the_file(colour_data, tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    rows = [{"video": str(colour_data / "clips" / "colour_1_0000.mp4"), "labels": [" Angry ", "angry"]},
            {"video": "../data/clip.mp4", "transcript": "Hi.", "labels": ["sad"], "clip_id": 7}]
    (folder / "clip.mp4").write_bytes((colour_data / "clips" / "colour_1_0001.mp4").read_bytes())
    (folder / "train.jsonl").write_text("\n".join(json.dumps(row) for row in rows) + "\n\n")
    first, second = read_samples(folder / "train.jsonl")
    assert first.labels == ("angry",) and first.target == '["angry"]' and first.transcript == ""
    assert second.video == (folder / "clip.mp4").resolve() and second.where == f"{folder / 'train.jsonl'}:2"


@pytest.mark.parametrize(("line", "message"), [
    ({"video": "clips/colour_1_0000.mp4", "labels": []}, "empty labels"),
    ({"video": "clips/colour_1_0000.mp4", "labels": ["happy", " "]}, "empty labels"),
    ({"video": "clips/colour_1_0000.mp4"}, "empty labels"),
    ({"video": "clips/nope.mp4", "labels": ["sad"]}, "no such video file"),
    ({"labels": ["sad"]}, '"video" must be a non-empty path'),
    ("not json", "not JSON"),
])
def test_a_bad_line_is_named_by_file_and_line(colour_data, line, message):
    path = colour_data / "bad.jsonl"
    good = json.dumps({"video": "clips/colour_1_0001.mp4", "labels": ["happy"]})
    path.write_text(good + "\n" + (line if isinstance(line, str) else json.dumps(line)) + "\n")
    with pytest.raises(TrainingDataError, match=message) as caught:
        read_samples(path)
    assert str(caught.value).startswith(f"{path}:2: ")


def test_unreadable_video_stops_the_cli_naming_the_sample(small_model, colour_data, tmp_path):
    broken = colour_data / "clips" / "broken.mp4"
    broken.write_text("this is not a video")
    rows = [{"video": "clips/colour_1_0000.mp4", "labels": ["angry"]},
            {"video": "clips/broken.mp4", "labels": ["sad"]}]
    train_file = colour_data / "broken_train.jsonl"
    train_file.write_text("".join(json.dumps(row) + "\n" for row in rows))
    result = run_module("ml.train", "--base", str(small_model), "--train", str(train_file),
                        "--eval", str(colour_data / "eval.jsonl"), "--out", str(tmp_path / "out"))
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert last == f"error: {train_file}:2: {broken.resolve()}: " \
                   "unsupported file type: not MP4/MOV, WebM/MKV or AVI"
    assert not (tmp_path / "out").exists()


def test_empty_labels_stop_the_cli_naming_the_sample(small_model, colour_data, tmp_path):
    eval_file = colour_data / "empty_eval.jsonl"
    eval_file.write_text(json.dumps({"video": "clips/colour_2_0003.mp4", "labels": []}) + "\n")
    result = run_module("ml.train", "--base", str(small_model), "--train", str(colour_data / "train.jsonl"),
                        "--eval", str(eval_file), "--out", str(tmp_path / "out"))
    assert result.returncode == 2
    video = (colour_data / "clips" / "colour_2_0003.mp4").resolve()
    assert result.stderr.strip().splitlines()[-1] == \
        f"error: {eval_file}:1: {video}: empty labels (a sample needs at least one emotion word)"


def test_a_video_that_fails_to_decode_mid_run_stops_it_naming_the_sample(small_model, colour_data, tmp_path):
    good = (colour_data / "clips" / "colour_1_0005.mp4").read_bytes()
    damaged = tmp_path / "damaged.mp4"
    damaged.write_bytes(good[:good.find(b"mdat") + 8])  # the header is fine, the frames are gone
    rows = [{"video": str(colour_data / "clips" / "colour_1_0000.mp4"), "labels": ["angry"]},
            {"video": str(damaged), "labels": ["sad"]}]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    config = TrainConfig.from_dict({"base_model": str(small_model), "batch_size": 2}, base=SHORT)
    with pytest.raises(TrainingDataError) as caught:
        train(config, tmp_path / "train.jsonl", colour_data / "eval.jsonl", tmp_path / "out")
    assert str(caught.value) == f"{tmp_path / 'train.jsonl'}:2: {damaged}: cannot decode video: " \
                                "Invalid data found when processing input"


def test_captions_are_mixed_in_by_ratio_deterministically(colour_data, tmp_path):
    train_samples = read_samples(colour_data / "train.jsonl")
    lines = [json.dumps({"video": f"clips/colour_2_{i:04d}.mp4", "caption": f"caption {i}"})
             for i in range(5)]
    (colour_data / "captions.jsonl").write_text("\n".join(lines) + "\n")
    captions = read_samples(colour_data / "captions.jsonl", "caption")
    mixed = mix_captions(train_samples, captions, 0.25, seed=3)
    assert mixed[:32] == train_samples and len(mixed) == 40  # 0.25 x 32 = 8: the 5 captions, then 3 again
    added = [sample.target for sample in mixed[32:]]
    assert sorted(added[:5]) == [f"caption {i}" for i in range(5)] and added[5:] == added[:3]
    assert mix_captions(train_samples, captions, 0.25, seed=3) == mixed
    assert mix_captions(train_samples, captions, 0.25, seed=4) != mixed
    assert mix_captions(train_samples, captions, 0.0, seed=3) == train_samples


def test_epoch_batches_are_a_pure_function_and_shard_evenly():
    one = epoch_batches(10, 4, seed=0, epoch=0)
    assert sorted(i for batch in one for i in batch) == list(range(10)) and [len(b) for b in one] == [4, 4, 2]
    assert epoch_batches(10, 4, seed=0, epoch=0) == one != epoch_batches(10, 4, seed=0, epoch=1)
    ranks = [epoch_batches(10, 4, seed=0, epoch=0, rank=r, world=3) for r in range(3)]
    assert [[len(b) for b in batches] for batches in ranks] == [[4]] * 3  # 10 padded to 12, 4 each
    seen = [i for batches in ranks for batch in batches for i in batch]
    assert set(seen) == set(range(10)) and len(seen) == 12


def test_data_hash_follows_contents_not_location(colour_data, tmp_path):
    files = [colour_data / "train.jsonl", colour_data / "eval.jsonl"]
    original = data_hash(files, [*read_samples(files[0]), *read_samples(files[1])])
    moved = tmp_path / "moved"
    moved.mkdir()
    for name in ("train.jsonl", "eval.jsonl"):
        (moved / name).write_bytes((colour_data / name).read_bytes())
    (moved / "clips").symlink_to(colour_data / "clips")
    moved_files = [moved / "train.jsonl", moved / "eval.jsonl"]
    samples = [*read_samples(moved_files[0]), *read_samples(moved_files[1])]
    assert data_hash(moved_files, samples) == original

    replaced = tmp_path / "other.mp4"
    make_clip(replaced, seconds=0.5, audio=False)
    changed = [dataclasses.replace(samples[0], video=replaced), *samples[1:]]
    assert data_hash(moved_files, changed) != original


# --- settings ----------------------------------------------------------------------------------------

def test_settings_come_from_defaults_then_file_then_flags(tmp_path):
    (tmp_path / "run.yaml").write_text("base_model: /models/ivl\nepochs: 5\nlearning_rate: 0.0002\n"
                                       "lora_rank: 4\n")
    (tmp_path / "run.json").write_text(json.dumps({"epochs": 7, "schedule": "cosine"}))
    parser = build_parser()
    required = ["--train", "t.jsonl", "--eval", "e.jsonl", "--out", "o"]
    config = config_from_args(parser.parse_args([*required, "--config", str(tmp_path / "run.yaml"),
                                                 "--lr", "1e-3"]))
    assert (config.base_model, config.epochs, config.learning_rate, config.lora_rank) == \
        ("/models/ivl", 5, 1e-3, 4)
    assert config.lora_alpha == 32 and config.target_modules == LORA_TARGET_MODULES and config.num_frames == 8
    config = config_from_args(parser.parse_args([*required, "--config", str(tmp_path / "run.json"),
                                                 "--base", "m", "--lora-r", "2", "--batch-size", "3",
                                                 "--seed", "9", "--gradient-checkpointing"]))
    assert (config.epochs, config.schedule, config.lora_rank, config.batch_size, config.seed) == \
        (7, "cosine", 2, 3, 9)
    assert config.gradient_checkpointing is True


@pytest.mark.parametrize(("content", "message"), [
    ('{"epoch": 3}', "unknown field(s) epoch"),
    ('{"epochs": 0}', "epochs must be > 0"),
    ('{"learning_rate": "fast"}', "learning_rate must be a number"),
    ('{"precision": "fp8"}', "precision must be one of auto, bf16, fp16, fp32"),
    ("[1, 2]", "expected a mapping"),
])
def test_bad_settings_fail_naming_the_field(tmp_path, content, message):
    (tmp_path / "bad.json").write_text(content)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        TrainConfig.from_file(tmp_path / "bad.json")


def test_cli_without_a_base_model_fails_in_one_line(tmp_path):
    result = run_module("ml.train", "--train", "t.jsonl", "--eval", "e.jsonl", "--out", str(tmp_path),
                        timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == \
        "error: no base model: give --base MODEL_DIR or base_model in --config"


# --- the loop: resume, early stopping ----------------------------------------------------------------

def test_a_stopped_run_resumes_where_it_stopped(small_model, colour_data, tmp_path):
    config = TrainConfig.from_dict({"base_model": str(small_model)}, base=SHORT)
    args = (config, colour_data / "train.jsonl", colour_data / "eval.jsonl")

    straight: list[int] = []
    expected = train(*args, tmp_path / "straight", progress=lambda p: straight.append(p.step))
    assert straight == list(range(1, 17))

    seen: list[int] = []
    with pytest.raises(TrainingStopped) as stopped:
        train(*args, tmp_path / "resumed", progress=lambda p: seen.append(p.step),
              should_stop=lambda: seen[-1:] == [5])
    assert stopped.value.step == 5 and stopped.value.checkpoint.name == "step-00000005"
    assert not (tmp_path / "resumed" / "metrics.json").exists()
    result = train(*args, tmp_path / "resumed", progress=lambda p: seen.append(p.step))
    assert seen == list(range(1, 17))  # 6..16 after the stop: continued, not restarted

    # The same batches, dropout masks and optimiser state: the very same adapter and evaluations.
    a = load_file(tmp_path / "straight" / "adapter_model.safetensors")
    b = load_file(tmp_path / "resumed" / "adapter_model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert result["history"] == expected["history"] and result["eval"] == expected["eval"]

    # A finished run is returned, not redone; a different configuration is refused.
    assert train(*args, tmp_path / "resumed", progress=lambda p: pytest.fail("trained again")) == result
    with pytest.raises(ResumeError, match="other settings \\(learning_rate\\)"):
        train(TrainConfig.from_dict({"learning_rate": 1e-3}, base=config), *args[1:], tmp_path / "resumed")


def test_early_stopping_keeps_the_best_adapter(small_model, colour_data, tmp_path):
    # A learning rate too small to change any answer: exact match never improves after the first evaluation.
    config = TrainConfig.from_dict({"base_model": str(small_model), "learning_rate": 1e-7, "eval_every": 1,
                                    "monitor": "exact_match", "patience": 2}, base=SHORT)
    metrics = train(config, colour_data / "train.jsonl", colour_data / "eval.jsonl", tmp_path / "out")
    assert metrics["stopped_early"] and metrics["steps"] == 3 and metrics["best_step"] == 1
    assert [entry["step"] for entry in metrics["history"]] == [1, 2, 3]
    best = load_file(tmp_path / "out" / "checkpoints" / "step-00000001" / "adapter_model.safetensors")
    final = load_file(tmp_path / "out" / "adapter_model.safetensors")
    assert all(torch.equal(best[k], final[k]) for k in best)


def test_a_run_continues_from_a_parent_adapter(trained, small_model, colour_data, tmp_path):
    parent, _ = trained
    # A learning rate too small to move the weights: the child is its parent, evaluated as such.
    config = TrainConfig.from_dict({"base_model": str(small_model), "init_adapter": str(parent),
                                    "learning_rate": 1e-7, "epochs": 1}, base=SHORT)
    metrics = train(config, colour_data / "train.jsonl", colour_data / "eval.jsonl", tmp_path / "child")
    assert metrics["eval"]["exact_match"] >= 0.9  # a fresh LoRA starts at the base's <= 0.25
    child = load_file(tmp_path / "child" / "adapter_model.safetensors")
    weights = load_file(parent / "adapter_model.safetensors")
    assert child.keys() == weights.keys()
    assert all(torch.allclose(child[k], weights[k], atol=1e-4) for k in child)
    recorded = json.loads((tmp_path / "child" / "training_config.json").read_text())
    assert recorded["init_adapter"] == str(parent)

    with pytest.raises(ConfigError, match=r"another LoRA shape: r 8 \(this run: 4\)"):
        train(TrainConfig.from_dict({"lora_rank": 4}, base=config), colour_data / "train.jsonl",
              colour_data / "eval.jsonl", tmp_path / "other")
    with pytest.raises(ConfigError, match="no adapter_config.json"):
        train(TrainConfig.from_dict({"init_adapter": str(tmp_path)}, base=config), colour_data / "train.jsonl",
              colour_data / "eval.jsonl", tmp_path / "none")


# --- the web process never imports training ------------------------------------------------------------

def test_the_web_process_does_not_import_training(tmp_path):
    probe = (
        "import importlib, json, pkgutil, sys\n"
        "import django\n"
        "django.setup()\n"
        "for package in ('annotations', 'config'):\n"
        "    root = importlib.import_module(package)\n"
        "    for mod in pkgutil.walk_packages(root.__path__, package + '.'):\n"
        "        importlib.import_module(mod.name)\n"
        "from django.urls import get_resolver\n"
        "get_resolver().url_patterns\n"
        "loaded = [m for m in sys.modules if m == 'ml.train' or m.startswith('ml.training')]\n"
        "print(json.dumps(sorted(loaded)))\n"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings", "DJANGO_SECRET_KEY": "k" * 50,
           "AFFECTLOOP_DATA_DIR": str(tmp_path)}
    env.pop("DJANGO_SECRET_KEY_FILE", None)
    result = subprocess.run([sys.executable, "-c", probe], check=False, cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []
