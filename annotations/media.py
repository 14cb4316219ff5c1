"""Validation and small utilities for uploaded clips and their transcripts.

Pure functions over files on disk, kept free of heavy imports (torch, av) so the web process can call them
cheaply; Django settings are read only when a tool runs. Probing runs the system ``ffprobe``/``ffmpeg`` in a
subprocess with a timeout, an address-space limit and a per-frame pixel cap; nothing is decoded until the
cheap checks (size, magic bytes) have passed. Command lines are built with ffmpeg-python but always run by
:func:`_run_tool` (never ffmpeg-python's ``run``/``probe``, which have no timeout, leave stdin open and
cannot add our hardening). Transcripts are parsed with webvtt-py.

Every :class:`MediaRejected` message is shown to users: it is short, has no traceback and never
contains a server path.
"""

from __future__ import annotations

import dataclasses
import errno
import functools
import hashlib
import html
import io
import json
import os
import re
import resource
import signal
import stat
import subprocess
import threading
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import NamedTuple

import ffmpeg
import webvtt
from ffmpeg._utils import convert_kwargs_to_cmd_line_args  # what ffmpeg.probe() builds its args with
from webvtt.errors import MalformedCaptionError, MalformedFileError
from webvtt.models import Timestamp
from webvtt.srt import SRTCueBlock
from webvtt.vtt import WebVTTCueBlock

PROBE_TIMEOUT_S = 30.0
THUMBNAIL_TIMEOUT_S = 60.0
TRANSCRIPT_MAX_BYTES = 1_000_000

# Our container name -> the ffmpeg demuxer we force. With a forced demuxer ffmpeg never auto-detects,
# so the hls/concat/image2 demuxers (which open other files or URLs) cannot be reached.
_DEMUXER = {"mp4": "mov", "matroska": "matroska", "avi": "avi"}
# Extra demuxer options: MOV "dref" atoms can point at other files; keep that off explicitly.
_DEMUXER_OPTS = {"mov": {"enable_drefs": 0}}
# A stream may legitimately lose a packet or two to edit lists; a truncated file loses far more.
_PACKET_TOLERANCE = 0.02
# Decoders check their padded buffer size against -max_pixels (a 2160-wide frame is allocated 2176 wide,
# AV1 pads to 128), so the pixel cap gets this slack per side; the exact caps are checked after probing.
_PIXEL_SLACK = 128
# Decoder threads each cost address space (stack, malloc arena): a fixed count keeps a tool's need
# independent of the host's cores. A 4K thumbnail needs ~350 MB this way, ~1.8 GB with 16 auto threads.
_PROBE_THREADS = 1
_THUMBNAIL_THREADS = 2
_DEFAULT_TOOL_MEMORY_MB = 1024
# ffmpeg's own message when -max_pixels refuses a frame (libavutil/imgutils.c).
_MAX_PIXELS_HIT = re.compile(r"Picture size (\d+)x(\d+) exceeds specified max pixel count")
# What an allocation that failed under the memory limit prints (lower case).
_OUT_OF_MEMORY = ("cannot allocate memory", "could not allocate", "out of memory", "get_buffer() failed")
# Faults of the tool itself: nobody sends these to a process group, so they are about the file.
_CRASH_SIGNALS = {signal.SIGSEGV, signal.SIGBUS, signal.SIGABRT, signal.SIGILL, signal.SIGFPE}


class MediaRejected(Exception):
    """The file is not an acceptable clip. str(exc) is a short, user-facing reason."""


class MediaToolKilled(RuntimeError):
    """ffprobe/ffmpeg died from a signal: a server-side interruption, not a verdict on the file."""


@dataclass(frozen=True)
class MediaLimits:
    max_bytes: int
    max_seconds: float
    max_width: int
    max_height: int

    @property
    def max_pixels(self) -> int:
        """The per-frame pixel cap handed to ffprobe/ffmpeg (-max_pixels)."""
        return pixel_cap(self.max_width, self.max_height)


def pixel_cap(max_width: int, max_height: int) -> int:
    """-max_pixels for frames within max_width x max_height (either orientation), decoder padding included."""
    return (max_width + _PIXEL_SLACK) * (max_height + _PIXEL_SLACK)


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

    info = _ffprobe(path, container, limits)
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


