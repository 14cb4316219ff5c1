"""Frame sampling speed: `ml.video.sample_frames` (PyAV, one decode pass) against one ffmpeg per timestamp.

    python bench/frames.py [--clips 5] [--seconds 10] [--size 1280x720] [--frames 8,16] [--repeats 3] [--keep]

Generates H.264 clips with audio (testsrc2 and mandelbrot, 25 fps, GOP 50 so that seeking has a real cost),
then in one run, on the same clips and the same frames, measures:
  1. baseline: for each wanted frame, `ffmpeg -ss T -i clip -frames:v 1 -f rawvideo -pix_fmt rgb24 -`,
     one process per timestamp, T = the frame's own timestamp (index / fps) for the segment-centre indices;
  2. ours: `ml.video.sample_frames(clip, n)`.
Each (method, frame count, clip) is timed --repeats times (after one untimed warm-up) and the median kept;
the table gives the mean over clips of those medians, in ms per clip, and the ratio baseline / ours.
It also checks that both methods return the same frames: the max mean absolute pixel difference (MAD,
0-255) between ours and the baseline, next to the MAD a one-frame shift would give, for scale.
"""

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ml.testing.samples import make_clip
from ml.video import frame_indices, sample_frames

FPS = 25


def frame_count(path: Path) -> int:
    import av

    with av.open(str(path)) as container:
        return container.streams.video[0].frames


def ffmpeg_frame(path: Path, seconds: float, width: int, height: int) -> np.ndarray:
    out = subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-ss", f"{seconds:.6f}", "-i", str(path),
                          "-frames:v", "1", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
                         check=True, capture_output=True).stdout
    if len(out) != width * height * 3:
        raise RuntimeError(f"ffmpeg returned {len(out)} bytes at {seconds:.3f} s of {path.name}")
    return np.frombuffer(out, dtype=np.uint8).reshape(height, width, 3)


def baseline(path: Path, indices: list[int], width: int, height: int) -> np.ndarray:
    return np.stack([ffmpeg_frame(path, k / FPS, width, height) for k in indices])


def mad(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def timed(fn, *args):
    start = time.perf_counter()
    result = fn(*args)
    return time.perf_counter() - start, result


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--size", default="1280x720", help="WxH")
    parser.add_argument("--frames", default="8,16", help="comma-separated frame counts")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="keep the temporary clips")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))
    counts = [int(v) for v in args.frames.split(",")]

    work = Path(tempfile.mkdtemp(prefix="affectloop-bench-frames-"))
    try:
        t = time.perf_counter()
        clips = []
        try:
            for i in range(args.clips):
                # GOP 50: seeking to a timestamp has a real decoding cost, as in a camera or phone clip.
                clips.append(make_clip(work / f"clip{i:02d}.mp4", seconds=args.seconds,
                                       size=f"{width}x{height}", fps=FPS,
                                       pattern="testsrc2" if i % 2 == 0 else "mandelbrot",
                                       tone_hz=220 + 110 * i, audio_rate=48000, extra=["-g", "50"]))
        except RuntimeError as exc:  # no ffmpeg, or it failed: the message says which
            sys.exit(str(exc))
        print(f"generated {args.clips} clips ({args.seconds:g} s, {width}x{height}, H.264 GOP 50 + AAC) "
              f"in {time.perf_counter() - t:.1f} s", flush=True)

        rows = []
        max_mad, shift_mad = 0.0, float("inf")
        for n in counts:
            ours_ms, base_ms = [], []
            for clip in clips:
                indices = frame_indices(frame_count(clip), n)
                ours_frames = sample_frames(clip, n)  # warm-up (imports, page cache), untimed
                base_frames = baseline(clip, indices, width, height)
                max_mad = max(max_mad, mad(ours_frames, base_frames))
                if indices[0] + 1 < frame_count(clip):  # what a one-frame shift would look like
                    shifted = ffmpeg_frame(clip, (indices[0] + 1) / FPS, width, height)
                    shift_mad = min(shift_mad, mad(ours_frames[0], shifted))
                ours_t, base_t = [], []
                for _ in range(args.repeats):  # interleaved, so drift hits both methods alike
                    ours_t.append(timed(sample_frames, clip, n)[0])
                    base_t.append(timed(baseline, clip, indices, width, height)[0])
                ours_ms.append(1000 * statistics.median(ours_t))
                base_ms.append(1000 * statistics.median(base_t))
            rows.append((n, statistics.mean(base_ms), statistics.mean(ours_ms)))
            print(f"  {n} frames done", flush=True)

        print()
        print(f"{'frames':>6}  {'ffmpeg per timestamp':>21}  {'PyAV sample_frames':>19}  {'ratio':>6}")
        for n, base, ours in rows:
            print(f"{n:>6}  {base:>15.0f} ms/clip  {ours:>13.0f} ms/clip  {base / ours:>5.1f}x")
        print()
        for n, base, ours in rows:
            print(f"{n} frames: PyAV is {base / ours:.1f}x faster than one ffmpeg process per timestamp")
        print(f"same frames: max MAD ours vs baseline = {max_mad:.3f} (0-255 scale); "
              f"a one-frame shift gives MAD >= {shift_mad:.2f}")
        if max_mad >= shift_mad / 2:
            print("WARNING: the two methods do not return the same frames (index -> timestamp mapping)")
    finally:
        if args.keep:
            print(f"clips kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
