"""A real Label Studio server for the `labelstudio` integration test (DESIGN.md, "Infrastructure notes").

Label Studio pins its own Django, DRF and redis versions, so it lives in a virtualenv of its own, built once
per machine in a cache folder outside the repository (AFFECTLOOP_LABEL_STUDIO_VENV, default
~/.cache/affectloop/label-studio-venv) under a file lock, so parallel runs and CI jobs pay the install once.
The server starts offline: a preset user and legacy token, no version check, on 127.0.0.1 and a free port,
with a throwaway data folder. Every failure is an `Unavailable` with the reason, which the fixture turns into
a visible skip.

Run it by hand to prepare a machine: `python -m tests.integration.labelstudio_server`.
"""

from __future__ import annotations

import fcntl
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

VENV_ENV = "AFFECTLOOP_LABEL_STUDIO_VENV"
SPEC_ENV = "AFFECTLOOP_LABEL_STUDIO_SPEC"
DEFAULT_VENV = Path.home() / ".cache" / "affectloop" / "label-studio-venv"
DEFAULT_SPEC = "label-studio>=1.20,<2"
INSTALL_TIMEOUT_S = 1200
START_TIMEOUT_S = 180  # ~40 s cold here; slower machines get room
USERNAME = "ls-admin@affectloop.test"
PASSWORD = "ls-admin-password-123"
TOKEN = "affectloop0test0token0" + "0" * 18  # 40 characters, like Label Studio's own


class Unavailable(RuntimeError):
    """Label Studio cannot be built or started here; the message says why."""


@dataclass
class Server:
    url: str
    token: str
    process: subprocess.Popen
    log: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


def venv_dir() -> Path:
    return Path(os.environ.get(VENV_ENV) or DEFAULT_VENV)


def _executable(venv: Path) -> Path:
    return venv / "bin" / "label-studio"


@contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def ensure_venv() -> Path:
    """The cached virtualenv's label-studio executable, built first if it is missing (once per machine)."""
    venv = venv_dir()
    spec = os.environ.get(SPEC_ENV) or DEFAULT_SPEC
    ready = venv / ".affectloop-ready"  # names the spec it was built from: another spec rebuilds it

    def built() -> bool:
        return ready.exists() and ready.read_text().strip() == spec and _executable(venv).exists()

    if built():
        return _executable(venv)
    with _locked(venv.parent / (venv.name + ".lock")):
        if built():  # built by another process while we waited
            return _executable(venv)
        python = os.environ.get("AFFECTLOOP_LABEL_STUDIO_PYTHON") or sys.executable
        steps = [[python, "-m", "venv", "--clear", str(venv)],
                 [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet",
                  spec]]
        for step in steps:
            try:
                done = subprocess.run(step, check=False, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S)
            except (OSError, subprocess.TimeoutExpired) as exc:
                raise Unavailable(f"cannot build the Label Studio virtualenv ({' '.join(step[:3])}): {exc}") from None
            if done.returncode != 0:
                last = ((done.stderr or done.stdout).strip().splitlines() or ["no output"])[-1]
                raise Unavailable(f"cannot build the Label Studio virtualenv in {venv} ({spec}): {last[:300]}")
        if not _executable(venv).exists():
            raise Unavailable(f"{venv} has no label-studio executable after the install")
        ready.write_text(spec + "\n")
    return _executable(venv)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=3) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def start(data_dir: Path) -> Server:
    """Start Label Studio offline on a free port with its data in `data_dir`; wait until /health answers."""
    executable = ensure_venv()
    port = free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("DJANGO_", "DATABASE", "AFFECTLOOP_", "CELERY_"))}  # ours, not its own
    env.update({
        "LABEL_STUDIO_USERNAME": USERNAME,
        "LABEL_STUDIO_PASSWORD": PASSWORD,
        "LABEL_STUDIO_USER_TOKEN": TOKEN,
        "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
        "LATEST_VERSION_CHECK": "false",
        "LABEL_STUDIO_BASE_DATA_DIR": str(data_dir),
        "LOCAL_FILES_SERVING_ENABLED": "false",
        "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": "true",
        "COLLECT_ANALYTICS": "false",
        # Our ML backend runs on 127.0.0.1 here, an address Label Studio refuses by default for ML backends
        # and for the webhook it adds for them.
        "ML_BLOCK_LOCAL_IP": "false",
        "SSRF_PROTECTION_ENABLED": "false",
        "DEBUG": "false",
    })
    log = data_dir / "label-studio.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [str(executable), "start", "--no-browser", "--internal-host", "127.0.0.1", "--port", str(port),
             "--data-dir", str(data_dir)],
            stdout=out, stderr=subprocess.STDOUT, env=env, cwd=data_dir, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    server = Server(url=url, token=TOKEN, process=process, log=log)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log.read_text(errors="replace").strip().splitlines()[-5:]
            raise Unavailable(f"Label Studio exited with {process.returncode}: {' | '.join(tail)}")
        if _healthy(url):
            return server
        time.sleep(1)
    server.stop()
    raise Unavailable(f"Label Studio did not answer /health within {START_TIMEOUT_S} s (log: {log})")


if __name__ == "__main__":
    print(ensure_venv())
