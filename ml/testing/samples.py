"""Synthetic media for demos, tests and benchmarks, made with the system ffmpeg (no downloads, no Django).

`generate_sample_clips` renders labelled sample clips: each is a short H.264 + AAC MP4 of 2-3 coloured
scenes with a moving box, whose soundtrack is espeak-ng reading a one-line transcript (or a speech-like
warbling tone when espeak-ng is missing or `speech=False`). The scene colours lean towards a hue per
emotion, so a model can learn colour -> emotion as well as transcript -> emotion from them. Transcripts
and labels depend only on `seed` and the clip index; every clip of one call has different pixels and
sound, so their sha256 differ.

`generate_colour_clips` renders clips of one solid colour whose hue alone carries the emotion (the
transcript is neutral): a task that a tiny random model learns from the frames in a few hundred LoRA steps,
for the training tests. `write_training_jsonl` writes clips as the JSONL that `python -m ml.train` reads.

`make_clip` makes one plain clip (a test pattern and a sine tone) in whatever container, codecs and
layout a test or benchmark needs.
"""

from __future__ import annotations

import ast
import colorsys
import csv
import json
import os
import random
import shutil
import subprocess
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

MANIFEST_NAME = "manifest.csv"
_SAMPLE_RATE = 22050
_NAMES = ["Sam", "Alex", "Maya", "Leo", "Nora", "Omar", "Iris", "Theo", "Lena", "Ravi"]


@dataclass(frozen=True)
class _Emotion:
    hue: float  # 0..1, the colour the scenes lean towards
    lines: tuple[tuple[tuple[str, ...], str], ...]  # (labels, sentence); {name} is filled in


# Open vocabulary: every line carries its own label set, the first label being the row's emotion.
EMOTIONS: dict[str, _Emotion] = {
    "happy": _Emotion(0.14, (
        (("happy",), "What a lovely day, {name}."),
        (("happy", "excited"), "{name}, we actually won!"),
        (("happy", "grateful"), "Thank you so much, this means a lot."),
    )),
    "sad": _Emotion(0.62, (
        (("sad",), "I miss the way things used to be."),
        (("sad", "lonely"), "Nobody came to see me, {name}."),
        (("sad", "disappointed"), "I really thought it would work this time."),
    )),
    "angry": _Emotion(0.0, (
        (("angry",), "Don't you dare talk to me like that."),
        (("angry", "frustrated"), "I told you three times, {name}!"),
        (("angry", "betrayed"), "You promised you would never do that."),
    )),
    "anxious": _Emotion(0.78, (
        (("anxious",), "What if they don't call back?"),
        (("anxious", "relieved"), "I was so worried, but it's fine now."),
        (("anxious", "nervous"), "My hands are shaking, {name}."),
    )),
    "surprised": _Emotion(0.5, (
        (("surprised",), "Wait, is that really you, {name}?"),
        (("surprised", "happy"), "No way, you came all this way!"),
        (("surprised", "confused"), "Hold on, how did that even happen?"),
    )),
    "disgusted": _Emotion(0.25, (
        (("disgusted",), "Ugh, that smells absolutely awful."),
        (("disgusted", "angry"), "I can't believe you would eat that, {name}."),
        (("disgusted",), "Get it away from me, please."),
    )),
    "excited": _Emotion(0.08, (
        (("excited",), "The tickets just arrived, {name}!"),
        (("excited", "happy"), "We leave for the beach tomorrow!"),
        (("excited", "anxious"), "The big show starts in five minutes."),
    )),
    "relieved": _Emotion(0.38, (
        (("relieved",), "Phew, we made it just in time."),
        (("relieved", "grateful"), "Thank goodness you found it, {name}."),
        (("relieved", "happy"), "The test came back clear."),
    )),
    "frustrated": _Emotion(0.04, (
        (("frustrated",), "Why does this never work?"),
        (("frustrated", "tired"), "I've tried this all day, {name}."),
        (("frustrated", "angry"), "The printer jammed again!"),
    )),
    "calm": _Emotion(0.45, (
        (("calm",), "Let's just sit here for a while."),
        (("calm", "content"), "The sea is so quiet tonight, {name}."),
        (("calm",), "Take a breath, everything is fine."),
    )),
    "proud": _Emotion(0.11, (
        (("proud",), "I finished the marathon, {name}."),
        (("proud", "happy"), "Look what my daughter built."),
        (("proud", "grateful"), "We did this together, all of us."),
    )),
    "confused": _Emotion(0.7, (
        (("confused",), "Sorry, what do you mean, {name}?"),
        (("confused", "anxious"), "Which train am I supposed to take?"),
        (("confused", "surprised"), "That's not what the sign said."),
    )),
}


