"""Validation and small utilities for uploaded clips and their transcripts.

Pure functions over files on disk, kept free of Django and of heavy imports (torch, av) so the web
process can call them cheaply. Probing runs the system ``ffprobe``/``ffmpeg`` in a subprocess with a
timeout; nothing is decoded until the cheap checks (size, magic bytes) have passed.

Every :class:`MediaRejected` message is shown to users: it is short, has no traceback and never
contains a server path.
"""

from __future__ import annotations

import dataclasses
import hashlib
import html
import json
import os
import re
import stat
import subprocess
import threading
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

PROBE_TIMEOUT_S = 30.0
THUMBNAIL_TIMEOUT_S = 60.0
TRANSCRIPT_MAX_BYTES = 1_000_000

# Our container name -> the ffmpeg demuxer we force. With a forced demuxer ffmpeg never auto-detects,
# so the hls/concat/image2 demuxers (which open other files or URLs) cannot be reached.
_DEMUXER = {"mp4": "mov", "matroska": "matroska", "avi": "avi"}
# Extra demuxer options: MOV "dref" atoms can point at other files; keep that off explicitly.
_DEMUXER_OPTS = {"mov": ["-enable_drefs", "0"]}
# A stream may legitimately lose a packet or two to edit lists; a truncated file loses far more.
_PACKET_TOLERANCE = 0.02


class MediaRejected(Exception):
    """The file is not an acceptable clip. str(exc) is a short, user-facing reason."""


@dataclass(frozen=True)
class MediaLimits:
    max_bytes: int
    max_seconds: float
    max_width: int
    max_height: int


@dataclass(frozen=True)
class ProbeResult:
    container: str  # "mp4" (mov/m4v/3gp family), "matroska" (webm/mkv), "avi"
    duration: float  # seconds
    fps: float
    width: int
    height: int
    video_codec: str
    has_audio: bool
    audio_codec: str  # "" when there is no audio
    size_bytes: int

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------------------------------
# Container sniffing


def sniff_container(path) -> str:
    """Name the container from the file's first bytes (never its extension), or reject it."""
    head = _read_head(Path(path), 512)
    if not head:
        raise MediaRejected("empty file (0 bytes)")
    if head[4:8] == b"ftyp":  # ISO-BMFF: the first box is `ftyp`
        return "mp4"
    if head.startswith(b"\x1a\x45\xdf\xa3"):  # EBML header
        return "matroska"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "avi"
    text = head.removeprefix(b"\xef\xbb\xbf").lstrip()
    if text.startswith(b"#EXTM3U") or text.lower().startswith(b"ffconcat version"):
        raise MediaRejected("not a video: playlists/concat lists are not accepted")
    if _looks_like_text(head):
        raise MediaRejected("not a video: looks like a text file")
    raise MediaRejected("unsupported file type: only MP4/MOV, WebM/MKV and AVI videos are accepted")


def _read_head(path: Path, n: int) -> bytes:
    _check_regular_file(path)
    with open(path, "rb") as f:
        return f.read(n)


def _check_regular_file(path: Path) -> os.stat_result:
    # A FIFO or device would block or never end, so only regular files get opened.
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise MediaRejected("file not found") from None
    except OSError:
        raise MediaRejected("file cannot be read") from None
    if not stat.S_ISREG(st.st_mode):
        raise MediaRejected("not a regular file")
    return st


def _looks_like_text(head: bytes) -> bool:
    if b"\x00" in head:
        return False
    control = sum(1 for b in head if b < 32 and b not in b"\t\n\r\f")
    return control == 0


# --------------------------------------------------------------------------------------------------
# Probing


