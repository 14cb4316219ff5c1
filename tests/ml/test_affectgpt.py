"""The AffectGPT re-implementation against the release's checkpoint layout and data flow, on a tiny random
model (CPU). The key list comes from ../shared/reference/affectgpt/checkpoint_keys.tsv, never from the repo."""

import re
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from ml.backends.affectgpt import (
    PLACEHOLDERS,
    AffectGPTBackend,
    AffectGPTModel,
    CheckpointMismatch,
    audio_clips,
    build_prompt,
    clean_answer,
    file_sha256,
    first_stop,
    joint_normalise,
    labels_from_answer,
    linear_score_pool,
)
from ml.testing.samples import generate_sample_clips, make_clip
from ml.testing.tiny_affectgpt import build_tiny_affectgpt, write_official_style_checkpoint
from ml.types import ClipInput
from tests.conftest import reference_path, skip_without_ffmpeg

REAL_DIMS = {"H": 3584, "V": 768, "A": 1024, "X": 1024, "I": 18944, "KV": 512, "r": 16}
HEADS = {"image_llama_proj": ("H", "V"), "video_attention_mlp": (1, "V"), "affectgpt_proj": ("H", "V"),
         "audio_attention_mlp": (1, "A"), "audio_llama_proj": ("H", "A"), "multi_audio_embs": ("X", "A"),
         "multi_video_embs": ("X", "V"), "attention_mlp": ("X", "2X"), "fc_att": (2, "X"),
         "multi_llama_proj": ("H", "X")}


def expected_shape(key: str, d: dict[str, int]) -> list[int]:
    """The README's shape formulas for each checkpoint key, in terms of H, V, A, X = max(A, V), I, r and
    KV = n_kv_heads * head_dim."""
    if key.startswith("llama_model."):
        proj, side = re.search(r"\.(\w+_proj)\.lora_(A|B)\.default\.weight$", key).groups()
        fan_in = d["I"] if proj == "down_proj" else d["H"]
        fan_out = {"k_proj": d["KV"], "v_proj": d["KV"], "gate_proj": d["I"], "up_proj": d["I"]}.get(proj, d["H"])
        return [d["r"], fan_in] if side == "A" else [fan_out, d["r"]]
    module, kind = key.rsplit(".", 1)
    dim = lambda s: s if isinstance(s, int) else 2 * d["X"] if s == "2X" else d[s]
    out_f, in_f = (dim(s) for s in HEADS[module])
    return [out_f, in_f] if kind == "weight" else [out_f]


@pytest.fixture(scope="module")
def reference_keys() -> list[tuple[str, list[int], str]]:
    keys_tsv = reference_path("affectgpt", "checkpoint_keys.tsv")
    rows = [line.split("\t") for line in keys_tsv.read_text().splitlines()[1:] if line.strip()]
    return [(key, [int(n) for n in shape.strip("[]").split(",")], dtype) for key, shape, dtype in rows]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("affectgpt")
    model_dir = build_tiny_affectgpt(root / "model")
    # The "trained" model: every trainable tensor random (LoRA B is zero at init), so loads are visible.
    trained = AffectGPTModel.from_pretrained(model_dir, seed=1)
    with torch.no_grad():
        for param in trained.parameters():
            if param.requires_grad:
                param.normal_(0.0, 0.1)
    checkpoint = write_official_style_checkpoint(trained, root / "checkpoint_000030_loss_0.500.pth")
    return {"root": root, "model_dir": model_dir, "trained": trained, "checkpoint": checkpoint}


@pytest.fixture(scope="module")
def backend(tiny):
    return AffectGPTBackend(tiny["model_dir"], checkpoint=tiny["checkpoint"], max_new_tokens=12, batch_size=4)


@pytest.fixture(scope="module")
def clips(tiny):
    skip_without_ffmpeg()
    out = tiny["root"] / "clips"
    samples = generate_sample_clips(out, 2, seconds=2.0, width=160, height=120, speech=False)
    silent = make_clip(out / "silent.mp4", audio=False)
    broken = out / "broken.mp4"
    broken.write_bytes(b"not a video")
    return {"samples": [ClipInput(f"c{i}", s.path, s.transcript) for i, s in enumerate(samples)],
            "silent": ClipInput("silent", silent, ""), "broken": ClipInput("broken", broken, "hello")}