def ffprobe_command(path: Path, container: str, *, max_pixels: int) -> list[str]:
    """The hardened ffprobe command line for a file whose container has been sniffed.

    ffmpeg-python compiles only ffmpeg graphs; for ffprobe it offers the option helper its own probe()
    uses. Options are grouped (logging, input hardening, output) because the helper sorts within a dict.
    """
    demuxer = _DEMUXER[container]
    args = convert_kwargs_to_cmd_line_args
    return [
        "ffprobe",
        *args({"v": "error", "hide_banner": None}),
        # The input must be forced and whitelisted: these decide which code can ever touch the file.
        *args({"protocol_whitelist": "file", "f": demuxer, **_DEMUXER_OPTS.get(demuxer, {})}),
        # Refuse oversized frames before a buffer is allocated: the size cap is only checked after probing.
        *args({"max_pixels": int(max_pixels), "threads": _PROBE_THREADS}),
        *args({"show_streams": None, "show_format": None, "count_packets": None, "of": "json"}),
        _local_input(path),
    ]


def thumbnail_command(path: Path, out_path: Path, container: str, *, seek: float, width: int,
                      max_pixels: int) -> list[str]:
    """The hardened ffmpeg command line writing one JPEG frame of `path` to `out_path`."""
    demuxer = _DEMUXER[container]
    stream = ffmpeg.input(
        _local_input(path), format=demuxer, protocol_whitelist="file", ss=f"{seek:.3f}",
        max_pixels=int(max_pixels), threads=_THUMBNAIL_THREADS, **_DEMUXER_OPTS.get(demuxer, {}),
    ).output(
        f"file:{out_path}", format="image2", vf=f"scale={int(width)}:-2",
        threads=1, **{"frames:v": 1, "c:v": "mjpeg", "q:v": 4},
    )
    # Global options first, as a person would type them (compile() appends -y after the output).
    return ffmpeg.compile(stream, cmd=["ffmpeg", "-v", "error", "-hide_banner", "-nostdin", "-y",
                                       "-filter_threads", "1"])


def _local_input(path: Path) -> str:
    # "file:" keeps a name such as "http:..." or "concat:..." from being read as another protocol.
    return f"file:{Path(path).absolute()}"


def _run_tool(cmd: list[str], timeout: float) -> subprocess.CompletedProcess:
    """Run ffprobe/ffmpeg: bounded in time and address space, stdin closed, output captured.

    Raises TimeoutExpired. The tool gets a process group of its own: stopping a worker signals the
    worker's whole group (Ctrl-C, honcho, systemd), and a probe killed mid-file would otherwise mark a
    good clip corrupt. The worker's warm shutdown waits for the task, and the timeout still bounds the tool.
    The address-space limit (MEDIA_TOOL_MEMORY_MB) makes a hostile file fail an allocation instead of
    taking the worker's memory; see _limit_hit for how that is reported.
    """
    memory_mb = _tool_memory_mb()
    limit = memory_mb << 20
    hard = resource.getrlimit(resource.RLIMIT_AS)[1]
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)  # a child may lower its hard limit, never raise it
    # preexec_fn runs between fork and exec, beside other threads (validate_all): a bare C call with
    # arguments computed here, so the child runs no Python code that could wait on a lock.
    cap_memory = functools.partial(resource.setrlimit, resource.RLIMIT_AS, (limit, limit))
    # Until the child has left our group (setpgid, just before exec) a group signal still reaches it,
    # so one death by signal is retried; a second one is reported, never blamed on the file.
    for _ in range(2):
        try:
            proc = subprocess.run(cmd, capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL,
                                  check=False, process_group=0, preexec_fn=cap_memory)
        except FileNotFoundError:  # a server set-up problem, not the user's
            raise RuntimeError(f"{cmd[0]} is not installed or not on PATH") from None
        except OSError as exc:
            if exc.errno == errno.ENOMEM:  # exec itself failed under the limit
                raise _cannot_start(cmd[0], memory_mb) from None
            raise
        if proc.returncode == 127 and b"error while loading shared libraries" in proc.stderr:
            raise _cannot_start(cmd[0], memory_mb)  # the loader could not map the tool's libraries
        if proc.returncode >= 0:
            return proc
    if -proc.returncode in _CRASH_SIGNALS:
        name = signal.Signals(-proc.returncode).name
        raise MediaRejected(f"could not read the video: {cmd[0]} crashed on it "
                            f"({name}; memory limit {memory_mb} MB)")
    raise MediaToolKilled(f"{cmd[0]} was killed by signal {-proc.returncode}")


