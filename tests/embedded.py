"""The real embedded platform, started the way a user starts it (`make run`), for end-to-end tests.

`embedded_platform` (session scope) runs `make run` in a private data directory on a free port: gunicorn,
a Celery worker on the filesystem broker and beat, all under honcho, with SQLite. Tests talk to it over
HTTP only (no Django test database), and may run management commands against the same data with
`platform.manage(...)`. Teardown always stops every process it started: SIGTERM, 15 s, then SIGKILL.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
START_TIMEOUT = 90      # seconds from `make run` to GET /healthz → 200
VENV_TIMEOUT = 900      # seconds for `make venv` when the venv has no install stamp yet
STOP_TIMEOUT = 15       # seconds between SIGTERM and SIGKILL
# Settings that would point the platform somewhere other than its private data dir (pytest-django sets
# DJANGO_SETTINGS_MODULE to the test settings, and those set DJANGO_SECRET_KEY and CELERY_BROKER_URL).
_DROPPED_PREFIXES = ("AFFECTLOOP_", "DJANGO_")
_DROPPED = {"DATABASE_URL", "CELERY_BROKER_URL", "MAKEFLAGS", "MFLAGS", "MAKELEVEL"}


@dataclass
class EmbeddedPlatform:
    url: str                    # no trailing slash: http://127.0.0.1:PORT
    data_dir: Path
    admin_user: str
    admin_password: str
    log_path: Path
    env: dict[str, str] = field(repr=False)
    python: str = sys.executable

    def manage(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        """`python manage.py ARGS` against the platform's data, with the platform's environment."""
        return subprocess.run([self.python, "manage.py", *args], cwd=REPO, env=self.env, check=False,
                              capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)

    def log_tail(self, lines: int = 80) -> str:
        return log_tail(self.log_path, lines)


def log_tail(path: Path, lines: int = 80) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        return f"(no log: {exc})"
    return "\n".join(text.splitlines()[-lines:])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def platform_env(data_dir: Path, port: int, venv_bin: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _DROPPED and not k.startswith(_DROPPED_PREFIXES)}
    secret_file = data_dir / "secret_key"
    fd = os.open(secret_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(secrets.token_urlsafe(50) + "\n")
    env.update(
        AFFECTLOOP_DATA_DIR=str(data_dir),
        DJANGO_SECRET_KEY_FILE=str(secret_file),
        AFFECTLOOP_HOST="127.0.0.1",
        AFFECTLOOP_PORT=str(port),
        PATH=os.pathsep.join([str(venv_bin), env.get("PATH", os.defpath)]),
        PYTHONUNBUFFERED="1",
    )
    return env


# --- processes --------------------------------------------------------------------------------------
def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    return children


def _descendants(pid: int) -> set[int]:
    """Every live process below pid (honcho puts each of its processes in a session of its own)."""
    children, found, todo = _children_map(), set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie counts as gone
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM the process group, wait up to STOP_TIMEOUT s for everything below it, then SIGKILL."""
    pgid = proc.pid  # start_new_session=True: the make process leads its own group
    tree = _descendants(proc.pid) | {proc.pid}
    groups = {pgid}
    for pid in tree:
        try:
            groups.add(os.getpgid(pid))
        except ProcessLookupError:
            pass
    own_pgid = os.getpgrp()
    groups.discard(own_pgid)  # never signal pytest's own group
    _signal_group(pgid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    while time.monotonic() < deadline:
        proc.poll()
        if not any(_alive(pid) for pid in tree):
            break
        time.sleep(0.2)
    else:
        for group in groups:
            _signal_group(group, signal.SIGKILL)
        for pid in tree:
            if _alive(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass


def _wait_healthy(url: str, proc: subprocess.Popen, log_path: Path, timeout: float) -> None:
    import requests

    deadline, last = time.monotonic() + timeout, "no answer yet"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"`make run` exited with status {proc.returncode} before {url}/healthz answered.\n"
                        f"--- last 80 lines of {log_path} ---\n{log_tail(log_path)}", pytrace=False)
        try:
            response = requests.get(f"{url}/healthz", timeout=2)
            if response.status_code == 200:
                return
            last = f"HTTP {response.status_code}"
        except requests.RequestException as exc:
            last = type(exc).__name__
        time.sleep(0.5)
    pytest.fail(f"{url}/healthz did not answer 200 within {timeout:.0f} s (last: {last}).\n"
                f"--- last 80 lines of {log_path} ---\n{log_tail(log_path)}", pytrace=False)


def _make_venv(venv: Path, make_args: list[str], env: dict[str, str], log_path: Path) -> None:
    """`make venv` when the venv lacks the Makefile's install stamp (a pip install; slow, done once)."""
    extras = env.get("EXTRAS", "dev")
    if (venv / f".installed-{extras}").exists():
        return
    if not os.access(venv, os.W_OK) or not os.access(Path(sys.executable).parent, os.W_OK):
        pytest.skip(f"{venv} has no install stamp (.installed-{extras}) and is not writable, so `make run` "
                    f"would try to reinstall it")
    with open(log_path, "ab") as log:
        log.write(b"### make venv (no install stamp yet)\n")
        log.flush()
        try:
            result = subprocess.run(["make", *make_args, "venv"], env=env, check=False, stdout=log,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, timeout=VENV_TIMEOUT)
        except subprocess.TimeoutExpired:
            pytest.fail(f"`make venv` took more than {VENV_TIMEOUT} s.\n{log_tail(log_path)}", pytrace=False)
    if result.returncode != 0:
        pytest.fail(f"`make venv` failed with status {result.returncode}.\n"
                    f"--- last 80 lines of {log_path} ---\n{log_tail(log_path)}", pytrace=False)


def first_login(url: str, user: str, password: str) -> str:
    """Bootstrap's printed password works once: the first login lands on the change form, and nothing else
    opens until a new password is set. Returns the new one."""
    import re

    import requests

    session = requests.Session()
    login_url = f"{url}/accounts/login/"
    session.get(login_url, timeout=10)
    response = session.post(login_url, timeout=10, headers={"Referer": login_url}, data={
        "username": user, "password": password, "csrfmiddlewaretoken": session.cookies["csrftoken"]})
    if not response.url.endswith("/accounts/password/"):
        pytest.fail(f"the first login did not ask for a new password (landed on {response.url})", pytrace=False)
    elsewhere = session.get(f"{url}/", timeout=10, allow_redirects=False)
    if elsewhere.status_code != 302 or not elsewhere.headers["Location"].endswith("/accounts/password/"):
        pytest.fail(f"before the change, / answered {elsewhere.status_code} instead of the change form", pytrace=False)
    new = secrets.token_urlsafe(18)
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', response.text).group(1)
    changed = session.post(f"{url}/accounts/password/", timeout=10, headers={"Referer": response.url}, data={
        "old_password": password, "new_password1": new, "new_password2": new, "csrfmiddlewaretoken": token})
    if "Password changed." not in changed.text:
        pytest.fail(f"changing the first password failed:\n{changed.text[:2000]}", pytrace=False)
    return new


@contextlib.contextmanager
def running_platform(data_dir: Path):
    """`make run` in data_dir on a free port, logged in once as the bootstrap admin; stopped on exit. The
    session fixture below and bench/ui_latency.py both start the platform through this."""
    venv_bin = Path(sys.executable).parent
    venv = venv_bin.parent
    # ffmpeg is not needed to start it: the tests that upload clips carry tests.conftest.needs_ffmpeg.
    missing = [] if shutil.which("make") else ["make"]
    if not (venv_bin / "honcho").exists() and shutil.which("honcho") is None:
        missing.append("honcho")
    if missing:
        pytest.skip(f"the embedded platform needs {', '.join(missing)} (apt-get install make; pip install honcho)")

    log_path = data_dir / "platform.log"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = platform_env(data_dir, port, venv_bin)
    # A relative VENV keeps the Makefile's "$(CURDIR)/$(VENV)/bin" PATH entry meaningful.
    make_args = ["-C", str(REPO), f"VENV={os.path.relpath(venv, REPO)}", f"PYTHON={sys.executable}"]
    _make_venv(venv, make_args, env, log_path)

    with open(log_path, "ab") as log:
        proc = subprocess.Popen(["make", *make_args, "run"], env=env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        _wait_healthy(url, proc, log_path, START_TIMEOUT)
        try:
            user, password = (data_dir / "admin-password.txt").read_text(encoding="utf-8").splitlines()[:2]
        except (OSError, ValueError) as exc:
            pytest.fail(f"no admin login in {data_dir / 'admin-password.txt'}: {exc}\n{log_tail(log_path)}",
                        pytrace=False)
        password = first_login(url, user, password)
        yield EmbeddedPlatform(url=url, data_dir=data_dir, admin_user=user, admin_password=password,
                               log_path=log_path, env=env)
    finally:
        stop(proc)


@pytest.fixture(scope="session")
def embedded_platform(tmp_path_factory) -> EmbeddedPlatform:
    with running_platform(tmp_path_factory.mktemp("embedded")) as platform:
        yield platform
