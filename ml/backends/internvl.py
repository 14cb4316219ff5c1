"""InternVL (transformers-native, e.g. OpenGVLab/InternVL3-1B-hf) as a pre-labelling backend.

Worker-only module: torch, transformers and peft are imported at module level on purpose; the web process
must never import it.

Frames go in as a video, so the processor renders each one as exactly one image tile
("FrameN: <img><IMG_CONTEXT> x tokens_per_frame</img>"). Dynamic tiling (`crop_to_patches`) exists only on
the image path, which the processor switches on by default; the video path never tiles, but it resizes to
the *video processor's* size (384 px by default in transformers), which need not match the vision tower,
so the size is forced to the model's image size on every call and checked on the output.

`InternVLInputs` is the one place that turns a clip into model inputs (prompt, frames, processor call);
LoRA training (ml.training) builds its samples through it too, so a fine-tuned adapter sees at inference
exactly the token ids it was trained on. `predict_prepared` is the one generate-and-parse step, used by the
backend and by training's evaluation.
"""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from peft import PeftModel
from transformers import (
    AutoProcessor,
    BatchFeature,
    InternVLConfig,
    InternVLForConditionalGeneration,
    ProcessorMixin,
)

from ml.prompts import CAPTION, LABELS, internvl_caption_text, internvl_user_text
from ml.scoring import scored_labels, token_pieces
from ml.types import ClipInput, Label, Prediction
from ml.versions import adapter_id, internvl_identity, prediction_version
from ml.video import VideoReadError, read_each, sample_frames
from ml.video import decode_workers as video_decode_workers

SOURCE = "internvl"
DEFAULT_FRAMES = 8
_USER_TEXT = {LABELS: internvl_user_text, CAPTION: internvl_caption_text}


@dataclass
class PreparedBatch:
    inputs: BatchFeature | None
    rows: list[int]  # for each batch row, the index of its clip in the request
    errors: dict[int, str]  # clip index -> why its video could not be used


class InternVLInputs:
    """Clip -> model inputs, the one way: the chat-templated prompt around the versioned instruction,
    `num_frames` frames at segment centres (ml.video), and the processor call that makes each frame one
    untiled tile at the vision tower's size. Inference (`InternVLBackend`) and LoRA training
    (`ml.training.data`) both use it."""

    def __init__(self, processor: ProcessorMixin, config: InternVLConfig,
                 num_frames: int = DEFAULT_FRAMES, *, decode_workers: int = 1) -> None:
        self.processor, self.num_frames = processor, num_frames
        self.decode_workers = decode_workers  # clips of one `prepare` decoded at once (ml.video.read_each)
        self.image_size = int(config.vision_config.image_size[0])
        patch = int(config.vision_config.patch_size[0])
        self.image_tokens_per_frame = round((self.image_size / patch) ** 2 * config.downsample_ratio ** 2)
        if processor.image_seq_length != self.image_tokens_per_frame:
            raise ValueError(f"processor expands each frame to {processor.image_seq_length} tokens, "
                             f"the model expects {self.image_tokens_per_frame}")

    @property
    def tokenizer(self):
        return self.processor.tokenizer

    @property
    def pad_id(self) -> int:
        return pad_token_id(self.tokenizer)

    def prompt(self, transcript: str, task: str = LABELS) -> str:
        """The user turn (video, then the instruction for `task`) and the opening of the assistant's turn."""
        messages = [{"role": "user", "content": [{"type": "video"},
                                                 {"type": "text", "text": _USER_TEXT[task](transcript)}]}]
        return self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def frames(self, path: str | Path):
        """`num_frames` RGB frames (n, H, W, 3) at segment centres; VideoReadError when undecodable."""
        return sample_frames(path, self.num_frames)

    def encode(self, prompts: Sequence[str], videos: Sequence, *, padding_side: str = "left") -> BatchFeature:
        """The processor call: token ids with each `<video>` expanded to its frames' image tokens, and the
        frames as (len(videos) * num_frames, 3, image_size, image_size) pixel values."""
        size = {"height": self.image_size, "width": self.image_size}
        inputs = self.processor(text=list(prompts), videos=list(videos), padding=True,
                                padding_side=padding_side, return_tensors="pt",
                                videos_kwargs={"size": size, "do_sample_frames": False})
        expected = (len(videos) * self.num_frames, 3, self.image_size, self.image_size)
        if tuple(inputs["pixel_values"].shape) != expected:
            raise RuntimeError(f"frames became {tuple(inputs['pixel_values'].shape)}, expected {expected}")
        return inputs

    def prepare(self, clips: Sequence[ClipInput], task: str = LABELS) -> PreparedBatch:
        """Encode the clips whose video decodes, left-padded for generation; the others are reported."""
        rows, videos, errors = [], [], {}
        read = read_each(self.frames, [clip.video_path for clip in clips], self.decode_workers)
        for index, frames in enumerate(read):
            if isinstance(frames, Exception):
                errors[index] = str(frames) or type(frames).__name__
            else:
                videos.append(frames)
                rows.append(index)
        if not rows:
            return PreparedBatch(None, [], errors)
        prompts = [self.prompt(clips[i].transcript, task) for i in rows]
        return PreparedBatch(self.encode(prompts, videos), rows, errors)

    @functools.cached_property
    def end_of_turn(self) -> str:
        """What the chat template writes to close an assistant message ("<|im_end|>" for InternVL3): the
        token a trained answer ends with, so that generation stops there."""
        marker = "\x00ANSWER\x00"
        rendered = self.processor.apply_chat_template(
            [{"role": "user", "content": [{"type": "text", "text": "?"}]},
             {"role": "assistant", "content": [{"type": "text", "text": marker}]}], tokenize=False)
        return rendered.split(marker, 1)[1].strip()

    def answer_ids(self, answer: str) -> list[int]:
        """The token ids a trained answer is made of: `answer`, then the end-of-turn token."""
        end = self.tokenizer(self.end_of_turn, add_special_tokens=False)["input_ids"]
        if len(end) != 1:
            raise ValueError(f"the end of turn {self.end_of_turn!r} is not one token: {end}")
        return self.tokenizer(answer, add_special_tokens=False)["input_ids"] + end


