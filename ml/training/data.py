"""Training data: JSONL lines → checked samples → model inputs, and the collate function.

A labelled line is {"video": path, "transcript": text, "labels": [...]}; a caption line has "caption": text in
place of "labels". Other keys are ignored; a relative video path is resolved against the JSONL file's folder.
Every problem stops the run with a `TrainingDataError` naming the sample as `file:line` and its video path:
a sample is never skipped or replaced by another, which would hide a data bug and change what was trained on.

A sample's model input is built by `ml.backends.internvl.InternVLInputs` — the prompt, the frames and the
processor call of inference — followed by the answer's tokens and the end-of-turn token. Only the answer is
learnt: the labels are IGNORE_INDEX over the prompt and the padding.

Torch and PyAV are imported inside the functions that need them (`collate_examples`, the video checks), so
importing this module stays light (tests/ml/test_boundaries.py).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ml.prompts import CAPTION, LABELS, internvl_answer
from ml.versions import file_sha256

from .config import TrainConfig

IGNORE_INDEX = -100  # the label value the loss skips (torch's cross_entropy default)


class TrainingDataError(ValueError):
    """Bad training input: the message names the file and line, and the video, and is safe to show."""


@dataclass(frozen=True)
class Sample:
    where: str  # "train.jsonl:12": the file and line that every message about the sample names
    video: Path  # resolved
    transcript: str
    task: str  # LABELS or CAPTION: which prompt it is trained with
    target: str  # the answer text the model learns
    labels: tuple[str, ...] = ()  # the gold labels of a LABELS sample

    def problem(self, reason: str) -> TrainingDataError:
        return TrainingDataError(f"{self.where}: {self.video}: {reason}")


# --- reading and checking -----------------------------------------------------------------------------

def read_samples(path: str | Path, task: str = LABELS) -> list[Sample]:
    """Every sample of a JSONL file (blank lines aside), checked; `task` says which kind its lines are."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise TrainingDataError(f"{path}: cannot read: {getattr(exc, 'strerror', None) or exc}") from None
    samples = [_sample(line, f"{path}:{number}", path.parent.resolve(), task)
               for number, line in enumerate(lines, start=1) if line.strip()]
    if not samples:
        raise TrainingDataError(f"{path}: no samples")
    return samples