def saved_state(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


# --- (a) checkpoint layout ------------------------------------------------------------------------------

def test_checkpoint_key_names_are_the_releases(tiny, reference_keys):
    names = list(saved_state(tiny["checkpoint"]))
    assert len(reference_keys) == 412
    assert names == [key for key, _, _ in reference_keys]  # same names, same order


def test_checkpoint_shapes_follow_the_release_formulas(tiny, reference_keys):
    for key, shape, dtype in reference_keys:
        assert expected_shape(key, REAL_DIMS) == shape, key
        assert dtype == "float32"
    model = tiny["trained"]
    llm = model.llama_model.config
    v, a = model.visual_encoder.model.config.projection_dim, model.acoustic_encoder.model.config.hidden_size
    head_dim = llm.hidden_size // llm.num_attention_heads
    dims = {"H": llm.hidden_size, "V": v, "A": a, "X": max(a, v), "I": llm.intermediate_size,
            "KV": llm.num_key_value_heads * head_dim, "r": 16}
    free = [d for name, d in dims.items() if name != "X"]  # X is max(A, V) by definition
    assert len(set(free)) == len(free)  # distinct, so a swapped dimension cannot pass
    for key, tensor in saved_state(tiny["checkpoint"]).items():
        assert list(tensor.shape) == expected_shape(key, dims), key
        assert tensor.dtype == torch.float32


# --- (b) loading, (c) mismatches -------------------------------------------------------------------------

def frozen_names_from_the_bases(model_dir: Path) -> set[str]:
    """Independently of AffectGPTModel: every base parameter under the name the wrapper gives it."""
    from transformers import AutoModelForCausalLM, CLIPModel, HubertModel

    names = {f"visual_encoder.model.{n}" for n, _ in CLIPModel.from_pretrained(model_dir / "clip").named_parameters()}
    names |= {f"acoustic_encoder.model.{n}" for n, _ in
              HubertModel.from_pretrained(model_dir / "hubert").named_parameters()}
    adapted = re.compile(r"(model\.layers\.\d+\.(self_attn\.[qkvo]_proj|mlp\.(gate|up|down)_proj))\.")
    for n, _ in AutoModelForCausalLM.from_pretrained(model_dir / "llm").named_parameters():
        names.add("llama_model.base_model.model." + adapted.sub(r"\1.base_layer.", n))
    return names


def test_official_checkpoint_loads_with_exact_key_sets(tiny):
    fresh = AffectGPTModel.from_pretrained(tiny["model_dir"])
    saved = saved_state(tiny["checkpoint"])
    frozen = {name for name, p in fresh.named_parameters() if not p.requires_grad}
    assert frozen == frozen_names_from_the_bases(tiny["model_dir"])
    assert set(fresh.trainable_names()) == set(saved)
    before = fresh.state_dict()
    assert all(not torch.equal(before[k], v) for k, v in saved.items() if k.endswith(".weight"))

    missing, unexpected = fresh.load_checkpoint(tiny["checkpoint"])
    assert unexpected == set()
    assert missing == frozen
    after = fresh.state_dict()
    for key, tensor in saved.items():
        assert torch.equal(after[key], tensor), key


def test_mismatched_checkpoint_is_reported_precisely(tiny, backend):
    state = saved_state(tiny["checkpoint"])
    del state["fc_att.bias"]
    state["stray_head.weight"] = torch.zeros(3)
    bad = tiny["root"] / "bad.pth"
    torch.save({"model": state}, bad)

    fresh = AffectGPTModel.from_pretrained(tiny["model_dir"])
    frozen = {name for name, p in fresh.named_parameters() if not p.requires_grad}
    missing, unexpected = fresh.load_checkpoint(bad)
    assert unexpected == {"stray_head.weight"}
    assert missing == frozen | {"fc_att.bias"}

    version, weight = backend.model_version, backend.model.fc_att.weight.detach().clone()
    with pytest.raises(CheckpointMismatch) as info:
        backend.load_checkpoint(bad)
    assert info.value.missing == {"fc_att.bias"} and info.value.unexpected == {"stray_head.weight"}
    assert backend.model_version == version  # refused before any weight was touched
    assert torch.equal(backend.model.fc_att.weight, weight)


def test_safetensors_checkpoint_and_unsafe_pickles(tiny):
    from fractions import Fraction

    from safetensors.torch import save_file

    state = saved_state(tiny["checkpoint"])
    flat = tiny["root"] / "ckpt.safetensors"
    save_file(state, str(flat))
    fresh = AffectGPTModel.from_pretrained(tiny["model_dir"])
    missing, unexpected = fresh.load_checkpoint(flat)
    assert unexpected == set() and not missing & set(state)
    assert torch.equal(fresh.fc_att.weight, state["fc_att.weight"])

    unsafe = tiny["root"] / "unsafe.pth"
    torch.save({"model": state, "epoch": Fraction(1, 3)}, unsafe)  # any non-allowlisted object
    with pytest.raises(ValueError, match="weights_only"):
        fresh.load_checkpoint(unsafe)


# --- (d) prediction, (g) no audio ------------------------------------------------------------------------

@pytest.mark.parametrize("workers", [1, 3])
def test_predict_is_versioned_deterministic_and_isolates_broken_clips(tiny, backend, clips, monkeypatch, workers):
    """Whether a batch's clips are read one after another or side by side (ml.video.read_each)."""
    monkeypatch.setattr(backend, "decode_workers", workers)
    batch = [clips["samples"][0], clips["broken"], clips["samples"][1]]
    first = backend.predict(batch)
    assert backend.model_version == f"affectgpt:tiny-qwen2+{file_sha256(tiny['checkpoint'])[:12]}+agpt-p1"
    assert [p.clip_id for p in first] == ["c0", "broken", "c1"]
    assert first[1].error and first[1].labels == [] and first[1].model_version == backend.model_version
    for pred, clip in ((first[0], batch[0]), (first[2], batch[2])):
        assert pred.error == "" and pred.model_version == backend.model_version
        assert pred.prompt_tokens == len(backend.prompt_ids(clip.transcript)[0])
        assert pred.seconds > 0
        assert "no_audio" not in pred.flags  # the sample clips carry a tone
        assert set(pred.flags) <= {"truncated", "subtitle_truncated", "refusal", "empty", "unknown_terms"}
        assert all(label.source == "affectgpt" for label in pred.labels)
    # A second run, one clip at a time: greedy answers repeat, and left-padded batching changes nothing.
    backend.batch_size = 1
    try:
        again = backend.predict(batch)
    finally:
        backend.batch_size = 4
    assert [(p.raw_text, p.flags) for p in again] == [(p.raw_text, p.flags) for p in first]
    for a, b in zip(again, first):  # padding moves the float sums a little, never the tokens
        assert [(x.term, x.source) for x in a.labels] == [(x.term, x.source) for x in b.labels]
        assert [x.score for x in a.labels] == pytest.approx([x.score for x in b.labels], abs=1e-5)


def test_clip_without_audio_predicts_on_silence(backend, clips):
    [pred] = backend.predict([clips["silent"]])
    assert pred.error == ""
    assert "no_audio" in pred.flags
    assert pred.prompt_tokens == len(backend.prompt_ids("")[0])


def test_sampling_mode_runs(tiny, clips):
    sampler = AffectGPTBackend(tiny["model_dir"], greedy=False, max_new_tokens=4)
    assert sampler.model_version == "affectgpt:tiny-qwen2+nockpt+agpt-p1"
    [pred] = sampler.predict([clips["samples"][0]])
    assert pred.error == ""


def test_labels_are_scored_from_their_tokens():
    texts = ["The", " character", "'s", " emotional", " state", " is", " happy", ",", " nervous", "."]
    probs = [0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.6, 0.9, 0.3, 0.9]
    labels, flags = labels_from_answer("".join(texts), texts, probs)
    assert [(label.term, label.score, label.source) for label in labels] == [
        ("happy", pytest.approx(0.6), "affectgpt"), ("nervous", pytest.approx(0.3), "affectgpt")]
    assert "format_ignored" not in flags


def test_answer_post_processing_and_stop_rule():
    assert clean_answer("The character's emotional state is happy.###<|im_end|>") == \
        "The character's emotional state is happy."
    assert clean_answer("x<|im_start|>Assistant: sad, tired.###") == "sad, tired."
    hashes, hash2, hash1, eos = 7, 8, 9, 1
    stops = [[eos], [hashes], [hash2, hash1], [hash1, hash2]]
    assert first_stop([5, 6, hash2, hash1, 4], stops) == (2, 4)
    assert first_stop([5, hashes], stops) == (1, 2)
    assert first_stop([5, hash2, 6], stops) is None


# --- (e) prompt --------------------------------------------------------------------------------------------

def test_prompt_is_the_releases_frame_prompt(backend):
    assert build_prompt("I can't believe it.") == (
        "###Human: The audio and video merged info is: <Multi><MultiHere></Multi>. The audio content is as "
        "follows: <Audio><AudioHere></Audio>. Meanwhile, we uniformly sample raw frames from the video: "
        "<Video><FrameHere></Video>. The subtitle of this video is: <Subtitle>I can't believe it.</Subtitle>. "
        "Now, please answer my question based on all the provided information. Please recognize all possible "
        "emotional states of the character. ###Assistant: ")
    ids, cut = backend.prompt_ids("I can't believe it.")
    assert not cut
    assert backend.tokenizer.decode(ids) == build_prompt("I can't believe it.")  # raw text, no BOS, no template
    vocab = backend.tokenizer.get_vocab()
    for token in ("<MultiHere>", "<AudioHere>", "<FrameHere>"):
        assert ids.count(vocab[token]) == 1
    assert ids.index(vocab["<MultiHere>"]) < ids.index(vocab["<AudioHere>"]) < ids.index(vocab["<FrameHere>"])

    vectors = {t: torch.full((backend.model.llama_model.config.hidden_size,), float(i + 2))
               for i, t in enumerate(("<MultiHere>", "<AudioHere>", "<FrameHere>"))}
    embeds = backend.embed_prompt(ids, vectors)
    table = backend.model.llama_model.get_input_embeddings().weight
    for pos, token_id in enumerate(ids):
        token = backend.tokenizer.convert_ids_to_tokens(token_id)
        assert torch.equal(embeds[pos], vectors[token] if token in vectors else table[token_id])


def test_long_subtitles_are_cut_not_the_media_tokens(backend):
    ids, cut = backend.prompt_ids("so very long " * 200)
    assert cut and len(ids) <= backend.config.max_prompt_tokens
    vocab = backend.tokenizer.get_vocab()
    assert all(ids.count(vocab[t]) == 1 for t in ("<MultiHere>", "<AudioHere>", "<FrameHere>"))
    assert set(PLACEHOLDERS) <= set(vocab)
    ids, _ = backend.prompt_ids("typed <AudioHere> and <FaceHere>")
    assert sum(ids.count(vocab[t]) for t in PLACEHOLDERS) == 3


# --- (f) pooling and media -----------------------------------------------------------------------------------

def test_pooling_uses_raw_linear_scores_without_softmax():
    features = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]])
    scorer = torch.nn.Linear(2, 1)
    with torch.no_grad():
        scorer.weight.copy_(torch.tensor([[1.0, -2.0]]))
        scorer.bias.fill_(0.5)
    # scores 1.5, -1.5, -0.5: negative and not summing to 1
    assert torch.allclose(linear_score_pool(features, scorer), torch.tensor([[1.0, -2.0]]))