def probe_video(path, limits: MediaLimits) -> ProbeResult:
    """Validate an uploaded clip and describe it. Raises MediaRejected with a user-facing reason."""
    path = Path(path).absolute()
    size = _check_regular_file(path).st_size
    if size == 0:
        raise MediaRejected("empty file (0 bytes)")
    if size > limits.max_bytes:
        raise MediaRejected(f"file too large: {_mb(size)} MB (limit {_mb(limits.max_bytes)} MB)")
    container = sniff_container(path)

    info = _ffprobe(path, container)
    streams = info.get("streams") or []
    # An attached picture (cover art in an m4a, say) is an image, not a video stream.
    videos = [
        s for s in streams
        if s.get("codec_type") == "video" and not (s.get("disposition") or {}).get("attached_pic")
    ]
    audios = [s for s in streams if s.get("codec_type") == "audio"]
    if not videos:
        raise MediaRejected("audio-only file: no video stream" if audios else "no video stream")
    video = videos[0]

    # A truncated MP4 whose moov box survived still reports the full frame count in its index;
    # the packets that can actually be read tell the truth. MP4 indexes every packet of every stream;
    # elsewhere only video frames map one-to-one to packets (AVI counts PCM audio in samples).
    for s in streams if container == "mp4" else videos:
        expected, got = _int(s.get("nb_frames")), _int(s.get("nb_read_packets"))
        if expected and got is not None and got < expected * (1 - _PACKET_TOLERANCE) - 1:
            raise MediaRejected(
                f"corrupt or truncated video: only {got} of {expected} "
                f"{s.get('codec_type', 'stream')} packets are present"
            )

    duration = _float((info.get("format") or {}).get("duration")) or _float(video.get("duration"))
    if not duration or duration <= 0:
        raise MediaRejected("could not determine the video's duration")
    if duration > limits.max_seconds:
        raise MediaRejected(f"video too long: {duration:.1f} s (limit {limits.max_seconds:g} s)")

    width, height = _int(video.get("width")) or 0, _int(video.get("height")) or 0
    if width <= 0 or height <= 0:
        raise MediaRejected("could not determine the video's frame size")
    # Caps are orientation-agnostic: a portrait phone clip is as cheap to decode as a landscape one.
    long_cap, short_cap = max(limits.max_width, limits.max_height), min(limits.max_width, limits.max_height)
    if max(width, height) > long_cap or min(width, height) > short_cap:
        raise MediaRejected(
            f"resolution too high: {width}x{height} (limit {limits.max_width}x{limits.max_height})"
        )

    fps = _rate(video.get("avg_frame_rate")) or _rate(video.get("r_frame_rate"))
    if not fps:
        fps = (_int(video.get("nb_read_packets")) or 0) / duration

    return ProbeResult(
        container=container,
        duration=duration,
        fps=fps,
        width=width,
        height=height,
        video_codec=str(video.get("codec_name") or "unknown"),
        has_audio=bool(audios),
        audio_codec=str(audios[0].get("codec_name") or "unknown") if audios else "",
        size_bytes=size,
    )


def _ffprobe(path: Path, container: str) -> dict:
    demuxer = _DEMUXER[container]
    cmd = [
        "ffprobe", "-v", "error", "-hide_banner",
        "-protocol_whitelist", "file",
        "-f", demuxer, *_DEMUXER_OPTS.get(demuxer, []),
        "-show_streams", "-show_format", "-count_packets", "-of", "json",
        f"file:{path}",
    ]
    try:
        proc = subprocess.run(cmd, capture_output=True, timeout=PROBE_TIMEOUT_S, stdin=subprocess.DEVNULL, check=False)
    except subprocess.TimeoutExpired:
        raise MediaRejected("corrupt or unreadable video: probing timed out") from None
    except FileNotFoundError:  # a server set-up problem, not the user's
        raise RuntimeError("ffprobe is not installed or not on PATH") from None
    stderr = proc.stderr.decode("utf-8", "replace")
    if proc.returncode != 0 or stderr.strip():
        raise MediaRejected(f"corrupt or truncated video: {_first_error_line(stderr, path)}")
    try:
        return json.loads(proc.stdout)
    except ValueError:
        raise MediaRejected("corrupt or truncated video: unreadable probe output") from None


def _first_error_line(stderr: str, path: Path) -> str:
    line = next((ln.strip() for ln in stderr.splitlines() if ln.strip()), "unreadable file")
    for p in (f"file:{path}", str(path)):
        line = line.replace(p, "")
    line = re.sub(r"^\[[^\]]*@ 0x[0-9a-f]+\]\s*", "", line)  # "[mov,mp4,... @ 0x55d1...] "
    line = line.lstrip(": ").strip() or "unreadable file"
    return line[:200]


def _mb(n: int) -> str:
    mb = n / 1_000_000
    return f"{mb:.0f}" if mb >= 100 else f"{mb:.3g}"  # "750", "12.5", "0.0119"


def _int(v) -> int | None:
    try:
        return int(v)
    except (TypeError, ValueError):
        return None