def _sample(line: str, where: str, folder: Path, task: str) -> Sample:
    try:
        data = json.loads(line)
    except ValueError as exc:
        raise TrainingDataError(f"{where}: not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise TrainingDataError(f"{where}: expected a JSON object")
    video = data.get("video")
    if not isinstance(video, str) or not video.strip():
        raise TrainingDataError(f"{where}: \"video\" must be a non-empty path")
    transcript = data.get("transcript") or ""
    if not isinstance(transcript, str):
        raise TrainingDataError(f"{where}: {video}: \"transcript\" must be text")
    path = (folder / video).resolve()
    if not path.is_file():
        raise TrainingDataError(f"{where}: {path}: no such video file")
    if task == CAPTION:
        caption = data.get("caption")
        if not isinstance(caption, str) or not caption.strip():
            raise TrainingDataError(f"{where}: {path}: empty caption")
        return Sample(where, path, transcript, CAPTION, " ".join(caption.split()))
    labels = _labels(data.get("labels"))
    if not labels:
        raise TrainingDataError(f"{where}: {path}: empty labels (a sample needs at least one emotion word)")
    return Sample(where, path, transcript, LABELS, internvl_answer(labels), labels)


def _labels(value: Any) -> tuple[str, ...]:
    """Lowercased, trimmed and de-duplicated, as the instruction asks the model to answer; () if unusable."""
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        return ()
    words = [" ".join(item.split()).lower() for item in value]
    return () if "" in words else tuple(dict.fromkeys(words))


def check_videos(samples: Sequence[Sample]) -> None:
    """Each video is a container we decode (by its first bytes): a stray text or image file fails here, before
    the model loads. A clip that is damaged further in fails when it is decoded."""
    from ml.video import VideoReadError, sniff_container  # worker-only: ml.video imports PyAV

    for sample in samples:
        try:
            sniff_container(sample.video)
        except VideoReadError as exc:
            raise sample.problem(str(exc)) from None


def data_hash(files: Sequence[str | Path], samples: Sequence[Sample]) -> str:
    """sha256 over the JSONL files' contents and every sample's video sha256, in order: the same data gives
    the same hash wherever it is stored."""
    digest = hashlib.sha256()
    for path in files:
        digest.update(f"jsonl {file_sha256(path)}\n".encode())
    for sample in samples:
        try:
            digest.update(f"video {file_sha256(sample.video)}\n".encode())
        except OSError as exc:
            raise sample.problem(f"cannot read: {exc.strerror or exc}") from None
    return "sha256:" + digest.hexdigest()


def mix_captions(train: Sequence[Sample], captions: Sequence[Sample], ratio: float,
                 seed: int) -> list[Sample]:
    """`train` plus round(ratio * len(train)) caption samples drawn by `seed`: without repetition while the
    captions last, then cycling through them again in the same drawn order."""
    count = round(ratio * len(train))
    if count == 0:
        return list(train)
    if not captions:
        raise TrainingDataError(f"caption_ratio {ratio} needs a captions file with samples")
    order = list(captions)
    random.Random(f"affectloop-captions:{seed}").shuffle(order)
    return [*train, *itertools.islice(itertools.cycle(order), count)]


@dataclass(frozen=True)
class TrainingData:
    train: list[Sample]  # labelled samples, then the mixed-in captions
    eval: list[Sample]
    hash: str
    counts: dict[str, int]


def load_data(config: TrainConfig, train_path: Path, eval_path: Path,
              captions_path: Path | None) -> TrainingData:
    """Read and check every file a run of `config` uses, mix the captions in, and hash it all."""
    train, evaluation = read_samples(train_path), read_samples(eval_path)
    files = [train_path, eval_path]
    captions: list[Sample] = []
    if config.caption_ratio > 0:
        if captions_path is None:
            raise TrainingDataError("caption_ratio > 0 needs a captions file (--captions)")
        captions = read_samples(captions_path, CAPTION)
        files.append(captions_path)
    mixed = mix_captions(train, captions, config.caption_ratio, config.seed)
    check_videos([*mixed, *evaluation])
    return TrainingData(mixed, evaluation, data_hash(files, [*train, *evaluation, *captions]),
                        {"train": len(train), "captions": len(mixed) - len(train), "eval": len(evaluation)})


def epoch_batches(n: int, batch_size: int, *, seed: int, epoch: int, rank: int = 0,
                  world: int = 1) -> list[list[int]]:
    """This process's batches of sample indices for one epoch: a shuffle drawn from (seed, epoch), padded by
    repeating samples until it splits evenly over the `world` processes (as DistributedSampler does), then
    every world-th index from `rank`. Pure: a resumed run gets the same batches back."""
    order = list(range(n))
    random.Random(f"affectloop-order:{seed}:{epoch}").shuffle(order)
    order = list(itertools.islice(itertools.cycle(order), -(-n // world) * world))
    mine = order[rank::world]
    return [mine[i:i + batch_size] for i in range(0, len(mine), batch_size)]


# --- model inputs -------------------------------------------------------------------------------------

@dataclass
class Example:
    input_ids: list[int]  # prompt, then answer and end of turn
    labels: list[int]  # IGNORE_INDEX over the prompt, then the answer's ids
    pixel_values: Any  # (num_frames, 3, size, size) tensor


@dataclass(frozen=True)
class Unreadable:
    """A sample whose video did not decode. It travels through the data loader as a value, not an exception:
    an exception raised in a loader worker comes back wrapped in that worker's traceback, and the training
    process raises `error()` instead, one line naming the sample."""

    sample: Sample
    reason: str

    def error(self) -> TrainingDataError:
        return self.sample.problem(self.reason)


class TrainingDataset:
    """Map-style dataset (what torch's DataLoader indexes) of samples encoded like inference inputs."""

    def __init__(self, inputs, samples: Sequence[Sample]) -> None:
        self.inputs = inputs  # ml.backends.internvl.InternVLInputs
        self.samples = list(samples)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> Example | Unreadable:
        from ml.video import VideoReadError  # worker-only: ml.video imports PyAV

        sample = self.samples[index]
        try:
            frames = self.inputs.frames(sample.video)
        except (VideoReadError, OSError) as exc:
            return Unreadable(sample, str(exc) or type(exc).__name__)
        encoded = self.inputs.encode([self.inputs.prompt(sample.transcript, sample.task)], [frames])
        prompt = encoded["input_ids"][0].tolist()
        answer = self.inputs.answer_ids(sample.target)
        return Example(prompt + answer, [IGNORE_INDEX] * len(prompt) + answer, encoded["pixel_values"])


def collate_examples(examples: Sequence[Example | Unreadable], *, pad_id: int,
                     ignore_index: int = IGNORE_INDEX) -> dict[str, Any] | Unreadable:
    """Examples → one batch: ids padded on the right with `pad_id` (attention 0, label `ignore_index`), the
    frames of all clips stacked in order. A batch holding an Unreadable sample is that Unreadable."""
    import torch  # worker-only

    bad = next((example for example in examples if isinstance(example, Unreadable)), None)
    if bad is not None:
        return bad
    length = max(len(example.input_ids) for example in examples)
    input_ids = torch.full((len(examples), length), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), length), ignore_index, dtype=torch.long)
    attention_mask = torch.zeros((len(examples), length), dtype=torch.long)
    for row, example in enumerate(examples):
        n = len(example.input_ids)
        input_ids[row, :n] = torch.tensor(example.input_ids)
        labels[row, :n] = torch.tensor(example.labels)
        attention_mask[row, :n] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels,
            "pixel_values": torch.cat([example.pixel_values for example in examples])}
