"""The InternVL backend on a tiny random checkpoint built in code and loaded back with from_pretrained
(CPU, offline: nothing is downloaded)."""

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch = pytest.importorskip("torch", reason="the InternVL backend needs torch (worker dependencies)")
pytest.importorskip("torchvision", reason="the InternVL processor needs torchvision")
pytest.importorskip("transformers", reason="the InternVL backend needs transformers")
pytest.importorskip("peft", reason="adapters need peft")

from ml.backends.internvl import InternVLBackend, labels_from_answer
from ml.testing.samples import generate_sample_clips
from ml.testing.tiny_internvl import build_tiny_internvl, save_random_lora_adapter
from ml.types import ClipInput
from tests.conftest import needs_ffmpeg

FRAMES = 8
pytestmark = needs_ffmpeg


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return build_tiny_internvl(tmp_path_factory.mktemp("tiny_internvl"), seed=0)


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> list[ClipInput]:
    out = tmp_path_factory.mktemp("internvl_clips")
    # 16:9 frames: the image path would tile these into several 448-px crops, the video path must not.
    made = generate_sample_clips(out, 2, seconds=1.0, width=320, height=180, speech=False)
    # Different transcript lengths, so batching needs padding.
    return [ClipInput("short", made[0].path, "Fine."),
            ClipInput("long", made[1].path, "I have tried this all day and it still does not work, Alex.")]


@pytest.fixture(scope="module")
def backend(model_dir) -> InternVLBackend:
    return InternVLBackend(str(model_dir), num_frames=FRAMES, max_new_tokens=12)


