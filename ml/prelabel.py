"""Pre-label one clip from the command line through the production path (decode → processor → generate →
parse) and print the Prediction as JSON.

    python -m ml.prelabel --backend internvl|affectgpt --model DIR --video CLIP.mp4 [--transcript T]
        [--adapter DIR] [--checkpoint FILE] [--frames N] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .types import ClipInput


def load_backend(name: str, model: str, *, adapter: str | None = None, checkpoint: str | None = None,
                 frames: int | None = None, device: str | None = None):
    # Heavy imports stay inside: only this function needs torch.
    if name == "internvl":
        from .backends.internvl import InternVLBackend

        kwargs = {"num_frames": frames} if frames else {}
        return InternVLBackend(model, adapter=adapter, device=device, **kwargs)
    if name == "affectgpt":
        from .backends.affectgpt import AffectGPTBackend

        return AffectGPTBackend(model, checkpoint=checkpoint, device=device)
    raise ValueError(f"unknown backend {name!r} (use internvl or affectgpt)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ml.prelabel", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", required=True, choices=["internvl", "affectgpt"])
    parser.add_argument("--model", required=True, help="model directory (or hub id for InternVL)")
    parser.add_argument("--video", required=True, type=Path)
    parser.add_argument("--transcript", default="")
    parser.add_argument("--adapter", help="InternVL LoRA adapter directory")
    parser.add_argument("--checkpoint", help="AffectGPT checkpoint file")
    parser.add_argument("--frames", type=int)
    parser.add_argument("--device")
    args = parser.parse_args(argv)
    if not args.video.is_file():
        print(f"error: {args.video}: no such file", file=sys.stderr)
        return 2
    backend = load_backend(args.backend, args.model, adapter=args.adapter, checkpoint=args.checkpoint,
                           frames=args.frames, device=args.device)
    [prediction] = backend.predict([ClipInput(clip_id=args.video.name, video_path=args.video,
                                              transcript=args.transcript)])
    out = prediction.to_dict()
    print(json.dumps({k: out[k] for k in ("labels", "raw_text", "model_version", "prompt_tokens", "seconds",
                                          "flags", "error")}, ensure_ascii=False))
    return 1 if prediction.error else 0


if __name__ == "__main__":
    raise SystemExit(main())
