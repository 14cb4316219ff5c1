"""A tiny random AffectGPT model folder, for tests: nothing is downloaded.

`build_tiny_affectgpt` writes the layout `ml.backends.affectgpt` loads in production (clip/, hubert/, llm/,
affectgpt.json), each part saved with `save_pretrained`, so tests run the real `from_pretrained` path. Widths
are tiny; the structure is the real one: 28 decoder layers (so the checkpoint has the 412 official key
names), 224-px frames, 16 kHz audio giving 99 HuBERT frames per 2-s clip, a stable-layer-norm HuBERT.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from tokenizers import pre_tokenizers
from transformers import (
    CLIPConfig,
    CLIPImageProcessor,
    CLIPModel,
    HubertConfig,
    HubertModel,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen2Tokenizer,
    Wav2Vec2FeatureExtractor,
)

from ml.backends.affectgpt import CONFIG_NAME, PLACEHOLDERS, AffectGPTModel

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", *PLACEHOLDERS]
# "##" and "###" are single tokens in Qwen's vocabulary and the stop rule is written in terms of them.
MERGES = [("#", "#"), ("##", "#")]
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


def build_tokenizer() -> Qwen2Tokenizer:
    symbols = sorted(pre_tokenizers.ByteLevel.alphabet())
    merged = ["".join(pair) for pair in MERGES]
    vocab = {token: i for i, token in enumerate(symbols + merged + SPECIAL_TOKENS)}
    tokenizer = Qwen2Tokenizer(vocab=vocab, merges=list(MERGES), unk_token=None, eos_token="<|im_end|>",
                               pad_token="<|im_end|>", bos_token=None)
    tokenizer.add_tokens(SPECIAL_TOKENS, special_tokens=True)  # never split; keeps the ids above
    return tokenizer


def build_tiny_affectgpt(out_dir: str | Path, *, seed: int = 0, llm_layers: int = 28) -> Path:
    out = Path(out_dir)
    torch.manual_seed(seed)
    vision = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
              "image_size": 224, "patch_size": 32, "initializer_range": 0.1}
    text = {**vision, "vocab_size": 64, "max_position_embeddings": 16, "bos_token_id": 0, "eos_token_id": 1,
            "pad_token_id": 1}
    del text["image_size"], text["patch_size"]
    clip = CLIPModel(CLIPConfig(vision_config=vision, text_config=text, projection_dim=20)).eval()
    clip.save_pretrained(out / "clip")
    CLIPImageProcessor(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224},
                       image_mean=CLIP_MEAN, image_std=CLIP_STD).save_pretrained(out / "clip")

    # chinese-hubert-large geometry (conv strides/kernels, stable layer norm), tiny widths.
    hubert = HubertModel(HubertConfig(
        hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64, conv_dim=(16,) * 7,
        num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4, do_stable_layer_norm=True,
        feat_extract_norm="layer", conv_bias=True, initializer_range=0.1)).eval()
    hubert.save_pretrained(out / "hubert")
    Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True,
                             return_attention_mask=True).save_pretrained(out / "hubert")

    tokenizer = build_tokenizer()
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    llm = Qwen2ForCausalLM(Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=48, intermediate_size=96, num_hidden_layers=llm_layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096, initializer_range=0.1,
        tie_word_embeddings=False, eos_token_id=im_end, pad_token_id=im_end)).eval()
    # Qwen2.5-Instruct's own generation config, which the backend must override (top_k excepted).
    llm.generation_config.update(do_sample=True, temperature=0.7, top_p=0.8, top_k=20, repetition_penalty=1.05,
                                 eos_token_id=[im_end, tokenizer.convert_tokens_to_ids("<|endoftext|>")],
                                 pad_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"))
    llm.save_pretrained(out / "llm")
    tokenizer.save_pretrained(out / "llm")

    (out / CONFIG_NAME).write_text(json.dumps({"llm_name": "tiny-qwen2"}, indent=2) + "\n", encoding="utf-8")
    return out


def write_official_style_checkpoint(model: AffectGPTModel, path: str | Path) -> Path:
    """`{'model': state}` holding what the official runner keeps: the state dict minus every named
    parameter whose requires_grad is False (buffers would survive; there are none to keep)."""
    state = model.state_dict()
    for name, param in model.named_parameters():
        if not param.requires_grad:
            del state[name]
    path = Path(path)
    torch.save({"model": state}, path)
    return path