@pytest.fixture(scope="module")
def adapters(model_dir, tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("adapters")
    # Same folder name, different weights: their versions must still differ.
    return (save_random_lora_adapter(model_dir, root / "run1" / "adapter", seed=1),
            save_random_lora_adapter(model_dir, root / "run2" / "adapter", seed=2))


def test_each_frame_is_one_untiled_tile(backend, clips):
    assert backend.image_tokens_per_frame == 256 and backend.image_size == 448
    batch = backend.prepare(clips[:1])
    assert tuple(batch.inputs["pixel_values"].shape) == (FRAMES, 3, 448, 448)
    image_token = backend.base_model.config.image_token_id
    assert int((batch.inputs["input_ids"] == image_token).sum()) == FRAMES * 256

    # The same frames through the image path tile (the processor turns crop_to_patches on): the pitfall.
    from ml.video import sample_frames

    frame = sample_frames(clips[0].video_path, 1)[0]
    tiled = backend.processor(text=["<IMG_CONTEXT>"], images=[frame], return_tensors="pt")
    assert tiled["pixel_values"].shape[0] > 1


def test_prompt_tokens_are_frames_times_tokens_plus_text(backend, clips):
    tokenizer = backend.processor.tokenizer
    for clip, prediction in zip(clips, backend.predict(clips), strict=True):
        text = backend.render_prompt(clip.transcript).replace("<video>", "")
        frame_wrappers = "\n".join(f"Frame{i + 1}: <img></img>" for i in range(FRAMES))
        text_tokens = len(tokenizer(text)["input_ids"]) + len(tokenizer(frame_wrappers)["input_ids"])
        assert prediction.prompt_tokens == FRAMES * backend.image_tokens_per_frame + text_tokens


def test_batched_predict_matches_one_by_one_and_is_deterministic(backend, clips, model_dir):
    batch = backend.prepare(clips)
    lengths = batch.inputs["attention_mask"].sum(dim=1)
    assert lengths[0] < lengths[1]
    assert batch.inputs["input_ids"][0, 0] == backend.processor.tokenizer.pad_token_id  # padded on the left

    first, second = backend.predict(clips), backend.predict(clips)
    assert [p.clip_id for p in first] == ["short", "long"]
    for p in first:
        assert p.error == "" and p.raw_text and p.seconds > 0
        assert p.model_version == backend.model_version == f"internvl:{model_dir.name}+base+ivl-p1+f8"
        assert p.prompt_tokens > FRAMES * 256
        assert all(label.source == "internvl" and (label.score is None or 0 <= label.score <= 1)
                   for label in p.labels)
    assert [p.raw_text for p in first] == [p.raw_text for p in second]
    one_by_one = [backend.predict([clip])[0] for clip in clips]
    assert [p.raw_text for p in one_by_one] == [p.raw_text for p in first]
    assert [p.prompt_tokens for p in one_by_one] == [p.prompt_tokens for p in first]


@pytest.mark.parametrize("workers", [1, 4])
def test_unreadable_video_fails_alone(backend, clips, tmp_path, monkeypatch, workers):
    """Read one after another or side by side (ml.video.read_each), the same answers in the same order."""
    monkeypatch.setattr(backend.inputs, "decode_workers", workers)
    broken = tmp_path / "broken.mp4"
    broken.write_text("this is not a video")
    results = backend.predict([clips[0], ClipInput("broken", broken), clips[1], clips[0]])
    assert [p.clip_id for p in results] == ["short", "broken", "long", "short"]
    assert results[1].error and results[1].labels == [] and results[1].raw_text == ""
    alone = backend.predict(clips)
    assert [p.raw_text for p in results[:1] + results[2:]] == [p.raw_text for p in alone + alone[:1]]
    assert not any(p.error for p in results[:1] + results[2:])
    assert backend.predict([]) == []


def test_labels_are_canonical_terms_scored_by_their_own_tokens(backend):
    answer = '["Glad", "worried"]'
    ids = backend.processor.tokenizer(answer)["input_ids"]  # one token per byte in the tiny tokenizer
    texts = backend._token_texts(ids)
    assert "".join(texts) == answer
    probs = [0.9 if 2 <= i < 6 else 0.3 if 10 <= i < 17 else 0.1 for i in range(len(ids))]
    labels, flags = labels_from_answer(answer, texts, probs)
    assert [label.term for label in labels] == ["happy", "worried"]  # "glad" is a form of "happy"
    assert {label.source for label in labels} == {"internvl"}
    assert [round(label.score, 6) for label in labels] == [0.9, 0.3]
    assert flags == []


def test_lora_wraps_only_language_model_layers(adapters, model_dir):
    wrapped = InternVLBackend(str(model_dir), adapter=str(adapters[0]), num_frames=2)
    names = [name for name, module in wrapped.model.named_modules() if hasattr(module, "lora_A")]
    layers = wrapped.base_model.config.text_config.num_hidden_layers
    assert len(names) == layers * 7
    assert all(".language_model.layers." in name for name in names)
    assert not any("vision_tower" in name or "multi_modal_projector" in name for name in names)
    assert wrapped.active_adapter is not None
    assert wrapped.model_version.startswith(f"internvl:{model_dir.name}+adapter@")


def test_switching_adapters_keeps_one_base(model_dir, adapters, clips):
    backend = InternVLBackend(str(model_dir), num_frames=2, max_new_tokens=4)
    base_model = backend.base_model
    vision_before = {k: v.clone() for k, v in base_model.model.vision_tower.state_dict().items()}
    clip = clips[:1]
    base_logits, base_version = backend.next_token_logits(clip), backend.model_version

    first = backend.add_adapter(adapters[0])
    backend.use_adapter(first)
    first_logits, first_version = backend.next_token_logits(clip), backend.model_version
    second = backend.add_adapter(adapters[1])
    backend.use_adapter(second)
    second_logits, second_version = backend.next_token_logits(clip), backend.model_version
    assert len({base_version, first_version, second_version}) == 3
    assert not torch.allclose(base_logits, first_logits) and not torch.allclose(first_logits, second_logits)

    backend.use_adapter(None)
    assert backend.model_version == base_version
    assert torch.equal(backend.next_token_logits(clip), base_logits)
    backend.use_adapter(first)
    assert torch.equal(backend.next_token_logits(clip), first_logits)
    assert backend.predict(clip)[0].model_version == first_version

    assert backend.base_model is base_model and backend.model.get_base_model() is base_model
    vision_after = base_model.model.vision_tower.state_dict()
    assert vision_after.keys() == vision_before.keys()
    assert all(torch.equal(vision_after[k], v) for k, v in vision_before.items())
