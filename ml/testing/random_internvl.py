"""Full-size InternVL3-1B/2B/8B-hf architectures with RANDOM weights, for benchmarks: nothing is downloaded.

`internvl3_config(name)` is the published architecture (InternViT-300M + Qwen2.5-0.5B/1.5B/7B, untied output
layer); `build_realistic_tokenizer` gives a tokenizer with the real vocabulary size and special-token ids
whose BPE merges are trained on the prompt texts, so English words are one token each as in Qwen's
vocabulary (image tokens exact, text tokens approximate). `random_internvl3` instantiates the model on a
device and `ml.testing.tiny_internvl.save_internvl` saves it with its processor, to be loaded back through
the production `from_pretrained` path.
"""

from __future__ import annotations

import json

import torch
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import (
    InternVLConfig,
    InternVLForConditionalGeneration,
    InternVLVisionConfig,
    Qwen2Config,
    Qwen2Tokenizer,
)

from ml.prompts import internvl_user_text

from .tiny_internvl import CHAT_TEMPLATE, MULTIMODAL_TOKENS
from .tiny_internvl import build_tokenizer as build_byte_tokenizer

# InternViT-300M-448px-V2.5 as the -hf configs spell it (qkv with bias, layer scale, mean pooling).
INTERNVIT_300M = {"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16,
                  "intermediate_size": 4096, "image_size": 448, "patch_size": 14, "attention_bias": True,
                  "use_qk_norm": False, "norm_type": "layer_norm", "layer_norm_eps": 1e-6, "hidden_act": "gelu",
                  "layer_scale_init_value": 0.1, "use_mean_pooling": True,
                  "use_absolute_position_embeddings": True}
# Qwen2.5-0.5B / -1.5B language models; InternVL3 does not tie the output layer to the embeddings (that is
# what makes the published sizes, 0.94 B and 2.09 B, add up).
QWEN25 = {
    "internvl3-1b": {"hidden_size": 896, "num_hidden_layers": 24, "num_attention_heads": 14,
                     "num_key_value_heads": 2, "intermediate_size": 4864},
    "internvl3-2b": {"hidden_size": 1536, "num_hidden_layers": 28, "num_attention_heads": 12,
                     "num_key_value_heads": 2, "intermediate_size": 8960},
    # Qwen2.5-7B: InternVL3-8B (7.94 B with the vision tower), for LoRA sizing.
    "internvl3-8b": {"hidden_size": 3584, "num_hidden_layers": 28, "num_attention_heads": 28,
                     "num_key_value_heads": 4, "intermediate_size": 18944},
}
VOCAB_SIZE = 151674
# Real ids in the InternVL3-hf tokenizer (Qwen2.5's specials, then InternVL's).
SPECIAL_IDS = {"<|endoftext|>": 151643, "<|im_start|>": 151644, "<|im_end|>": 151645,
               "<img>": 151665, "</img>": 151666, "<IMG_CONTEXT>": 151667}
VIDEO_TOKEN_ID = VOCAB_SIZE  # text-only placeholder: the processor expands "<video>" before ids reach the model


def internvl3_config(name: str) -> InternVLConfig:
    """The InternVL3-{1B,2B,8B}-hf architecture (name: internvl3-1b | internvl3-2b | internvl3-8b)."""
    if name not in QWEN25:
        raise ValueError(f"unknown config {name!r}; choose from {sorted(QWEN25)}")
    vision = InternVLVisionConfig(**INTERNVIT_300M)
    text = Qwen2Config(**QWEN25[name], vocab_size=VOCAB_SIZE, hidden_act="silu", max_position_embeddings=32768,
                       rms_norm_eps=1e-6, rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
                       use_sliding_window=False, tie_word_embeddings=False,
                       bos_token_id=SPECIAL_IDS["<|endoftext|>"], eos_token_id=SPECIAL_IDS["<|im_end|>"],
                       pad_token_id=SPECIAL_IDS["<|endoftext|>"])
    tokens_per_frame = (448 // 14) ** 2 // 4  # pixel shuffle with downsample_ratio 0.5
    return InternVLConfig(vision_config=vision.to_dict(), text_config=text.to_dict(),
                          image_token_id=SPECIAL_IDS["<IMG_CONTEXT>"], image_seq_length=tokens_per_frame,
                          downsample_ratio=0.5, projector_hidden_act="gelu", vision_feature_layer=-1,
                          vision_feature_select_strategy="default", tie_word_embeddings=False)


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())  # parameters() yields a tied tensor once


def random_internvl3(name: str, device: torch.device, *, seed: int = 0) -> InternVLForConditionalGeneration:
    """The architecture with random weights, created (and initialised) directly on `device`: bf16 on CUDA,
    fp32 on CPU."""
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    torch.manual_seed(seed)
    with torch.device(device):
        return InternVLForConditionalGeneration._from_config(internvl3_config(name), dtype=dtype).eval()


def tokenizer_corpus(transcripts: list[str]) -> list[str]:
    """The texts a pre-labelling prompt is made of, for `build_realistic_tokenizer` to learn words from."""
    return ([internvl_user_text(t) for t in [*transcripts, ""]] + ["user\n", "assistant\n"]
            + [f"Frame{i}: " for i in range(1, 65)])


def build_realistic_tokenizer(texts: list[str]) -> Qwen2Tokenizer:
    """A Qwen2 byte-level BPE tokenizer with the real vocabulary size and special-token ids, whose merges are
    trained on `texts` (to saturation, so each word of them is one token, close to Qwen's count for plain
    English). Unused ids are filler words (" w123") so that garbage output decodes to text."""
    bpe = Tokenizer(models.BPE())
    # Qwen2's own pre-tokenizer (regex split + byte level), so the merges fit how it splits words.
    bpe.pre_tokenizer = build_byte_tokenizer().backend_tokenizer.pre_tokenizer
    bpe.train_from_iterator(texts, trainers.BpeTrainer(
        vocab_size=100_000, min_frequency=1, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    trained = json.loads(bpe.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in trained["merges"]]
    words = sorted(trained["vocab"], key=trained["vocab"].get)
    specials = {**SPECIAL_IDS, "<video>": VIDEO_TOKEN_ID}
    by_id = dict(enumerate(words))
    free = (i for i in range(len(words), VIDEO_TOKEN_ID + 1) if i not in specials.values())
    for token, token_id in specials.items():
        by_id[token_id] = token
    taken = set(words)
    for i in free:
        by_id[i] = f"\u0120w{i}" if f"\u0120w{i}" not in taken else f"\u0120w{i}_"
    vocab = {token: i for i, token in by_id.items()}
    tokenizer = Qwen2Tokenizer(vocab=vocab, merges=merges, unk_token=None, eos_token="<|im_end|>",
                               pad_token="<|endoftext|>", extra_special_tokens=MULTIMODAL_TOKENS,
                               chat_template=CHAT_TEMPLATE)
    tokenizer.add_tokens(list(specials), special_tokens=True)  # never split; they keep the ids above
    for token, token_id in specials.items():
        if tokenizer.convert_tokens_to_ids(token) != token_id:
            raise RuntimeError(f"{token} got id {tokenizer.convert_tokens_to_ids(token)}, expected {token_id}")
    return tokenizer