def _float(v) -> float | None:
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def _rate(v) -> float:
    """ffprobe rates are fractions like "30000/1001"; "0/0" means unknown."""
    try:
        return float(Fraction(str(v)))
    except (ValueError, ZeroDivisionError):
        return 0.0


# --------------------------------------------------------------------------------------------------
# Files


def sha256_file(path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def make_thumbnail(path, out_path, *, at_seconds: float, width: int = 320) -> None:
    """Write one JPEG frame of the clip, `width` pixels wide with the aspect ratio kept.

    Falls back to the first frame when `at_seconds` is past the end. Written to a temporary name
    and renamed, so a reader never sees half a JPEG.
    """
    path, out_path = Path(path).absolute(), Path(out_path).absolute()
    demuxer = _DEMUXER[sniff_container(path)]  # same hardening as probing
    # A per-call name: two workers making the same thumbnail never write into each other's file.
    tmp = out_path.with_name(f".{out_path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    for seek in (max(0.0, at_seconds), 0.0):
        tmp.unlink(missing_ok=True)
        cmd = [
            "ffmpeg", "-v", "error", "-hide_banner", "-nostdin", "-y",
            "-protocol_whitelist", "file",
            "-ss", f"{seek:.3f}",
            "-f", demuxer, *_DEMUXER_OPTS.get(demuxer, []), "-i", f"file:{path}",
            "-frames:v", "1", "-vf", f"scale={int(width)}:-2",
            "-f", "image2", "-c:v", "mjpeg", "-q:v", "4", f"file:{tmp}",
        ]
        try:
            proc = subprocess.run(cmd, capture_output=True, timeout=THUMBNAIL_TIMEOUT_S, check=False)
        except subprocess.TimeoutExpired:
            raise MediaRejected("could not make a thumbnail: timed out") from None
        if proc.returncode == 0 and tmp.exists() and tmp.stat().st_size > 0:
            os.replace(tmp, out_path)
            return
    tmp.unlink(missing_ok=True)
    stderr = proc.stderr.decode("utf-8", "replace")
    raise MediaRejected(f"could not make a thumbnail: {_first_error_line(stderr, path)}")


# --------------------------------------------------------------------------------------------------
# Transcripts

_TRANSCRIPT_SUFFIXES = (".srt", ".vtt", ".txt")
_TAG = re.compile(r"<[^>]*>|\{\\[^}]*\}")  # <i>, <c.cls>, <v Name>, <00:01.000>; SSA {\an8}


def read_transcript_file(path, *, max_bytes: int = TRANSCRIPT_MAX_BYTES) -> str:
    """Plain text of a .srt / .vtt / .txt file: cue text only, no numbers, timings or tags."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in _TRANSCRIPT_SUFFIXES:
        raise MediaRejected("unsupported transcript type: use .srt, .vtt or .txt")
    size = _check_regular_file(path).st_size
    if size > max_bytes:
        raise MediaRejected(f"transcript too large: {_mb(size)} MB (limit {_mb(max_bytes)} MB)")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")  # tolerates a UTF-8 BOM
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise MediaRejected(
            f"transcript is not UTF-8: byte 0x{raw[e.start]:02x} at position {e.start} (line {line})"
        ) from None
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if suffix == ".txt":
        return "\n".join(ln.strip() for ln in text.split("\n") if ln.strip())
    return _cue_text(text)


def _cue_text(text: str) -> str:
    """Cue text of SRT or WebVTT: in each blank-line-separated block, the lines after the timing line.

    Blocks without a timing line (the WEBVTT header, NOTE, STYLE, REGION) carry no speech.
    """
    cues = []
    for block in re.split(r"\n\s*\n", text):
        lines = block.strip().split("\n")
        timing = next((i for i, ln in enumerate(lines) if "-->" in ln), None)
        if timing is None:
            continue
        words = " ".join(_TAG.sub("", ln).strip() for ln in lines[timing + 1:])
        words = re.sub(r"\s+", " ", html.unescape(words)).strip()
        if words:
            cues.append(words)
    return "\n".join(cues)


def find_sidecar_transcript(video_path) -> Path | None:
    """The transcript stored next to a video under the same stem: .srt, then .vtt, then .txt."""
    video_path = Path(video_path)
    for suffix in _TRANSCRIPT_SUFFIXES:
        for candidate in (video_path.with_suffix(suffix), video_path.with_suffix(suffix.upper())):
            if candidate.is_file():
                return candidate
    return None
