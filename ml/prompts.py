"""Prompts, versioned: the version is part of every model version string, so changing a prompt re-labels."""

import re

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


def internvl_user_text(transcript: str) -> str:
    transcript = clean_transcript(transcript)
    said = f'The person says: "{transcript}"\n' if transcript else "The person says nothing.\n"
    return said + INTERNVL_INSTRUCTION


# AffectGPT was trained on this prompt shape (../shared/reference/affectgpt/README.md); keep it verbatim.
AFFECTGPT_PROMPT_VERSION = "agpt-p1"
