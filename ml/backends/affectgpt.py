"""AffectGPT (ICML 2025 release) re-implemented on transformers building blocks, as a pre-labelling backend.

Worker-only module (torch, transformers, peft at module level). No AffectGPT code is used: this follows the
architecture description in ../shared/reference/affectgpt/README.md, with the official module names so that
an official checkpoint (`torch.load(...)['model']`, trainable weights only) loads with `strict=False` and
the missing/unexpected key sets can be asserted.

Per clip: 8 frames -> CLIP image features -> linear-score pooling -> 1 token; 8 x 2 s audio clips -> HuBERT
(last-4-layer mean, time mean) -> linear-score pooling -> 1 token; the frame and audio means -> 2-way
linear-score fusion -> 1 token. The three vectors replace `<MultiHere>`, `<AudioHere>`, `<FrameHere>` in a
raw-text `###Human: ... ###Assistant: ` prompt carrying the subtitle, and Qwen2 (+ LoRA) answers.

model_dir layout (each part written by `save_pretrained`):
    clip/            CLIPModel + CLIPImageProcessor      (openai/clip-vit-large-patch14)
    hubert/          HubertModel [+ Wav2Vec2FeatureExtractor] (TencentGameMate/chinese-hubert-large)
    llm/             Qwen2 causal LM + tokenizer          (Qwen/Qwen2.5-7B-Instruct)
    affectgpt.json   optional `AffectGPTConfig` fields, e.g. {"llm_name": "Qwen2.5-7B-Instruct"}
"""

from __future__ import annotations

import json
import pickle
import time
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from peft import LoraConfig, get_peft_model
from torch import nn
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    CLIPImageProcessor,
    CLIPModel,
    GenerationConfig,
    HubertModel,
    StoppingCriteria,
    StoppingCriteriaList,
)

from ml.prompts import clean_transcript
from ml.scoring import scored_labels, token_pieces
from ml.types import ClipInput, Label, Prediction
from ml.versions import (
    AFFECTGPT_CONFIG_NAME,
    AFFECTGPT_DEFAULT_LLM,
    affectgpt_identity,
    file_sha256,
    prediction_version,
)
from ml.video import decode_workers as video_decode_workers
from ml.video import load_audio, read_each, sample_frames

SOURCE = "affectgpt"
CONFIG_NAME = AFFECTGPT_CONFIG_NAME
# Registered in this order by the official tokenizer setup, so the ids match a real Qwen2.5 vocabulary.
PLACEHOLDERS = ("<ImageHere>", "<AudioHere>", "<FrameHere>", "<FaceHere>", "<MultiHere>")
LORA_PROJECTIONS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                    "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")
OV_QUESTION = "Please recognize all possible emotional states of the character."
# Frame variant, verbatim (one string; single spaces between sentences; trailing space after "Assistant:").
PROMPT_TEMPLATE = (
    "###Human: The audio and video merged info is: <Multi><MultiHere></Multi>. "
    "The audio content is as follows: <Audio><AudioHere></Audio>. "
    "Meanwhile, we uniformly sample raw frames from the video: <Video><FrameHere></Video>. "
    "The subtitle of this video is: <Subtitle>{subtitle}</Subtitle>. "
    "Now, please answer my question based on all the provided information. {user_message} ###Assistant: "
)
HUBERT_NORM_EPS = 1e-7


@dataclass(frozen=True)
class AffectGPTConfig:
    llm_name: str = AFFECTGPT_DEFAULT_LLM
    num_frames: int = 8
    num_audio_clips: int = 8
    audio_clip_seconds: float = 2.0
    sample_rate: int = 16000
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    user_message: str = OV_QUESTION
    # The official code silently left-crops prompts over 800 tokens (losing the placeholders); we cut the
    # subtitle instead so the media tokens always survive.
    max_prompt_tokens: int = 800

    @classmethod
    def load(cls, model_dir: Path) -> AffectGPTConfig:
        path = model_dir / CONFIG_NAME
        data = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"{path}: unknown keys {sorted(unknown)}")
        return cls(**data)