def test_fusion_weights_are_raw_linear_scores(tiny):
    model = tiny["trained"]
    v = torch.randn(1, model.multi_video_embs.in_features)
    a = torch.randn(1, model.multi_audio_embs.in_features)
    with torch.no_grad():
        saved = model.fc_att.weight.clone(), model.fc_att.bias.clone()
        model.fc_att.weight.zero_()
        model.fc_att.bias.copy_(torch.tensor([2.0, -3.0]))
        try:
            fused = model.fuse(v, a)
        finally:
            model.fc_att.weight.copy_(saved[0])
            model.fc_att.bias.copy_(saved[1])
        expected = 2.0 * model.multi_video_embs(v) - 3.0 * model.multi_audio_embs(a)
    assert torch.allclose(fused, expected, atol=1e-6)


def test_audio_clips_and_joint_normalisation():
    wave = torch.arange(55357, dtype=torch.float32).numpy()  # the README's 3.46 s demo
    cut = audio_clips(wave)
    assert cut.shape == (8, 32000)
    assert [int(c[0]) for c in cut] == [0, 2919, 5839, 8758, 11678, 14598, 17517, 20437]
    short = audio_clips(wave[:1000])
    assert short.shape == (8, 32000) and (short[:, 1000:] == 0).all()

    rng = torch.Generator().manual_seed(0)
    clips = (torch.randn(8, 32000, generator=rng) * torch.arange(1, 9).unsqueeze(1)).numpy()
    normed = joint_normalise(clips)
    assert abs(float(normed.mean())) < 1e-4 and abs(float(normed.std()) - 1) < 1e-3
    assert abs(float(normed[0].std()) - float(normed[7].std())) > 0.5  # one scale for all, not per clip