def stop_token_ids(model: torch.nn.Module, tokenizer) -> set[int]:
    eos = model.generation_config.eos_token_id
    eos = eos if isinstance(eos, list) else [eos]
    return {i for i in [*eos, tokenizer.eos_token_id, tokenizer.pad_token_id] if i is not None}


def pad_token_id(tokenizer) -> int:
    return tokenizer.eos_token_id if tokenizer.pad_token_id is None else tokenizer.pad_token_id


class InternVLBackend:
    name = SOURCE

    def __init__(self, model_path: str, *, adapter: str | None = None, num_frames: int = DEFAULT_FRAMES,
                 device: str | None = None, max_new_tokens: int = 48, dtype: torch.dtype | None = None,
                 batch_size: int = 8, decode_workers: int | None = None) -> None:
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.dtype = dtype or (torch.bfloat16 if self.device.type == "cuda" else torch.float32)
        self.num_frames, self.max_new_tokens, self.batch_size = num_frames, max_new_tokens, batch_size
        self.base_name = Path(str(model_path).rstrip("/")).name
        self.processor = AutoProcessor.from_pretrained(model_path)
        self.base_model = InternVLForConditionalGeneration.from_pretrained(model_path, dtype=self.dtype)
        self.base_model.to(self.device).eval()
        self.model: InternVLForConditionalGeneration | PeftModel = self.base_model
        self.inputs = InternVLInputs(self.processor, self.base_model.config, num_frames,
                                     decode_workers=decode_workers or video_decode_workers())
        self.image_size = self.inputs.image_size
        self.image_tokens_per_frame = self.inputs.image_tokens_per_frame

        self._adapters: dict[str, str] = {}  # peft adapter name -> adapter id (with weights hash)
        self._active: str | None = None
        if adapter:
            self.use_adapter(self.add_adapter(adapter))

    # --- adapters ------------------------------------------------------------------------------------

    def add_adapter(self, path: str | Path, name: str | None = None) -> str:
        """Load a LoRA adapter next to the others on the same base; returns its name for `use_adapter`."""
        ident = adapter_id(path)
        # The default name carries the weights hash, so "runs/1/adapter" and "runs/2/adapter" can coexist.
        name = name or re.sub(r"[^\w-]", "_", ident)
        if name in self._adapters:
            if self._adapters[name] != ident:
                raise ValueError(f"adapter name {name!r} is already used by {self._adapters[name]}")
            return name
        if isinstance(self.model, PeftModel):
            self.model.load_adapter(str(path), adapter_name=name, is_trainable=False)
        else:
            self.model = PeftModel.from_pretrained(self.base_model, str(path), adapter_name=name,
                                                   is_trainable=False)
        self.model.eval()
        self._adapters[name] = ident
        self.use_adapter(self._active)  # loading never switches: peft may have activated the new one
        return name

    def use_adapter(self, name: str | None) -> None:
        """Switch to a loaded adapter, or to the bare base with None; the base stays loaded."""
        if name is not None:
            if name not in self._adapters:
                raise KeyError(f"adapter {name!r} is not loaded")
            self.model.set_adapter(name)
        self._active = name

    def remove_adapter(self, name: str) -> None:
        """Free an adapter that is no longer wanted (a retired model version); the base stays loaded."""
        if name not in self._adapters:
            return
        if self._active == name:
            self.use_adapter(None)
        if len(self._adapters) == 1:
            # peft cannot delete a model's last adapter: drop the wrapper and go back to the bare base.
            self.model = self.base_model = self.model.unload()
        else:
            self.model.delete_adapter(name)
        del self._adapters[name]

    @property
    def adapters(self) -> dict[str, str]:
        return dict(self._adapters)

    @property
    def active_adapter(self) -> str | None:
        return self._active

    @property
    def model_version(self) -> str:
        identity = internvl_identity(self.base_name, self._adapters[self._active] if self._active else None)
        return prediction_version(identity, self.num_frames)

    @contextmanager
    def _active_model(self) -> Iterator[torch.nn.Module]:
        if self._active is None and isinstance(self.model, PeftModel):
            with self.model.disable_adapter():
                yield self.model
        else:
            yield self.model

    # --- inputs --------------------------------------------------------------------------------------

    def render_prompt(self, transcript: str) -> str:
        return self.inputs.prompt(transcript)

    def prepare(self, clips: Sequence[ClipInput], task: str = LABELS) -> PreparedBatch:
        batch = self.inputs.prepare(clips, task)
        if batch.inputs is not None:
            batch.inputs = batch.inputs.to(self.device, dtype=self.dtype)
        return batch

    @torch.inference_mode()
    def next_token_logits(self, clips: Sequence[ClipInput]) -> torch.Tensor:
        """Logits for the first answer token of each readable clip, under the active adapter."""
        batch = self.prepare(clips)
        if batch.inputs is None:
            raise VideoReadError("; ".join(batch.errors.values()))
        with self._active_model() as model:
            return model(**batch.inputs).logits[:, -1].float()

    # --- prediction ----------------------------------------------------------------------------------

    def predict(self, clips: Sequence[ClipInput], *, task: str = LABELS,
                max_new_tokens: int | None = None) -> list[Prediction]:
        """Greedy answers under the active adapter, `batch_size` clips at a time. `task` picks the
        instruction (ml.prompts: LABELS, whose answers are parsed into labels, or CAPTION, whose raw_text is
        the caption and whose labels mean nothing)."""
        out: list[Prediction] = []
        for start in range(0, len(clips), self.batch_size):
            out.extend(self._predict_batch(clips[start:start + self.batch_size], task,
                                           max_new_tokens or self.max_new_tokens))
        return out

    def _predict_batch(self, clips: Sequence[ClipInput], task: str, max_new_tokens: int) -> list[Prediction]:
        started = time.perf_counter()
        version = self.model_version
        batch = self.prepare(clips, task)
        with self._active_model() as model:
            return predict_prepared(model, self.processor.tokenizer, clips, batch, version=version,
                                    max_new_tokens=max_new_tokens, started=started)

    def _token_texts(self, ids: list[int]) -> list[str]:
        return _token_texts(self.processor.tokenizer, ids)


