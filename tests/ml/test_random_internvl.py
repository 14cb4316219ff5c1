"""ml.testing.random_internvl: the full-size InternVL3 configs (counted on the meta device, no memory) and the
realistic tokenizer the throughput benchmark builds its random models with."""

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch = pytest.importorskip("torch", reason="the builders need torch (worker dependencies)")
pytest.importorskip("transformers", reason="the builders need transformers")

from ml.testing.random_internvl import (
    SPECIAL_IDS,
    VOCAB_SIZE,
    build_realistic_tokenizer,
    count_parameters,
    internvl3_config,
    tokenizer_corpus,
)


@pytest.mark.parametrize(("name", "low", "high"), [("internvl3-1b", 0.9e9, 1.1e9), ("internvl3-2b", 2.0e9, 2.3e9),
                                                   ("internvl3-8b", 7.9e9, 8.0e9)])
def test_realistic_configs_have_the_published_sizes(name, low, high):
    from transformers import InternVLForConditionalGeneration

    config = internvl3_config(name)
    with torch.device("meta"):  # shapes only: no memory, no initialisation cost
        model = InternVLForConditionalGeneration(config)
    assert {p.device.type for p in model.parameters()} == {"meta"}
    total = count_parameters(model)
    assert low <= total <= high, f"{name}: {total:,} parameters"
    vision = sum(p.numel() for p in model.model.vision_tower.parameters())
    assert 0.29e9 <= vision <= 0.31e9  # InternViT-300M
    assert config.image_seq_length == (448 // 14) ** 2 // 4 == 256
    assert model.get_output_embeddings().weight is not model.get_input_embeddings().weight  # untied


def test_unknown_config_is_refused():
    with pytest.raises(ValueError, match="internvl3-1b"):
        internvl3_config("internvl3-78b")


def test_realistic_tokenizer_uses_real_ids_and_word_tokens():
    tokenizer = build_realistic_tokenizer(tokenizer_corpus(["What a lovely day, Sam."]))
    for token, token_id in SPECIAL_IDS.items():
        assert tokenizer.convert_tokens_to_ids(token) == token_id
    assert tokenizer.convert_tokens_to_ids("<video>") == VOCAB_SIZE  # text-only placeholder
    ids = tokenizer("<|im_start|>user\nWhich emotions does the person show?<|im_end|>",
                    add_special_tokens=False)["input_ids"]
    assert ids[0] == SPECIAL_IDS["<|im_start|>"] and ids[-1] == SPECIAL_IDS["<|im_end|>"]
    assert len(ids) <= 12  # about one token per word, as Qwen's vocabulary gives, not one per byte
    assert tokenizer.decode([150000]).strip() == "w150000"  # garbage ids still decode to text
