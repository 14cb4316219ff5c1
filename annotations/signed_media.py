"""Signed, expiring links to a clip's media, for tools that have no session (Label Studio, scripts).

A link is `media/s/<token>`: the token is signed with SECRET_KEY (salted for this one use) and binds the clip's
id and the stored file's name, and it carries the time it was made. It is refused when the signature does not
match, when it is older than settings.SIGNED_MEDIA_SECONDS, or when the clip no longer stores that file: a
clip re-uploaded under another name, or erased, kills every link made before. Whoever asks for a link must
be a member of the clip's project (the API checks); whoever holds it may fetch that one file until it expires,
with HTTP Range, like the session's media route.
"""

from __future__ import annotations

from django.conf import settings
from django.core import signing
from django.urls import reverse

from .models import Clip

SALT = "affectloop.signed-media"


def make_token(clip: Clip, *, thumbnail: bool = False) -> str:
    name = clip.thumbnail.name if thumbnail else clip.file.name
    return signing.dumps({"c": clip.pk, "f": name}, salt=SALT, compress=True)


def url_for(request, clip: Clip, *, thumbnail: bool = False) -> str | None:
    """An absolute signed URL (relative when there is no request), or None when the clip lacks that file."""
    if not (clip.thumbnail if thumbnail else clip.file):
        return None
    path = reverse("annotations:signed-media", args=[make_token(clip, thumbnail=thumbnail)])
    return request.build_absolute_uri(path) if request is not None else path


def resolve(token: str) -> tuple[Clip, str] | None:
    """(clip, file name) for a valid token that still names one of the clip's files; None otherwise."""
    try:
        data = signing.loads(token, salt=SALT, max_age=settings.SIGNED_MEDIA_SECONDS)
    except signing.BadSignature:  # SignatureExpired included
        return None
    if not isinstance(data, dict) or not isinstance(data.get("c"), int) or not isinstance(data.get("f"), str):
        return None
    clip = Clip.objects.filter(pk=data["c"]).first()
    if clip is None or not data["f"] or data["f"] not in (clip.file.name, clip.thumbnail.name):
        return None
    return clip, data["f"]
