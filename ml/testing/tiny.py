"""Build a tiny random model for tests and demos, without downloading anything.

    python -m ml.testing.tiny --kind internvl|affectgpt --out DIR [--seed N]

The directory then loads through the production code: `python -m ml.prelabel --backend KIND --model DIR ...`
(for AffectGPT add `--checkpoint DIR/checkpoint.pth`, which is written in the official layout).
"""

from __future__ import annotations

import argparse
from pathlib import Path


def build(kind: str, out: Path, seed: int = 0) -> Path:
    if kind == "internvl":
        from .tiny_internvl import build_tiny_internvl

        return build_tiny_internvl(out, seed=seed)
    if kind == "affectgpt":
        from ..backends.affectgpt import AffectGPTModel
        from .tiny_affectgpt import build_tiny_affectgpt, write_official_style_checkpoint

        build_tiny_affectgpt(out, seed=seed)
        # A checkpoint in the official layout (trainable weights only), as a release would ship it.
        write_official_style_checkpoint(AffectGPTModel.from_pretrained(out, seed=seed), out / "checkpoint.pth")
        return out
    raise ValueError(f"unknown kind {kind!r}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ml.testing.tiny", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kind", required=True, choices=["internvl", "affectgpt"])
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(build(args.kind, args.out, args.seed))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
