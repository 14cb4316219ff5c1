"""The one interface every backend speaks. No torch here: the web side may read these types."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True)
class Label:
    term: str
    # Mean probability of the label's generated tokens under the model (greedy decoding): how sure the
    # model was while writing this word. None when a backend cannot tell (e.g. imported labels).
    score: float | None
    source: str


@dataclass(frozen=True)
class ClipInput:
    clip_id: str
    video_path: Path
    transcript: str = ""


@dataclass
class Prediction:
    clip_id: str
    labels: list[Label]
    raw_text: str
    model_version: str
    prompt_tokens: int
    seconds: float
    flags: list[str] = field(default_factory=list)
    error: str = ""

    def to_dict(self) -> dict:
        out = asdict(self)
        out["labels"] = [asdict(label) for label in self.labels]
        return out


class Backend(Protocol):
    name: str

    @property
    def model_version(self) -> str: ...

    def predict(self, clips: Sequence[ClipInput]) -> list[Prediction]: ...
