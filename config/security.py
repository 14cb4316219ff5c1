"""Small security pieces the settings name: the debug page's filter and the client address for throttling."""

import re

from django.conf import settings
from django.views.debug import SafeExceptionReporterFilter

# scheme://user:password@host → the password part, up to the last "@" (a raw password may hold "/" or "@";
# masking a little too much is fine). Redis URLs often have an empty user (redis://:pw@host).
_URL_PASSWORD = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^/@:\s]*:)(?P<password>\S+)(?P<tail>@)", re.I)
# ...?password=... in a URL's query (psycopg and redis accept it there).
_QUERY_PASSWORD = re.compile(r"(?P<head>[?&](?:password|passwd|pwd)=)(?P<password>[^&\s]+)", re.I)


class SafeReporterFilter(SafeExceptionReporterFilter):
    """Django hides settings named like PASSWORD or SECRET, but not a password inside a URL-valued setting
    or request variable (CELERY_BROKER_URL, a cache LOCATION, DATABASE_URL in runserver's environ)."""

    def cleanse_setting(self, key, value):
        value = super().cleanse_setting(key, value)
        if type(value) is str:  # not lazy strings (translations), which re.sub cannot take
            value = _URL_PASSWORD.sub(lambda m: m["head"] + self.cleansed_substitute + m["tail"], value)
            value = _QUERY_PASSWORD.sub(lambda m: m["head"] + self.cleansed_substitute, value)
        return value


def client_ip(request) -> str | None:
    """The client's address for login throttling. Behind N trusted proxies (AFFECTLOOP_TRUSTED_PROXY_COUNT)
    it is the Nth address from the right of X-Forwarded-For, the one the outermost trusted proxy saw; a
    client cannot forge it by sending its own header, because each proxy appends to the right."""
    count = settings.TRUSTED_PROXY_COUNT
    if count > 0:
        hops = [h.strip() for h in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if h.strip()]
        if len(hops) >= count:
            return hops[-count]
    return request.META.get("REMOTE_ADDR")
