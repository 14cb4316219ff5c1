"""python manage.py make_sample_clips --out DIR --count N [--seconds S] [--size WxH] [--seed K] [--no-speech]"""

import re
import time

from django.core.management.base import BaseCommand, CommandError

from ml.testing.samples import MANIFEST_NAME, generate_sample_clips


def frame_size(value: str) -> tuple[int, int]:
    m = re.fullmatch(r"(\d+)x(\d+)", value)
    if not m or int(m[1]) < 16 or int(m[2]) < 16 or int(m[1]) % 2 or int(m[2]) % 2:
        raise ValueError(value)  # yuv420p needs even sides
    return int(m[1]), int(m[2])


class Command(BaseCommand):
    help = "Generate synthetic sample clips (MP4 + .srt sidecars + manifest.csv) for demos and benchmarks."

    def add_arguments(self, parser):
        parser.add_argument("--out", required=True, help="output directory (created if missing)")
        parser.add_argument("--count", type=int, required=True)
        parser.add_argument("--seconds", type=float, default=2.0)
        parser.add_argument("--size", type=frame_size, default=(320, 240), metavar="WxH",
                            help="frame size, even numbers (default 320x240)")
        parser.add_argument("--fps", type=int, default=15)
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--no-speech", action="store_true", help="use a tone instead of espeak-ng")
        parser.add_argument("--workers", type=int, default=None, help="parallel ffmpeg runs (default: CPUs)")

    def handle(self, *args, out, count, seconds, size, fps, seed, no_speech, workers, **options):
        if count < 1 or seconds <= 0 or fps < 1:
            raise CommandError("--count, --seconds and --fps must be positive")
        start = time.monotonic()
        try:
            clips = generate_sample_clips(out, count, seconds=seconds, width=size[0], height=size[1], fps=fps,
                                          seed=seed, speech=False if no_speech else None, workers=workers)
        except RuntimeError as e:
            raise CommandError(str(e)) from e
        if options["verbosity"] >= 2:
            for clip in clips:
                self.stdout.write(f"{clip.path.name}\t{', '.join(clip.labels)}\t{clip.transcript}")
        elapsed = time.monotonic() - start
        self.stdout.write(self.style.SUCCESS(f"{len(clips)} clips in {elapsed:.1f} s"))
        self.stdout.write(str(clips[0].path.parent / MANIFEST_NAME))
