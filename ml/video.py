"""Frames and audio for the model backends (worker-only: imports PyAV and numpy).

Sampling rule: the clip is cut into `n` equal segments of its frames and the frame at the centre of each
segment is kept — index floor((i + 0.5) * total / n) for i in 0..n-1. Short clips repeat frames rather
than return fewer, so every backend always sees exactly `n` frames. The clip is decoded once, in order,
keeping only the wanted frames (one ffmpeg process per timestamp is 2.4-3x slower for 8 frames and
5.2-5.6x for 16 on 10 s 720p clips here: bench/frames.py).

Files are opened as ingest accepted them: with the demuxer of the container recorded for the clip (or sniffed
from the file's first bytes, by the same rules as annotations.media), never by ffmpeg's auto-detection, and
with only the `file` protocol allowed, so a stored file can never turn out to be a playlist or concat list
that reads other files or URLs.
"""

from __future__ import annotations

import os
import stat
import subprocess
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import av
import numpy as np

# Our container name -> the ffmpeg demuxer, as annotations.media forces it (tests/ml/test_video.py checks).
_DEMUXER = {"mp4": "mov", "matroska": "matroska", "avi": "avi"}
_DEMUXER_OPTS = {"mov": {"enable_drefs": "0"}}  # MOV "dref" atoms can point at other files


class VideoReadError(Exception):
    """The file cannot be decoded; the message is safe to show."""


def decode_workers() -> int:
    """How many clips of a batch to decode at once by default: the CPUs this process may use, at most 8."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, min(8, cpus))


def read_each(read: Callable, items: Sequence, workers: int = 1) -> list:
    """`read(item)` for each item, in order, on up to `workers` threads. FFmpeg decodes and the audio
    subprocess runs outside the GIL, so a batch's clips are read side by side instead of one after another
    while the GPU waits. An unreadable item's VideoReadError or OSError takes its place in the list; any
    other exception propagates."""
    def one(item):
        try:
            return read(item)
        except (VideoReadError, OSError) as exc:
            return exc

    if workers <= 1 or len(items) <= 1:
        return [one(item) for item in items]
    with ThreadPoolExecutor(max_workers=min(workers, len(items)), thread_name_prefix="decode") as pool:
        return list(pool.map(one, items))


def sniff_container(path: str | Path) -> str:
    """Our container name ("mp4", "matroska", "avi") from the file's first bytes, never its name."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):  # a FIFO would block the read
            raise VideoReadError("not a regular file")
        with open(path, "rb") as f:
            head = f.read(12)
    except OSError:
        raise VideoReadError("the video file cannot be read") from None
    if head[4:8] == b"ftyp":
        return "mp4"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "matroska"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "avi"
    raise VideoReadError("unsupported file type: not MP4/MOV, WebM/MKV or AVI")


def _demuxer(path: str | Path, container: str | None) -> str:
    demuxer = _DEMUXER.get(container or sniff_container(path))
    if demuxer is None:
        raise VideoReadError(f"unsupported container {container!r}")
    return demuxer


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


def sample_frames(path: str | Path, n: int, rule: str = "centre", *,
                  container: str | None = None) -> np.ndarray:
    """`n` RGB frames (see `frame_indices` for the rules) as a uint8 array (n, H, W, 3).

    `container` is the clip's recorded container ("mp4", "matroska", "avi"); sniffed from the file when None.
    """
    demuxer = _demuxer(path, container)
    options = {"protocol_whitelist": "file", **_DEMUXER_OPTS.get(demuxer, {})}
    try:
        with av.open(f"file:{Path(path).absolute()}", format=demuxer, container_options=options) as media:
            if not media.streams.video:
                raise VideoReadError("no video stream")
            stream = media.streams.video[0]
            stream.thread_type = "AUTO"
            wanted = frame_indices(_count_frames(media, stream), n, rule)
            last_wanted = wanted[-1]
            picked: dict[int, np.ndarray] = {}
            last = None
            for index, frame in enumerate(media.decode(stream)):
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


def load_audio(path: str | Path, sample_rate: int = 16000, timeout: float = 60.0, *,
               container: str | None = None) -> np.ndarray:
    """Mono float32 audio at `sample_rate`; an empty array when the clip has no audio stream."""
    try:
        demuxer = _demuxer(path, container)
    except VideoReadError as exc:
        raise VideoReadError(f"cannot read audio: {exc}") from None
    options = [arg for key, value in _DEMUXER_OPTS.get(demuxer, {}).items() for arg in (f"-{key}", value)]
    cmd = ["ffmpeg", "-nostdin", "-v", "error", "-protocol_whitelist", "file", "-f", demuxer, *options,
           "-i", f"file:{Path(path).resolve()}",
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