def _cannot_start(tool: str, memory_mb: int) -> RuntimeError:
    # The same for every file: a server setting to fix, not a verdict on the clip.
    return RuntimeError(f"{tool} cannot start within its memory limit of {memory_mb} MB: "
                        f"raise MEDIA_TOOL_MEMORY_MB")


def _tool_memory_mb() -> int:
    from django.conf import settings  # here, not at import: importing this module needs no Django set-up

    return int(getattr(settings, "MEDIA_TOOL_MEMORY_MB", _DEFAULT_TOOL_MEMORY_MB))


def _limit_hit(stderr: str, max_width: int, max_height: int) -> str | None:
    """The user-facing reason when a tool stopped at one of our limits rather than at a fault in the file."""
    if match := _MAX_PIXELS_HIT.search(stderr):
        return f"resolution too high: {match[1]}x{match[2]} (limit {max_width}x{max_height})"
    if any(marker in stderr.lower() for marker in _OUT_OF_MEMORY):
        return f"out of memory reading the video (limit {_tool_memory_mb()} MB)"
    return None


def _ffprobe(path: Path, container: str, limits: MediaLimits) -> dict:
    try:
        proc = _run_tool(ffprobe_command(path, container, max_pixels=limits.max_pixels), PROBE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise MediaRejected("corrupt or unreadable video: probing timed out") from None
    stderr = proc.stderr.decode("utf-8", "replace")
    if proc.returncode != 0 or stderr.strip():
        if reason := _limit_hit(stderr, limits.max_width, limits.max_height):
            raise MediaRejected(reason)
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


def make_thumbnail(path, out_path, *, at_seconds: float, width: int = 320,
                   limits: MediaLimits | None = None) -> None:
    """Write one JPEG frame of the clip, `width` pixels wide with the aspect ratio kept.

    Falls back to the first frame when `at_seconds` is past the end. Written to a temporary name
    and renamed, so a reader never sees half a JPEG. Frames are capped at `limits`' resolution, by
    default the configured MAX_CLIP_WIDTH x MAX_CLIP_HEIGHT.
    """
    path, out_path = Path(path).absolute(), Path(out_path).absolute()
    container = sniff_container(path)  # same hardening as probing
    if limits is None:
        from django.conf import settings

        max_width, max_height = settings.MAX_CLIP_WIDTH, settings.MAX_CLIP_HEIGHT
    else:
        max_width, max_height = limits.max_width, limits.max_height
    # A per-call name: two workers making the same thumbnail never write into each other's file.
    tmp = out_path.with_name(f".{out_path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    for seek in (max(0.0, at_seconds), 0.0):
        tmp.unlink(missing_ok=True)
        cmd = thumbnail_command(path, tmp, container, seek=seek, width=width,
                                max_pixels=pixel_cap(max_width, max_height))
        try:
            proc = _run_tool(cmd, THUMBNAIL_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            tmp.unlink(missing_ok=True)
            raise MediaRejected("could not make a thumbnail: timed out") from None
        except (MediaRejected, MediaToolKilled):  # a crashed or killed tool may leave a partial file
            tmp.unlink(missing_ok=True)
            raise
        if proc.returncode == 0 and tmp.exists() and tmp.stat().st_size > 0:
            os.chmod(tmp, 0o640)  # like uploads: owner and group, whatever the umask
            os.replace(tmp, out_path)
            return
    tmp.unlink(missing_ok=True)
    stderr = proc.stderr.decode("utf-8", "replace")
    reason = _limit_hit(stderr, max_width, max_height) or _first_error_line(stderr, path)
    raise MediaRejected(f"could not make a thumbnail: {reason}")


# --------------------------------------------------------------------------------------------------
# Transcripts

_TRANSCRIPT_SUFFIXES = (".srt", ".vtt", ".txt")
_TAG = re.compile(r"<[^>]*>|\{\\[^}]*\}")  # <i>, <c.cls>, <v Name>, <00:01.000>; SSA {\an8}
# The timing-line patterns webvtt-py itself matches cues with.
_SRT_TIMINGS = SRTCueBlock.CUE_TIMINGS_PATTERN
_VTT_TIMINGS = WebVTTCueBlock.CUE_TIMINGS_PATTERN


class TranscriptSegment(NamedTuple):
    start: float  # seconds, exact to the millisecond written in the file
    end: float
    text: str


def read_transcript_file(path, *, max_bytes: int = TRANSCRIPT_MAX_BYTES) -> str:
    """Plain text of a .srt / .vtt / .txt file: cue text only, no numbers, timings or tags."""
    suffix, text = _read_transcript_text(path, max_bytes)
    if suffix == ".txt":
        return "\n".join(ln.strip() for ln in text.split("\n") if ln.strip())
    return "\n".join(segment.text for segment in _cue_segments(text, suffix))


def read_transcript_segments(path, *, max_bytes: int = TRANSCRIPT_MAX_BYTES) -> list[TranscriptSegment]:
    """The cues of a .srt / .vtt file as (start seconds, end seconds, plain text), in file order."""
    suffix, text = _read_transcript_text(path, max_bytes)
    if suffix == ".txt":
        raise MediaRejected("a .txt transcript has no time codes: use .srt or .vtt")
    return _cue_segments(text, suffix)


def _read_transcript_text(path, max_bytes: int) -> tuple[str, str]:
    """(lower-case suffix, text with LF line ends) of a transcript, after the type/size/UTF-8 checks."""
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
    return suffix, text.replace("\r\n", "\n").replace("\r", "\n")


def _cue_segments(text: str, suffix: str) -> list[TranscriptSegment]:
    """Cues of SRT or WebVTT text, parsed by webvtt-py. Cues whose text is empty after cleaning are dropped."""
    if not text.strip():
        return []  # an empty sidecar means "no transcript", as it always has
    fmt = "srt" if suffix == ".srt" else "vtt"
    try:
        # Not strict: unknown cue settings (align:, position:, ...) are ignored rather than fatal.
        captions = webvtt.WebVTT.from_buffer(io.StringIO(text.lstrip()), format=fmt).captions
    except MalformedFileError:
        if fmt == "vtt":
            raise MediaRejected('transcript is not valid WebVTT: the first line must be "WEBVTT"') from None
        raise MediaRejected("transcript is not valid SubRip (.srt): it must start with a cue number "
                            "and its timing line") from None
    except (MalformedCaptionError, ValueError):
        raise MediaRejected(f"transcript is not valid {'WebVTT' if fmt == 'vtt' else 'SubRip (.srt)'}") from None
    _check_cue_timings(text, fmt)
    segments = []
    for caption in captions:
        words = " ".join(_TAG.sub("", ln).strip() for ln in caption.lines)
        words = re.sub(r"\s+", " ", html.unescape(words)).strip()
        if words:
            segments.append(TranscriptSegment(caption.start_time.in_milliseconds() / 1000,
                                              caption.end_time.in_milliseconds() / 1000, words))
    return segments


def _check_cue_timings(text: str, fmt: str) -> None:
    """Reject a cue whose timing line cannot be read: webvtt-py would silently drop it and its speech."""
    pattern = _SRT_TIMINGS if fmt == "srt" else _VTT_TIMINGS
    in_cue = False
    for number, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            in_cue = False
        elif "-->" in line and not in_cue:  # the first timing line of a blank-line-separated block
            in_cue = True
            match = pattern.match(line)
            if match is None or (fmt == "vtt" and not all(_vtt_timestamp_ok(t) for t in match.groups())):
                shown = line.strip()
                shown = shown if len(shown) <= 60 else shown[:57] + "..."
                raise MediaRejected(f'transcript has an invalid cue timing on line {number}: "{shown}"')


def _vtt_timestamp_ok(value: str) -> bool:
    try:
        Timestamp.from_string(value)  # also range-checks minutes and seconds
    except MalformedCaptionError:
        return False
    return True


def find_sidecar_transcript(video_path) -> Path | None:
    """The transcript stored next to a video under the same stem: .srt, then .vtt, then .txt."""
    video_path = Path(video_path)
    for suffix in _TRANSCRIPT_SUFFIXES:
        for candidate in (video_path.with_suffix(suffix), video_path.with_suffix(suffix.upper())):
            if candidate.is_file():
                return candidate
    return None
