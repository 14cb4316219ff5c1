"""The signed media route: no session, the signed token is the permission (annotations.signed_media)."""

from django.http import Http404
from django.views.decorators.http import require_GET

from .. import signed_media
from ..http import serve_media


@require_GET
def serve_signed(request, token):
    found = signed_media.resolve(token)
    if found is None:
        raise Http404("This link is invalid or has expired")
    clip, name = found
    download = clip.original_name.rsplit("/", 1)[-1] if name == clip.file.name else None
    return serve_media(request, name, download_name=download)
