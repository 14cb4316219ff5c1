"""Where browser tests put their screenshots: a temporary folder, or docs/screenshots/ under `make screenshots`
(which sets AFFECTLOOP_SCREENSHOT_DIR)."""

import os
from pathlib import Path


def shot(page, name: str, *, full_page: bool = True) -> Path:
    folder = Path(os.environ.get("AFFECTLOOP_SCREENSHOT_DIR") or "/tmp/affectloop-screens")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    return path