@torch.inference_mode()
def predict_prepared(model: torch.nn.Module, tokenizer, clips: Sequence[ClipInput], batch: PreparedBatch, *,
                     version: str, max_new_tokens: int, started: float | None = None) -> list[Prediction]:
    """Greedy answers for a prepared batch (inputs already on the model's device), parsed into scored labels;
    a clip whose video failed gets a Prediction with its error."""
    started = time.perf_counter() if started is None else started
    done: dict[int, Prediction] = {}
    if batch.inputs is not None:
        stop_ids = stop_token_ids(model, tokenizer)
        generated = model.generate(**batch.inputs, do_sample=False, max_new_tokens=max_new_tokens,
                                   pad_token_id=pad_token_id(tokenizer), output_scores=True,
                                   return_dict_in_generate=True)
        prompt_len = batch.inputs["input_ids"].shape[1]
        new_ids = generated.sequences[:, prompt_len:]
        # One step at a time: the whole (batch, steps, vocab) block in fp32 is ~230 MB at 151k vocab.
        chosen = torch.stack([step.float().log_softmax(-1).gather(-1, new_ids[:, t:t + 1]).squeeze(-1)
                              for t, step in enumerate(generated.scores)], dim=1).exp()
        prompt_tokens = batch.inputs["attention_mask"].sum(dim=1).tolist()
        seconds = (time.perf_counter() - started) / len(batch.rows)
        for row, index in enumerate(batch.rows):
            ids, probs = new_ids[row].tolist(), chosen[row].tolist()
            stop = next((i for i, t in enumerate(ids) if t in stop_ids), None)
            truncated = stop is None
            ids, probs = ids[:stop], probs[:stop]
            token_texts = _token_texts(tokenizer, ids)
            raw_text = "".join(token_texts)
            labels, flags = labels_from_answer(raw_text, token_texts, probs)
            done[index] = Prediction(
                clip_id=clips[index].clip_id, labels=labels, raw_text=raw_text, model_version=version,
                prompt_tokens=int(prompt_tokens[row]), seconds=seconds,
                flags=flags + (["truncated"] if truncated else []))
    return [done.get(index) or Prediction(
        clip_id=clip.clip_id, labels=[], raw_text="", model_version=version, prompt_tokens=0, seconds=0.0,
        error=batch.errors.get(index, "not processed")) for index, clip in enumerate(clips)]


def _token_texts(tokenizer, ids: list[int]) -> list[str]:
    return token_pieces(tokenizer.decode, ids, skip_special_tokens=True)


def labels_from_answer(raw_text: str, token_texts: Sequence[str],
                       token_probs: Sequence[float]) -> tuple[list[Label], list[str]]:
    return scored_labels(raw_text, token_texts, token_probs, source=SOURCE, expect_json=True)
