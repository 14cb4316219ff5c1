"""Serving stored media: HTTP Range for seeking, or X-Accel-Redirect to nginx. Callers check membership."""

import os
import re
from pathlib import Path
from urllib.parse import quote

from django.conf import settings
from django.http import FileResponse, Http404, HttpResponse

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
CONTENT_TYPES = {".mp4": "video/mp4", ".mkv": "video/x-matroska", ".avi": "video/x-msvideo", ".jpg": "image/jpeg"}


class _Slice:
    """A file object that stops after `length` bytes, so FileResponse streams only the range."""

    def __init__(self, fh, length: int):
        self.fh, self.left = fh, length

    def read(self, size=-1):
        if self.left <= 0:
            return b""
        size = self.left if size is None or size < 0 else min(size, self.left)
        data = self.fh.read(size)
        self.left -= len(data)
        return data

    def close(self):
        self.fh.close()


def parse_range(header: str, size: int) -> tuple[int, int] | None:
    """One `bytes=a-b` range → (start, end inclusive); None when the header is absent or malformed.

    Raises ValueError when the range cannot be satisfied (→ 416). Multi-range requests are answered
    with the whole file, which RFC 9110 allows.
    """
    m = _RANGE.match(header.strip())
    if not m:
        return None
    first, last = m.groups()
    if not first and not last:
        return None
    if not first:  # suffix: the last N bytes
        n = int(last)
        if n == 0:
            raise ValueError("empty suffix range")
        return max(0, size - n), size - 1
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    if start >= size or end < start:
        raise ValueError("range not satisfiable")
    return start, end


def serve_media(request, rel_name: str, *, download_name: str | None = None):
    root = Path(settings.MEDIA_ROOT).resolve()
    path = (root / rel_name).resolve()
    if root not in path.parents or not path.is_file():
        raise Http404("No such file")
    # Only our own media types are shown inline; anything else (e.g. an .html or .svg put in place through
    # the admin) is a download, so it can never run script on this site.
    content_type = CONTENT_TYPES.get(path.suffix.lower())
    mode = "inline" if content_type else "attachment"
    content_type = content_type or "application/octet-stream"
    disposition = f"{mode}; filename*=UTF-8''{quote(download_name or path.name)}"

    if settings.MEDIA_ACCEL_PREFIX:
        response = HttpResponse(content_type=content_type)
        response["X-Accel-Redirect"] = settings.MEDIA_ACCEL_PREFIX + quote(str(path.relative_to(root)))
        response["Content-Disposition"] = disposition
        # nginx keeps only a few of these on an X-Accel answer; its internal location sets the rest too.
        _protect(response)
        return response

    size = path.stat().st_size
    try:
        byte_range = parse_range(request.headers.get("Range", ""), size)
    except ValueError:
        response = HttpResponse(status=416)
        response["Content-Range"] = f"bytes */{size}"
        return response
    fh = open(path, "rb")
    if byte_range is None:
        response = FileResponse(fh, content_type=content_type)
        response["Content-Length"] = str(size)
    else:
        start, end = byte_range
        fh.seek(start, os.SEEK_SET)
        response = FileResponse(_Slice(fh, end - start + 1), content_type=content_type, status=206)
        response["Content-Length"] = str(end - start + 1)
        response["Content-Range"] = f"bytes {start}-{end}/{size}"
    response["Accept-Ranges"] = "bytes"
    response["Content-Disposition"] = disposition
    _protect(response)
    return response


def _protect(response) -> None:
    response["X-Content-Type-Options"] = "nosniff"
    response["Content-Security-Policy"] = "sandbox"
    # Not kept in the browser's cache: after logout, another user of the same browser must not see clips.
    response["Cache-Control"] = "private, no-store"
