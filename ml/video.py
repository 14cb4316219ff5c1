"""Frames and audio for the model backends (worker-only: imports PyAV and numpy).

Sampling rule: the clip is cut into `n` equal segments of its frames and the frame at the centre of each
segment is kept — index floor((i + 0.5) * total / n) for i in 0..n-1. Short clips repeat frames rather
than return fewer, so every backend always sees exactly `n` frames. The clip is decoded once, in order,
keeping only the wanted frames (one ffmpeg process per timestamp is 2.4-3x slower for 8 frames and
5.2-5.6x for 16 on 10 s 720p clips here: bench/frames.py).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import av
import numpy as np


class VideoReadError(Exception):
    """The file cannot be decoded; the message is safe to show."""


def frame_indices(total: int, n: int, rule: str = "centre") -> list[int]:
    """`centre`: segment centres (our rule). `start`: segment starts, floor(i * total / n), and for clips
    shorter than n frames every frame then the last repeated: the rule AffectGPT's checkpoint was trained
    with, kept for parity with it."""
    if n < 1:
        raise ValueError("need at least one frame")
    if total < 1:
        raise VideoReadError("the video has no frames")
    if rule == "start":
        if total < n:
            return list(range(total)) + [total - 1] * (n - total)
        return [i * total // n for i in range(n)]
    if rule != "centre":
        raise ValueError(f"unknown sampling rule {rule!r}")
    return [min(total - 1, int((i + 0.5) * total / n)) for i in range(n)]


def _count_frames(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> int:
    if stream.frames:
        return stream.frames
    # WebM from a browser or a pipe stores no frame count, and the container duration may include longer
    # audio: count the video packets (demux only, ~8 ms for 10 s of 720p) and rewind.
    count = sum(1 for packet in container.demux(stream) if packet.size)
    container.seek(0, stream=stream)
    return count


def sample_frames(path: str | Path, n: int, rule: str = "centre") -> np.ndarray:
    """`n` RGB frames (see `frame_indices` for the rules) as a uint8 array (n, H, W, 3)."""
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise VideoReadError("no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            wanted = frame_indices(_count_frames(container, stream), n, rule)
            last_wanted = wanted[-1]
            picked: dict[int, np.ndarray] = {}
            last = None
            for index, frame in enumerate(container.decode(stream)):
                if index in wanted:
                    picked[index] = frame.to_ndarray(format="rgb24")
                last = frame
                if index >= last_wanted:
                    break
    except av.error.FFmpegError as exc:
        raise VideoReadError(f"cannot decode video: {exc.strerror or type(exc).__name__}") from None
    if last is None:
        raise VideoReadError("the video has no decodable frames")
    fallback = picked[max(picked)] if picked else last.to_ndarray(format="rgb24")
    return np.stack([picked.get(i, fallback) for i in wanted])


def load_audio(path: str | Path, sample_rate: int = 16000, timeout: float = 60.0) -> np.ndarray:
    """Mono float32 audio at `sample_rate`; an empty array when the clip has no audio stream."""
    cmd = ["ffmpeg", "-nostdin", "-v", "error", "-protocol_whitelist", "file", "-i", f"file:{Path(path).resolve()}",
           "-vn", "-ac", "1", "-ar", str(sample_rate), "-f", "f32le", "-"]
    try:
        result = subprocess.run(cmd, capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise VideoReadError("audio extraction timed out") from None
    if result.returncode != 0:
        message = result.stderr.decode("utf-8", "replace")
        if "does not contain any stream" in message or "Output file #0 does not contain" in message:
            return np.zeros(0, dtype=np.float32)
        raise VideoReadError("cannot read audio: " + (message.strip().splitlines() or ["ffmpeg failed"])[-1][:200])
    return np.frombuffer(result.stdout, dtype=np.float32).copy()
