"""Prompts, versioned: the version is part of every model version string, so changing a prompt re-labels."""

import json
import re
from collections.abc import Sequence

# What InternVL is asked for: emotion labels (pre-labeling, and training on verified labels) or a
# human-centric caption (training only).
LABELS, CAPTION = "labels", "caption"

INTERNVL_PROMPT_VERSION = "ivl-p1"
INTERNVL_INSTRUCTION = (
    "Watch the video of a person and read what they say. Which emotions does the person show? "
    "Answer with a JSON list of lowercase English emotion words, most evident first, for example "
    '["worried", "hesitant"]. Answer with the list only.'
)


# Tokens the processor or the chat template give a meaning: in a transcript they would add a video slot
# or end the turn, so they are removed (the text around them stays).
_CONTROL_TOKENS = re.compile(r"<\|[^|<>]{1,40}\|>|</?(?:video|image|img|IMG_CONTEXT)>", re.IGNORECASE)


def clean_transcript(transcript: str) -> str:
    return " ".join(_CONTROL_TOKENS.sub(" ", transcript or "").split())


def _said(transcript: str) -> str:
    transcript = clean_transcript(transcript)
    return f'The person says: "{transcript}"\n' if transcript else "The person says nothing.\n"


def internvl_user_text(transcript: str) -> str:
    return _said(transcript) + INTERNVL_INSTRUCTION


def internvl_answer(labels: Sequence[str]) -> str:
    """The answer INTERNVL_INSTRUCTION asks for, as LoRA training teaches it: a JSON list of the words."""
    return json.dumps(list(labels), ensure_ascii=False)


# Human-centric captions (the MER-OV recipe mixes them into LoRA training): the answer is free text, so this
# prompt is used for training samples whose target is a caption, never for pre-labeling.
INTERNVL_CAPTION_PROMPT_VERSION = "ivl-cap1"
INTERNVL_CAPTION_INSTRUCTION = (
    "Watch the video of a person and read what they say. Describe the person's facial expression, body "
    "language and tone of voice, and what they reveal about how the person feels, in one or two sentences."
)


def internvl_caption_text(transcript: str) -> str:
    return _said(transcript) + INTERNVL_CAPTION_INSTRUCTION


# AffectGPT was trained on this prompt shape (../shared/reference/affectgpt/README.md); keep it verbatim.
AFFECTGPT_PROMPT_VERSION = "agpt-p1"