@dataclass(frozen=True)
class SampleClip:
    path: Path  # the .mp4
    transcript: str
    labels: list[str] = field(hash=False)  # the emotion words this clip "shows"
    language: str


@dataclass(frozen=True)
class _Plan:
    """Everything needed to render one clip, drawn from the per-clip RNG."""
    index: int
    transcript: str
    labels: list[str]
    colours: list[str]  # one per scene, "0xRRGGBB"
    box_colour: str
    box_speed: float  # pixels per second
    box_y: float  # 0..1 of the free height
    tone_hz: float


def generate_sample_clips(out_dir, count: int, *, seconds: float = 2.0, width: int = 320, height: int = 240,
                          fps: int = 15, seed: int = 0, speech: bool | None = None,
                          workers: int | None = None) -> list[SampleClip]:
    """Render `count` clips into `out_dir` with .srt sidecars and a manifest.csv; return them in order.

    speech: None uses espeak-ng when it is on PATH; True requires it; False always uses a tone.
    """
    _require_ffmpeg()
    espeak = shutil.which("espeak-ng")
    if speech and espeak is None:
        raise RuntimeError("speech=True needs espeak-ng on PATH")
    use_speech = espeak is not None and speech is not False
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    digits = max(4, len(str(count - 1)))

    def render(plan: _Plan) -> SampleClip:
        path = out_dir / f"clip_{plan.index:0{digits}d}.mp4"
        wav = _speak(plan.transcript, seconds) if use_speech else None
        _render_mp4(path, plan, wav, seconds=seconds, width=width, height=height, fps=fps)
        path.with_suffix(".srt").write_text(_srt(plan.transcript, seconds), encoding="utf-8")
        return SampleClip(path=path, transcript=plan.transcript, labels=plan.labels, language="en")

    plans = [_plan(seed, i) for i in range(count)]
    # Each ffmpeg runs single-threaded; the pool gives the parallelism (threads just wait on processes).
    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        clips = list(pool.map(render, plans))

    with open(out_dir / MANIFEST_NAME, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "transcript", "language", "labels"])
        for clip in clips:
            writer.writerow([clip.path.name, clip.transcript, clip.language, repr(clip.labels)])
    return clips


def read_sample_clips(out_dir) -> list[SampleClip]:
    """The clips a `generate_sample_clips` call left in `out_dir`, back from its manifest: for a machine
    without ffmpeg (a GPU box for a benchmark) that is handed clips rendered elsewhere."""
    out_dir = Path(out_dir)
    with open(out_dir / MANIFEST_NAME, newline="", encoding="utf-8") as f:
        return [SampleClip(path=out_dir / row["path"], transcript=row["transcript"],
                           labels=list(ast.literal_eval(row["labels"])), language=row["language"])
                for row in csv.DictReader(f)]


def _plan(seed: int, index: int) -> _Plan:
    # A string seed is hashed stably (unlike hash()), so plans are the same on every run and machine.
    rng = random.Random(f"affectloop-samples:{seed}:{index}")
    emotion = EMOTIONS[rng.choice(sorted(EMOTIONS))]
    labels, line = rng.choice(emotion.lines)
    scenes = rng.choice((2, 3))
    colours = [_colour(emotion.hue + rng.uniform(-0.04, 0.04), rng.uniform(0.5, 1.0), rng.uniform(0.35, 0.95))
               for _ in range(scenes)]
    return _Plan(
        index=index,
        transcript=line.format(name=rng.choice(_NAMES)),
        labels=list(labels),
        colours=colours,
        box_colour=_colour(rng.random(), rng.uniform(0.0, 0.4), 1.0),
        box_speed=rng.uniform(40, 160) * rng.choice((-1, 1)),
        box_y=rng.random(),
        tone_hz=rng.uniform(110, 260),
    )


def _colour(h: float, s: float, v: float) -> str:
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, s, v)
    return f"0x{round(r * 255):02x}{round(g * 255):02x}{round(b * 255):02x}"