class CheckpointMismatch(ValueError):
    def __init__(self, missing: set[str], unexpected: set[str]) -> None:
        self.missing, self.unexpected = missing, unexpected
        super().__init__(f"checkpoint does not fit: missing trainable {sorted(missing)}, "
                         f"unexpected {sorted(unexpected)}")


# --- pure pieces ---------------------------------------------------------------------------------------------

def linear_score_pool(features: torch.Tensor, scorer: nn.Linear) -> torch.Tensor:
    """[b, t, d] -> [b, d] as sum_t s_t * f_t with raw linear scores: the checkpoint was trained without
    softmax, so the weights are unnormalised and may be negative."""
    return (scorer(features) * features).sum(dim=1)


def build_prompt(subtitle: str, user_message: str = OV_QUESTION) -> str:
    return PROMPT_TEMPLATE.format(subtitle=subtitle, user_message=user_message)


def audio_clips(wave: np.ndarray, *, clips: int = 8, clip_samples: int = 32000) -> np.ndarray:
    """[clips, clip_samples]: clip k starts at floor(k * (n - clip_samples) / clips) (the divisor is
    `clips`, not clips - 1, so the tail is never used), after zero-padding to at least one clip."""
    wave = np.asarray(wave, dtype=np.float32)
    if len(wave) < clip_samples:
        wave = np.pad(wave, (0, clip_samples - len(wave)))
    span = len(wave) - clip_samples
    return np.stack([wave[k * span // clips:k * span // clips + clip_samples] for k in range(clips)])


def joint_normalise(clips: np.ndarray) -> np.ndarray:
    """Zero mean, unit variance over all clips at once (one mean, one variance): the official feeds the
    clips to the feature extractor as a single item; per-clip normalisation gives other features."""
    return (clips - clips.mean()) / np.sqrt(clips.var() + HUBERT_NORM_EPS)


def clean_answer(text: str) -> str:
    """The official post-processing of the decoded new tokens (special tokens kept)."""
    if "<|im_start|>" in text:
        text = text.split("<|im_start|>")[1]
    text = text.split("<|im_end|>")[0]
    if "###" in text:
        text = text[:text.rfind("###")]
    return text.split("Assistant:")[-1].strip()


def labels_from_answer(text: str, token_texts: Sequence[str],
                       token_probs: Sequence[float]) -> tuple[list[Label], list[str]]:
    return scored_labels(text, token_texts, token_probs, source=SOURCE, expect_json=False)


# --- the model -----------------------------------------------------------------------------------------------

class VisualEncoder(nn.Module):
    def __init__(self, clip: CLIPModel) -> None:
        super().__init__()
        self.model = clip

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        out = self.model.get_image_features(pixel_values=pixel_values)
        # transformers 5 returns the projected CLS in .pooler_output; 4.x returned the tensor itself.
        return out if isinstance(out, torch.Tensor) else out.pooler_output


class AcousticEncoder(nn.Module):
    def __init__(self, hubert: HubertModel) -> None:
        super().__init__()
        self.model = hubert

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        hidden = self.model(clips, output_hidden_states=True).hidden_states
        return torch.stack(hidden[-4:]).mean(dim=0).mean(dim=1)


class AffectGPTModel(nn.Module):
    """Attribute names and registration order are the official ones: the state dict keys (and their
    order) of the trainable part are those of the released checkpoints."""

    def __init__(self, clip: CLIPModel, hubert: HubertModel, llm: nn.Module, *, lora_r: int = 16,
                 lora_alpha: int = 32, lora_dropout: float = 0.05) -> None:
        super().__init__()
        for part in (clip, hubert, llm):
            part.requires_grad_(False)
        # Full module names, not a bare ["q_proj", ...], exactly like the release: same adapted set.
        targets = [f"model.layers.{i}.{name}" for i in range(len(llm.model.layers)) for name in LORA_PROJECTIONS]
        self.llama_model = get_peft_model(llm, LoraConfig(
            task_type="CAUSAL_LM", inference_mode=False, r=lora_r, lora_alpha=lora_alpha,
            lora_dropout=lora_dropout, target_modules=targets))
        self.visual_encoder = VisualEncoder(clip)
        self.acoustic_encoder = AcousticEncoder(hubert)
        h, v, a = llm.config.hidden_size, clip.config.projection_dim, hubert.config.hidden_size
        x = max(a, v)
        self.image_llama_proj = nn.Linear(v, h)  # still-image path: never used for video, but saved
        self.video_attention_mlp = nn.Linear(v, 1)
        self.affectgpt_proj = nn.Linear(v, h)
        self.audio_attention_mlp = nn.Linear(a, 1)
        self.audio_llama_proj = nn.Linear(a, h)
        self.multi_audio_embs = nn.Linear(a, x)
        self.multi_video_embs = nn.Linear(v, x)
        self.attention_mlp = nn.Linear(2 * x, x)
        self.fc_att = nn.Linear(x, 2)
        self.multi_llama_proj = nn.Linear(x, h)

    @classmethod
    def from_pretrained(cls, model_dir: str | Path, *, llm_dtype: torch.dtype = torch.float32,
                        config: AffectGPTConfig | None = None, seed: int = 0) -> AffectGPTModel:
        model_dir = Path(model_dir)
        config = config or AffectGPTConfig.load(model_dir)
        clip = CLIPModel.from_pretrained(model_dir / "clip", dtype=torch.float32)
        hubert = HubertModel.from_pretrained(model_dir / "hubert", dtype=torch.float32)
        llm = AutoModelForCausalLM.from_pretrained(model_dir / "llm", dtype=llm_dtype)
        # Heads and LoRA are initialised randomly until a checkpoint is loaded: seed them so that even a
        # checkpoint-less model is reproducible.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = cls(clip, hubert, llm, lora_r=config.lora_r, lora_alpha=config.lora_alpha,
                        lora_dropout=config.lora_dropout)
        return model.eval()

    def trainable_names(self) -> list[str]:
        return [name for name, p in self.named_parameters() if p.requires_grad]

    def load_checkpoint(self, source: str | Path | dict[str, torch.Tensor]) -> tuple[set[str], set[str]]:
        """Official-style load (strict=False); returns (missing, unexpected). Name errors pass silently
        under strict=False, so callers must look at both sets; shape errors still raise."""
        state = read_checkpoint(source) if not isinstance(source, dict) else source
        result = self.load_state_dict(state, strict=False)
        return set(result.missing_keys), set(result.unexpected_keys)

    def encode(self, pixel_values: torch.Tensor, audio: torch.Tensor) -> dict[str, torch.Tensor]:
        """pixel_values [b, frames, 3, h, w], audio [b, clips, samples] (normalised) -> one LLM-width vector
        per placeholder, each [b, H]."""
        b, frames = pixel_values.shape[:2]
        frame_feats = self.visual_encoder(pixel_values.flatten(0, 1)).view(b, frames, -1)
        audio_feats = self.acoustic_encoder(audio.flatten(0, 1)).view(b, audio.shape[1], -1)
        return {
            "<MultiHere>": self.multi_llama_proj(self.fuse(frame_feats.mean(dim=1), audio_feats.mean(dim=1))),
            "<AudioHere>": self.audio_llama_proj(linear_score_pool(audio_feats, self.audio_attention_mlp)),
            "<FrameHere>": self.affectgpt_proj(linear_score_pool(frame_feats, self.video_attention_mlp)),
        }

    def fuse(self, video_mean: torch.Tensor, audio_mean: torch.Tensor) -> torch.Tensor:
        # Two stacked Linears with no activation and no softmax, video first: as trained.
        v, a = self.multi_video_embs(video_mean), self.multi_audio_embs(audio_mean)
        scores = self.fc_att(self.attention_mlp(torch.cat([v, a], dim=-1)))
        return scores[:, :1] * v + scores[:, 1:] * a


def read_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """`{'model': state}` from a .pth/.pt (tensors and plain containers only: weights_only) or a flat
    safetensors file."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file
        return load_file(str(path))
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:  # anything but tensors and plain containers is refused
        raise ValueError(f"{path.name}: not loadable with weights_only=True ({exc}); "
                         "re-save ckpt['model'] as safetensors") from None
    state = obj.get("model", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path.name}: expected {{'model': state_dict}}")
    return state


class _StopOnSequences(StoppingCriteria):
    def __init__(self, sequences: list[list[int]]) -> None:
        self.sequences = sequences

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs) -> torch.BoolTensor:
        done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        for seq in self.sequences:
            if input_ids.shape[1] >= len(seq):
                done |= (input_ids[:, -len(seq):] == torch.tensor(seq, device=input_ids.device)).all(dim=1)
        return done


def first_stop(ids: Sequence[int], sequences: Sequence[Sequence[int]]) -> tuple[int, int] | None:
    """(start, end) of the first stop sequence in `ids`, or None."""
    for end in range(1, len(ids) + 1):
        for seq in sequences:
            if end >= len(seq) and list(ids[end - len(seq):end]) == list(seq):
                return end - len(seq), end
    return None


# --- the backend ---------------------------------------------------------------------------------------------

@dataclass
class _Media:
    clip: ClipInput
    pixels: torch.Tensor  # [frames, 3, h, w]
    audio: torch.Tensor  # [clips, samples], jointly normalised
    flags: list[str]
    seconds: float


class AffectGPTBackend:
    name = SOURCE

    def __init__(self, model_dir: str | Path, *, checkpoint: str | Path | None = None, device: str | None = None,
                 greedy: bool = True, max_new_tokens: int = 48, batch_size: int = 8,
                 decode_workers: int | None = None) -> None:
        self.model_dir = Path(model_dir)
        self.config = AffectGPTConfig.load(self.model_dir)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        # Official numerics: fp16 LLM, fp32 encoders and heads under fp16 autocast. On CPU that dtype clash
        # has no autocast to hide it, so everything stays fp32 there.
        self.cuda = self.device.type == "cuda"
        self.greedy, self.max_new_tokens, self.batch_size = greedy, max_new_tokens, batch_size
        self.decode_workers = decode_workers or video_decode_workers()  # clips of a batch read at once
        self.image_processor = CLIPImageProcessor.from_pretrained(self.model_dir / "clip")
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_dir / "llm")
        # As the official setup: the placeholders become special (never split) tokens; a stock Qwen2.5
        # tokenizer lacks them and gets ids 151665-151669.
        self.tokenizer.add_tokens(list(PLACEHOLDERS), special_tokens=True)
        self.model = AffectGPTModel.from_pretrained(
            self.model_dir, llm_dtype=torch.float16 if self.cuda else torch.float32, config=self.config)
        self.model.to(self.device)
        self._do_normalize = self._hubert_normalises()

        vocab = self.tokenizer.get_vocab()
        self._placeholder_ids = {t: vocab[t] for t in PLACEHOLDERS}
        im_end, eot = vocab.get("<|im_end|>"), vocab.get("<|endoftext|>")
        self._eos_ids = [i for i in (im_end, eot) if i is not None]
        self._pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else im_end
        hashes = [vocab.get(t) for t in ("###", "##", "#")]
        self._stop_sequences = [[i] for i in self._eos_ids]
        if hashes[0] is not None:
            self._stop_sequences.append([hashes[0]])
        if None not in hashes[1:]:
            self._stop_sequences += [[hashes[1], hashes[2]], [hashes[2], hashes[1]]]
        self._checkpoint_tag = "nockpt"
        if checkpoint is not None:
            self.load_checkpoint(checkpoint)

    def _hubert_normalises(self) -> bool:
        path = self.model_dir / "hubert" / "preprocessor_config.json"
        return bool(json.loads(path.read_text()).get("do_normalize", True)) if path.is_file() else True

    @property
    def model_version(self) -> str:
        tag = None if self._checkpoint_tag == "nockpt" else self._checkpoint_tag
        return prediction_version(affectgpt_identity(self.config.llm_name, tag))

    def load_checkpoint(self, path: str | Path) -> tuple[set[str], set[str]]:
        """Load an official-style checkpoint; refuses (before touching the weights) one that misses a
        trainable tensor or carries a key the model does not have. Returns (missing, unexpected) as
        `load_state_dict(strict=False)` reports them: missing = the frozen base weights."""
        state = read_checkpoint(path)
        known = set(self.model.state_dict())
        unexpected = set(state) - known
        missing_trainable = set(self.model.trainable_names()) - set(state)
        if unexpected or missing_trainable:
            raise CheckpointMismatch(missing_trainable, unexpected)
        missing, unexpected = self.model.load_checkpoint(state)
        self._checkpoint_tag = file_sha256(path)[:12]
        return missing, unexpected

    # --- inputs --------------------------------------------------------------------------------------

    def prompt_ids(self, subtitle: str) -> tuple[list[int], bool]:
        """Token ids of the prompt (no BOS, as the official inference) and whether the subtitle was cut."""
        subtitle = subtitle or ""
        for token in PLACEHOLDERS:  # special tokens: one typed into a subtitle would take a media slot
            subtitle = subtitle.replace(token, "")
        subtitle = clean_transcript(subtitle)  # and chat-control tokens such as <|im_end|>

        def encode(text: str) -> list[int]:
            return self.tokenizer(text, add_special_tokens=False)["input_ids"]

        ids = encode(build_prompt(subtitle, self.config.user_message))
        if len(ids) <= self.config.max_prompt_tokens:
            return ids, False
        sub_ids = encode(subtitle)
        keep = len(sub_ids) - (len(ids) - self.config.max_prompt_tokens)
        while True:  # re-encoding a cut text can differ by a token or two: shrink until it fits
            ids = encode(build_prompt(self.tokenizer.decode(sub_ids[:max(0, keep)]), self.config.user_message))
            if len(ids) <= self.config.max_prompt_tokens or keep <= 0:
                return ids, True
            keep -= 1

    def load_media(self, clip: ClipInput) -> _Media:
        started = time.perf_counter()
        # Segment starts, as the release was trained (our centre rule would shift every frame).
        frames = sample_frames(clip.video_path, self.config.num_frames, rule="start")
        size = self.image_processor.crop_size
        x = torch.from_numpy(frames).permute(0, 3, 1, 2).float()
        # The official decoder squashes every frame to 224x224 (no aspect ratio, no crop), as uint8.
        x = F.interpolate(x, size=(size["height"], size["width"]), mode="bilinear", antialias=True,
                          align_corners=False).round().clamp(0, 255).to(torch.uint8)
        pixels = self.image_processor(images=list(x), return_tensors="pt")["pixel_values"]
        wave = load_audio(clip.video_path, self.config.sample_rate)
        flags = [] if len(wave) else ["no_audio"]
        clips = audio_clips(wave, clips=self.config.num_audio_clips,
                            clip_samples=round(self.config.audio_clip_seconds * self.config.sample_rate))
        if self._do_normalize:
            clips = joint_normalise(clips)
        return _Media(clip, pixels, torch.from_numpy(clips), flags, time.perf_counter() - started)

    def embed_prompt(self, ids: list[int], vectors: dict[str, torch.Tensor]) -> torch.Tensor:
        """[L, H] prompt embeddings with each placeholder row replaced by its vector (the placeholder ids
        are looked up as id 0 first: the embedding matrix is never resized for them)."""
        ids_t = torch.tensor(ids, device=self.device)
        is_placeholder = torch.zeros_like(ids_t, dtype=torch.bool)
        for token_id in self._placeholder_ids.values():
            is_placeholder |= ids_t == token_id
        embeds = self.model.llama_model.get_input_embeddings()(ids_t.masked_fill(is_placeholder, 0)).clone()
        for token, vector in vectors.items():
            where = (ids_t == self._placeholder_ids[token]).nonzero().flatten()
            if len(where) != 1:
                raise ValueError(f"{token} appears {len(where)} times in the prompt, expected once")
            embeds[where[0]] = vector.to(embeds.dtype)
        return embeds

    # --- prediction ----------------------------------------------------------------------------------

    def predict(self, clips: Sequence[ClipInput]) -> list[Prediction]:
        out: list[Prediction] = []
        for start in range(0, len(clips), self.batch_size):
            out.extend(self._predict_batch(clips[start:start + self.batch_size]))
        return out

    def _predict_batch(self, clips: Sequence[ClipInput]) -> list[Prediction]:
        version = self.model_version
        media: list[_Media] = []
        errors: dict[int, str] = {}
        for i, read in enumerate(read_each(self.load_media, clips, self.decode_workers)):
            if isinstance(read, Exception):
                errors[i] = str(read) or type(read).__name__
            else:
                media.append(read)
        done = iter(self._generate(media) if media else [])
        return [Prediction(clip_id=clip.clip_id, labels=[], raw_text="", model_version=version, prompt_tokens=0,
                           seconds=0.0, error=errors[i]) if i in errors else next(done)
                for i, clip in enumerate(clips)]

    @torch.inference_mode()
    def _generate(self, media: list[_Media]) -> list[Prediction]:
        started = time.perf_counter()
        pixels = torch.stack([m.pixels for m in media]).to(self.device)
        audio = torch.stack([m.audio for m in media]).to(self.device)
        with torch.autocast("cuda", dtype=torch.float16, enabled=self.cuda):
            vectors = self.model.encode(pixels, audio)
        prompts = [self.prompt_ids(m.clip.transcript) for m in media]
        rows = [self.embed_prompt(ids, {t: v[i] for t, v in vectors.items()}) for i, (ids, _) in enumerate(prompts)]
        # Left padding keeps every prompt's last token at the end, where generation continues.
        length = max(len(r) for r in rows)
        pad = self.model.llama_model.get_input_embeddings()(torch.tensor([self._pad_id], device=self.device))
        embeds = torch.stack([torch.cat([pad.expand(length - len(r), -1), r]) for r in rows])
        mask = torch.stack([torch.arange(length, device=self.device) >= length - len(r) for r in rows]).long()

        # generate() fills every unset field from the LLM's generation config (Qwen: T 0.7, top_p 0.8, top_k 20,
        # repetition 1.05), so the neutral values are spelled out for greedy. Sampling is the official one,
        # whose top_k stays the LLM's own.
        sampling = {"do_sample": True, "temperature": 1.0, "top_p": 0.9} if not self.greedy \
            else {"do_sample": False, "temperature": 1.0, "top_p": 1.0, "top_k": 50}
        generation = GenerationConfig(max_new_tokens=self.max_new_tokens, num_beams=1, repetition_penalty=1.0,
                                      eos_token_id=self._eos_ids, pad_token_id=self._pad_id, output_logits=True,
                                      return_dict_in_generate=True, **sampling)
        out = self.model.llama_model.generate(
            inputs_embeds=embeds, attention_mask=mask, generation_config=generation,
            stopping_criteria=StoppingCriteriaList([_StopOnSequences(self._stop_sequences)]))
        new_ids = out.sequences[:, -len(out.logits):]
        probs = torch.stack(out.logits, dim=1).float().softmax(-1).gather(-1, new_ids.unsqueeze(-1)).squeeze(-1)
        share = (time.perf_counter() - started) / len(media)

        predictions = []
        for row, m in enumerate(media):
            ids, row_probs = new_ids[row].tolist(), probs[row].tolist()
            stop = first_stop(ids, self._stop_sequences)
            flags = list(m.flags) + (["subtitle_truncated"] if prompts[row][1] else [])
            if stop is None:
                flags.append("truncated")
            answer_end, end = stop or (len(ids), len(ids))
            text = clean_answer(self.tokenizer.decode(ids[:end], skip_special_tokens=False))
            # Scores come from the answer's tokens only, not from the stop tokens.
            labels, label_flags = labels_from_answer(text, self._token_texts(ids[:answer_end]),
                                                     row_probs[:answer_end])
            predictions.append(Prediction(
                clip_id=m.clip.clip_id, labels=labels, raw_text=text, model_version=self.model_version,
                prompt_tokens=len(prompts[row][0]), seconds=m.seconds + share, flags=flags + label_flags))
        return predictions

    def _token_texts(self, ids: list[int]) -> list[str]:
        return token_pieces(self.tokenizer.decode, ids, skip_special_tokens=False)
