"""The one split rule: a clip's split (train, val or test) is a fixed function of a key and the ratios.

The key is the clip's sha256, or its group value (e.g. the speaker) when the project sets a group key, so
that all clips of a group land in one split. The hash is salted so that the split does not correlate with
anything else derived from the sha256 (such as the media file's folder). Standard library only.
"""

from __future__ import annotations

import hashlib

SPLITS = ("train", "val", "test")


def split_of(key: str, train: float, val: float, test: float) -> str:
    """Deterministic: the same key and ratios always give the same split, on every machine and version."""
    total = train + val + test
    if total <= 0 or min(train, val, test) < 0:
        raise ValueError("split ratios must be non-negative and not all zero")
    point = int(hashlib.sha256(b"affectloop-split\0" + key.encode()).hexdigest()[:15], 16) / 16 ** 15
    if point < train / total:
        return "train"
    if point < (train + val) / total:
        return "val"
    return "test"