def test_media_preprocessing(backend, clips):
    import numpy as np

    from ml.video import sample_frames

    media = backend.load_media(clips["samples"][0])
    assert tuple(media.pixels.shape) == (8, 3, 224, 224)
    assert tuple(media.audio.shape) == (8, 32000)
    frames = torch.from_numpy(sample_frames(clips["samples"][0].video_path, 8)).permute(0, 3, 1, 2).float()
    squashed = torch.nn.functional.interpolate(frames, size=(224, 224), mode="bilinear", antialias=True)
    squashed = squashed.round().clamp(0, 255) / 255
    mean = torch.tensor(backend.image_processor.image_mean).view(1, 3, 1, 1)
    std = torch.tensor(backend.image_processor.image_std).view(1, 3, 1, 1)
    assert torch.allclose(media.pixels, (squashed - mean) / std, atol=1e-5)  # a pure normalise at 224 px
    hubert = backend.model.acoustic_encoder.model
    with torch.inference_mode():
        assert hubert(media.audio[:1]).last_hidden_state.shape[1] == 99  # frames per 2-s clip
    assert np.isfinite(media.audio.numpy()).all()


def test_control_tokens_in_a_subtitle_are_removed(tiny):
    backend = AffectGPTBackend(tiny["model_dir"])
    clean, _ = backend.prompt_ids("I am fine<|im_end|> really <AudioHere>")
    plain, _ = backend.prompt_ids("I am fine really")
    assert clean == plain
