"""A tiny random InternVL saved like a hub checkpoint, for tests: nothing is downloaded.

`build_tiny_internvl` writes config, weights, tokenizer, image/video processors and chat template into a
folder that `AutoProcessor` / `InternVLForConditionalGeneration.from_pretrained` load back, so tests run
the production loading path. The geometry is the real one by default (448-px frames, 14-px patches,
pixel-shuffle 0.5 -> 256 tokens per frame); only the widths and depths are tiny. `image_size=56` gives 4 tokens
per frame, which the training tests use to learn a task in seconds on the CPU.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import pre_tokenizers
from transformers import (
    GotOcr2ImageProcessor,
    InternVLConfig,
    InternVLForConditionalGeneration,
    InternVLProcessor,
    InternVLVideoProcessor,
    InternVLVisionConfig,
    Qwen2Config,
    Qwen2Tokenizer,
)

from ml.training.config import LORA_TARGET_MODULES

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>",
                  "<img>", "</img>", "<IMG_CONTEXT>", "<video>"]
# The processor reads these as tokenizer attributes (tokenizer.start_image_token, ..._id), as the
# InternVL3-hf tokenizer_config declares them.
MULTIMODAL_TOKENS = {"start_image_token": "<img>", "end_image_token": "</img>",
                     "context_image_token": "<IMG_CONTEXT>", "video_token": "<video>"}

# Same shape as the InternVL3-hf template: a video item renders as "<video>\n" before the text, which the
# processor expands to "Frame1: <img><IMG_CONTEXT>*256</img>\nFrame2: ...".
CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}{{ '<IMG_CONTEXT>\\n' }}"
    "{% elif content['type'] == 'video' %}{{ '<video>\\n' }}"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
    "{% endfor %}{% endif %}{{ '<|im_end|>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def build_tokenizer() -> Qwen2Tokenizer:
    """Byte-level BPE over the 256 byte symbols (no merges: one token per byte) plus InternVL's specials."""
    symbols = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {symbol: i for i, symbol in enumerate(symbols + SPECIAL_TOKENS)}
    tokenizer = Qwen2Tokenizer(vocab=vocab, merges=[], unk_token=None, eos_token="<|im_end|>",
                               pad_token="<|endoftext|>", extra_special_tokens=MULTIMODAL_TOKENS,
                               chat_template=CHAT_TEMPLATE)
    # Being in the vocab is not enough: unregistered, "<|im_start|>" would be split into 12 byte tokens.
    tokenizer.add_tokens(["<|im_start|>"], special_tokens=True)
    return tokenizer


def build_tiny_internvl(out_dir: str | Path, *, seed: int = 0, image_size: int = 448, patch_size: int = 14,
                        vision_hidden: int = 32, text_hidden: int = 64, layers: int = 2) -> Path:
    out = Path(out_dir)
    tokenizer = build_tokenizer()
    if (image_size // patch_size) % 2:
        raise ValueError("pixel shuffle needs an even number of patches per side")
    tokens_per_frame = (image_size // patch_size) ** 2 // 4
    vision = InternVLVisionConfig(hidden_size=vision_hidden, num_hidden_layers=layers, num_attention_heads=2,
                                  intermediate_size=2 * vision_hidden, image_size=image_size,
                                  patch_size=patch_size, initializer_range=0.1)
    text = Qwen2Config(vocab_size=len(tokenizer), hidden_size=text_hidden, intermediate_size=2 * text_hidden,
                       num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                       max_position_embeddings=32768, initializer_range=0.1, tie_word_embeddings=True,
                       eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    config = InternVLConfig(vision_config=vision.to_dict(), text_config=text.to_dict(),
                            image_token_id=tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>"),
                            image_seq_length=tokens_per_frame, downsample_ratio=0.5,
                            tie_word_embeddings=True)
    torch.manual_seed(seed)
    return save_internvl(InternVLForConditionalGeneration(config).eval(), tokenizer, out)


def save_internvl(model: InternVLForConditionalGeneration, tokenizer: Qwen2Tokenizer,
                  out_dir: str | Path) -> Path:
    """Save `model` with `tokenizer`, image/video processors and chat template, laid out as a hub
    checkpoint."""
    out = Path(out_dir)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out)
    internvl_processor(model.config, tokenizer).save_pretrained(out)
    return out


def internvl_processor(config, tokenizer: Qwen2Tokenizer) -> InternVLProcessor:
    """The processor a hub checkpoint of this architecture ships (what `save_internvl` writes)."""
    height, width = config.vision_config.image_size
    size = {"height": height, "width": width}
    return InternVLProcessor(
        # crop_to_patches is InternVL's dynamic tiling; the processor turns it on for images regardless of
        # this setting, but videos never tile (see ml.backends.internvl).
        image_processor=GotOcr2ImageProcessor(size=size, crop_to_patches=False),
        video_processor=InternVLVideoProcessor(size=size, do_sample_frames=False),
        tokenizer=tokenizer, image_seq_length=config.image_seq_length, chat_template=CHAT_TEMPLATE)


def save_random_lora_adapter(model_dir: str | Path, out_dir: str | Path, *, seed: int = 0,
                             r: int = 8) -> Path:
    """A LoRA adapter on the language model whose weights are random (not the usual B = 0), so it
    changes the logits: tests can tell adapters apart."""
    from peft import LoraConfig, get_peft_model

    model = InternVLForConditionalGeneration.from_pretrained(model_dir)
    torch.manual_seed(seed)
    peft_model = get_peft_model(model, LoraConfig(r=r, lora_alpha=2 * r, target_modules=LORA_TARGET_MODULES,
                                                  init_lora_weights=False))
    out = Path(out_dir)
    peft_model.save_pretrained(out)
    return out