def _speak(text: str, seconds: float) -> bytes:
    """espeak-ng WAV of `text`, talking faster when the sentence would not fit in the clip."""
    words = len(text.split())
    wpm = int(min(320, max(170, words * 60 / (seconds * 0.85))))
    proc = subprocess.run(["espeak-ng", "--stdout", "-v", "en", "-s", str(wpm), text],
                          capture_output=True, timeout=30, check=True)
    return proc.stdout


def _render_mp4(path: Path, plan: _Plan, wav: bytes | None, *, seconds: float, width: int, height: int,
                fps: int) -> None:
    n = len(plan.colours)
    scene = seconds / n
    graph = [f"color=c={c}:s={width}x{height}:r={fps}:d={scene:.4f}[s{i}]" for i, c in enumerate(plan.colours)]
    box = max(8, min(width, height) // 6)
    # The box slides across and wraps; its speed and height differ per clip.
    x = f"mod({plan.index * 7}+t*{plan.box_speed:.2f}+{width},{width})"
    y = int(plan.box_y * (height - box))
    graph.append("".join(f"[s{i}]" for i in range(n))
                 + f"concat=n={n}:v=1:a=0,drawbox=x='{x}':y={y}:w={box}:h={box}:c={plan.box_colour}:t=fill[v]")
    if wav is not None:
        inputs = ["-f", "wav", "-i", "pipe:0"]
        graph.append(f"[0:a]aresample={_SAMPLE_RATE},apad[a]")
    else:
        # Speech-like: a pitch that wobbles (FM) at a syllable-ish amplitude rate.
        f0 = plan.tone_hz
        expr = f"0.35*(0.55+0.45*sin(2*PI*4.3*t))*sin(2*PI*{f0:.2f}*t+3*sin(2*PI*2.7*t))"
        inputs = []
        graph.append(f"aevalsrc='{expr}':s={_SAMPLE_RATE}:d={seconds:.4f}[a]")
    tmp = path.with_name(f".{path.name}.tmp.mp4")  # renamed at the end: no half-written clips
    cmd = [
        "ffmpeg", "-v", "error", "-hide_banner", "-y", "-filter_complex_threads", "1",
        *inputs, "-filter_complex", ";".join(graph), "-map", "[v]", "-map", "[a]", "-t", f"{seconds:.4f}",
        "-c:v", "libx264", "-preset", "veryfast", "-threads", "1", "-pix_fmt", "yuv420p",
        "-c:a", "aac", "-b:a", "48k", "-ac", "1",
        "-movflags", "+faststart", "-f", "mp4", str(tmp),
    ]
    proc = subprocess.run(cmd, input=wav, capture_output=True, timeout=120, check=False)
    if proc.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise RuntimeError(f"ffmpeg failed for {path.name}: {proc.stderr.decode(errors='replace')[-500:]}")
    os.replace(tmp, path)


def _srt(transcript: str, seconds: float) -> str:
    """One cue, or two when the sentence is long enough to split."""
    words = transcript.split()
    parts = [transcript] if len(words) < 6 else [" ".join(words[: len(words) // 2]),
                                                 " ".join(words[len(words) // 2:])]
    step = seconds / len(parts)
    return "\n".join(f"{i + 1}\n{_ts(i * step)} --> {_ts((i + 1) * step)}\n{text}\n"
                     for i, text in enumerate(parts))


def _ts(t: float) -> str:
    ms = round(t * 1000)
    return f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d},{ms % 1000:03d}"


# --- solid-colour clips: an emotion that only the frames tell ----------------------------------------

COLOUR_EMOTIONS = {"angry": 0.0, "happy": 0.15, "calm": 0.33, "sad": 0.62}  # emotion -> hue
_NEUTRAL_LINES = ("", "Okay.", "Here it is.", "Look at this.", "Hello there.", "So, yes.")


def generate_colour_clips(out_dir, count: int, *, seed: int = 0, seconds: float = 0.5, size: int = 32,
                          fps: int = 8, emotions: dict[str, float] | None = None,
                          workers: int | None = None) -> list[SampleClip]:
    """`count` clips of one solid colour each. Clip i shows emotion i mod k of `emotions` (name -> hue,
    default COLOUR_EMOTIONS) at that hue +-0.02, with saturation and brightness drawn from `seed`; its labels
    are [name] and its transcript a neutral line, so only the colour tells the emotion. Files are named
    colour_<seed>_<i>.mp4: calls with different seeds can share a folder, and every file differs."""
    _require_ffmpeg()
    emotions = emotions or COLOUR_EMOTIONS
    names = list(emotions)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    def render(index: int) -> SampleClip:
        rng = random.Random(f"affectloop-colour:{seed}:{index}")
        name = names[index % len(names)]
        hue = emotions[name] + rng.uniform(-0.02, 0.02)
        colour = _colour(hue, rng.uniform(0.6, 1.0), rng.uniform(0.6, 1.0))
        path = out_dir / f"colour_{seed}_{index:04d}.mp4"
        cmd = ["ffmpeg", "-nostdin", "-v", "error", "-hide_banner", "-y", "-f", "lavfi",
               "-i", f"color=c={colour}:s={size}x{size}:r={fps}:d={seconds}", "-c:v", "libx264",
               "-preset", "veryfast", "-threads", "1", "-pix_fmt", "yuv420p", "-an",
               "-movflags", "+faststart", str(path)]
        proc = subprocess.run(cmd, capture_output=True, timeout=60, check=False)
        if proc.returncode != 0:
            message = proc.stderr.decode(errors="replace")[-500:]
            raise RuntimeError(f"ffmpeg failed for {path.name}: {message}")
        return SampleClip(path=path, transcript=rng.choice(_NEUTRAL_LINES), labels=[name], language="en")

    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        return list(pool.map(render, range(count)))


def write_training_jsonl(path, clips: Sequence[SampleClip]) -> Path:
    """One {"video", "transcript", "labels"} line per clip, the video relative to the file's folder (the
    format `python -m ml.train` reads)."""
    path = Path(path)
    lines = [json.dumps({"video": os.path.relpath(clip.path, path.parent), "transcript": clip.transcript,
                         "labels": clip.labels}, ensure_ascii=False) for clip in clips]
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


_FASTSTART_SUFFIXES = {".mp4", ".mov", ".m4a"}


def make_clip(path, *, seconds: float = 1.0, size: str = "160x120", fps: int = 10, pattern: str = "testsrc",
              video: bool = True, audio: bool = True, tone_hz: float = 440, audio_rate: int | None = None,
              video_codec: str = "libx264", audio_codec: str = "aac", faststart: bool = True,
              extra: Sequence[str] = ()) -> Path:
    """Write a `seconds`-long clip of the lavfi `pattern` (testsrc, testsrc2, mandelbrot, ...) at `size`
    and `fps`, with a `tone_hz` sine when `audio`; the container follows the suffix of `path`.

    faststart puts the moov atom first (MP4/MOV/M4A only); `extra` holds more output options, e.g.
    `["-g", "50"]` or `["-metadata", "comment=..."]` to make the bytes unique.
    """
    if not (video or audio):
        raise ValueError("a clip needs video, audio or both")
    _require_ffmpeg()
    path = Path(path)
    cmd = ["ffmpeg", "-nostdin", "-v", "error", "-hide_banner", "-y"]
    if video:
        cmd += ["-f", "lavfi", "-i", f"{pattern}=size={size}:rate={fps}"]
    if audio:
        rate = f":sample_rate={audio_rate}" if audio_rate else ""
        cmd += ["-f", "lavfi", "-i", f"sine=frequency={tone_hz}{rate}"]
    cmd += ["-t", f"{seconds}"]  # an output limit cuts both endless sources to the same length
    if video:
        cmd += ["-c:v", video_codec, "-pix_fmt", "yuv420p"]
        if video_codec == "libx264":
            cmd += ["-preset", "veryfast"]
    cmd += ["-c:a", audio_codec] if audio else ["-an"]
    if faststart and path.suffix.lower() in _FASTSTART_SUFFIXES:
        cmd += ["-movflags", "+faststart"]
    proc = subprocess.run([*cmd, *extra, str(path)], capture_output=True, timeout=120, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"ffmpeg failed for {path.name}: {proc.stderr.decode(errors='replace')[-500:]}")
    return path


def _require_ffmpeg() -> None:
    if shutil.which("ffmpeg") is None:
        raise RuntimeError("ffmpeg is not installed or not on PATH")
