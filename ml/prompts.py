"""Prompts, versioned: the version is part of every model version string, so changing a prompt re-labels."""

INTERNVL_PROMPT_VERSION = "ivl-p1"
INTERNVL_INSTRUCTION = (
    "Watch the video of a person and read what they say. Which emotions does the person show? "
    "Answer with a JSON list of lowercase English emotion words, most evident first, for example "
    '["worried", "hesitant"]. Answer with the list only.'
)


def internvl_user_text(transcript: str) -> str:
    transcript = " ".join((transcript or "").split())
    said = f'The person says: "{transcript}"\n' if transcript else "The person says nothing.\n"
    return said + INTERNVL_INSTRUCTION


# AffectGPT was trained on this prompt shape (../shared/reference/affectgpt/README.md); keep it verbatim.
AFFECTGPT_PROMPT_VERSION = "agpt-p1"
