"""Strict readers for settings that come from the environment.

A typo in a deployment's environment must stop the process at start-up with a message naming the
variable, never fall back silently to a default (e.g. DJANGO_DEBUG=ture must not mean False).
"""

import os
from urllib.parse import quote, urlsplit, urlunsplit

from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def env_str(name: str, default: str | None = None) -> str | None:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name}={raw!r} is not a boolean (use one of true/false, 1/0, yes/no, on/off)")


def env_int(name: str, default: int, *, minimum: int = 0) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not an integer") from None
    if value < minimum:
        raise ImproperlyConfigured(f"{name}={value} must be at least {minimum}")
    return value


def env_float(name: str, default: float, *, minimum: float = 0.0) -> float:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not a number") from None
    if value < minimum:
        raise ImproperlyConfigured(f"{name}={value} must be at least {minimum}")
    return value


def env_list(name: str, default: list[str]) -> list[str]:
    raw = os.environ.get(name)
    if raw is None:
        return list(default)
    return [item.strip() for item in raw.split(",") if item.strip()]


def _read_secret(name: str, path: str) -> str:
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read().strip()
    except OSError as exc:
        raise ImproperlyConfigured(f"{name} cannot be read ({path}): {exc.strerror}") from None


def read_secret_file(name: str) -> str:
    """The secret in the file named by the environment variable `name` (docker secrets)."""
    path = os.environ[name]
    value = _read_secret(name, path)
    if not value:
        raise ImproperlyConfigured(f"{name}={path!r} is empty")
    return value


def with_password(url: str, password: str) -> str:
    """`url` with `password` in its userinfo, unless it has one already (or there is none to add)."""
    if not password:
        return url
    parts = urlsplit(url)
    if parts.password is not None:
        return url
    host = parts.netloc.rpartition("@")[2]
    user = quote(parts.username or "", safe="")
    return urlunsplit(parts._replace(netloc=f"{user}:{quote(password, safe='')}@{host}"))


def secret_key(data_dir_key: str | os.PathLike | None = None) -> str:
    """DJANGO_SECRET_KEY, or the contents of the file named by DJANGO_SECRET_KEY_FILE (docker secrets), or
    else the key file that `make run` generated in the data directory (`data_dir_key`), so the README's
    management commands work as written beside a running platform.

    There is deliberately no built-in default: a missing key is a configuration error, not a reason to run
    with a well-known one.
    """
    key = os.environ.get("DJANGO_SECRET_KEY")
    path = os.environ.get("DJANGO_SECRET_KEY_FILE")
    if key and path:
        raise ImproperlyConfigured("set DJANGO_SECRET_KEY or DJANGO_SECRET_KEY_FILE, not both")
    if not key and not path and data_dir_key is not None and os.path.isfile(data_dir_key):
        path = os.fspath(data_dir_key)
    if path:
        key = _read_secret("DJANGO_SECRET_KEY_FILE", path)
    if not key:
        raise ImproperlyConfigured(
            "DJANGO_SECRET_KEY (or DJANGO_SECRET_KEY_FILE) is not set and the data directory has no "
            "secret_key file. `make run` creates one there; in production generate one with: python -c \"import secrets; print(secrets.token_urlsafe(50))\""
        )
    if len(key) < 32:
        raise ImproperlyConfigured("DJANGO_SECRET_KEY is too short (need at least 32 characters)")
    return key
