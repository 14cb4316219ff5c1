"""The deployment files hold together: docker-compose.yml is valid Compose and consistent with itself,
with the Dockerfiles and with nginx.conf, and platform/ never shadows the standard library.

Docker cannot run here, so these are static checks; `docker compose config` on a real host is the
next step up.
"""

import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
NGINX_CONF = ROOT / "platform" / "nginx.conf"

# Keys that would carry a secret if given a value. Their values must come from outside the file.
SENSITIVE_KEY = re.compile(r"SECRET|PASSWORD|PASSWD|TOKEN|API_KEY")
INTERPOLATED = re.compile(r"^\$\{[A-Za-z_][A-Za-z0-9_]*(:?[-?][^}]*)?\}$")
WITH_DEFAULT = re.compile(r"^\$\{[A-Za-z_][A-Za-z0-9_]*:?-(.*)\}$")
URL_WITH_PASSWORD = re.compile(r"^[a-z][a-z0-9+.-]*://[^/@:]*:[^/@]+@")


def check_jsonschema() -> str | None:
    beside_python = Path(sys.executable).parent / "check-jsonschema"
    return str(beside_python) if beside_python.exists() else shutil.which("check-jsonschema")


@pytest.fixture(scope="module")
def compose() -> dict:
    yaml = pytest.importorskip("yaml")
    return yaml.safe_load(COMPOSE.read_text())


def environment(service: dict) -> dict:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, None) for item in env)
    return env


def effective(value) -> str:
    """An environment value as a container gets it when nothing is set outside: ${VAR:-x} → x."""
    text = "" if value is None else str(value)
    m = WITH_DEFAULT.match(text)
    return m.group(1) if m else text


def names(entries) -> list[str]:
    """Service-level secrets in short or long syntax → the names they refer to."""
    return [entry["source"] if isinstance(entry, dict) else entry for entry in entries or []]


def test_compose_file_is_valid_compose_spec():
    exe = check_jsonschema()
    if exe is None:
        pytest.skip("check-jsonschema is not installed (pip install -e '.[dev]'): compose schema not checked")
    proc = subprocess.run(
        [exe, "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_depends_on_targets_exist(compose):
    services = compose["services"]
    for name, service in services.items():
        depends_on = service.get("depends_on") or {}
        for target in depends_on:
            assert target in services, f"{name} depends on unknown service {target}"


def test_builds_name_existing_dockerfiles(compose):
    builds = {name: s["build"] for name, s in compose["services"].items() if "build" in s}
    assert builds, "no service builds an image"
    for name, build in builds.items():
        if isinstance(build, str):
            build = {"context": build}
        context = (COMPOSE.parent / build.get("context", ".")).resolve()
        dockerfile = context / build.get("dockerfile", "Dockerfile")
        assert dockerfile.is_file(), f"{name} builds from missing {dockerfile}"


def test_named_volumes_and_secrets_are_declared(compose):
    declared_volumes = set(compose.get("volumes") or {})
    declared_secrets = set(compose.get("secrets") or {})
    for name, service in compose["services"].items():
        for secret in names(service.get("secrets")):
            assert secret in declared_secrets, f"{name} uses undeclared secret {secret}"
        for volume in service.get("volumes") or []:
            source = volume.get("source") if isinstance(volume, dict) else volume.split(":", 1)[0]
            if isinstance(volume, dict) and volume.get("type", "volume") != "volume":
                continue
            if not source or source.startswith((".", "/", "~", "$")):
                continue  # bind mount or anonymous volume
            assert source in declared_volumes, f"{name} mounts undeclared volume {source}"
    for name, secret in (compose.get("secrets") or {}).items():
        assert "file" in secret or "environment" in secret or secret.get("external"), name


def test_secret_files_are_not_committed():
    secrets_dir = ROOT / "platform" / "secrets"
    ignore = (secrets_dir / ".gitignore").read_text().split()
    assert "*" in ignore and "!.gitignore" in ignore
    assert "platform/secrets/" in (ROOT / ".dockerignore").read_text().split()


def test_gpu_workers_reserve_an_nvidia_gpu(compose):
    for name in ("worker-gpu", "worker-train"):
        devices = compose["services"][name]["deploy"]["resources"]["reservations"]["devices"]
        assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}], name


def test_no_secret_values_in_compose(compose):
    for name, service in compose["services"].items():
        for key, value in environment(service).items():
            text = "" if value is None else str(value)
            assert not URL_WITH_PASSWORD.match(effective(value)), f"{name}: {key} embeds a password"
            if not SENSITIVE_KEY.search(key):
                continue
            if key.endswith("_FILE"):
                assert text.startswith("/run/secrets/"), f"{name}: {key} should name a secret file"
            else:
                # Allowed: empty, a ${VAR} taken from outside the file, or an on/off flag such as
                # LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN.
                assert text in ("", "true", "false") or INTERPOLATED.match(text), (
                    f"{name}: {key} has a literal value; use a secret file or ${{{key}}}"
                )


def test_debug_is_never_on(compose):
    for name, service in compose["services"].items():
        value = effective(environment(service).get("DJANGO_DEBUG"))
        assert value.lower() not in ("1", "true", "yes", "on"), f"{name} runs with DJANGO_DEBUG={value}"


def test_platform_folder_does_not_shadow_stdlib():
    assert not (ROOT / "platform" / "__init__.py").exists()
    # gunicorn.conf.py is fine: a dotted file name cannot be imported as a module.
    modules = [p.name for p in (ROOT / "platform").rglob("*.py") if not p.name.endswith(".conf.py")]
    assert modules == [], "platform/ holds deployment files, never importable Python modules"
    # A fresh interpreter started in the repository root, where the folder is first on sys.path.
    proc = subprocess.run(
        [sys.executable, "-c", "import platform; print(platform.__file__); print(platform.system())"],
        check=False,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    module_file, system = proc.stdout.splitlines()
    stdlib = Path(sysconfig.get_paths()["stdlib"]).resolve()
    assert Path(module_file).resolve().parent == stdlib
    assert system

    import platform

    assert Path(platform.__file__).resolve().parent == stdlib


def _nginx_locations(conf: str) -> dict[str, str]:
    """Prefix location → its body, for the simple (non-nested) blocks nginx.conf uses."""
    return {m.group(1): m.group(2) for m in re.finditer(r"location\s+(/[^\s{]*)\s*\{([^}]*)\}", conf)}


def test_nginx_internal_location_matches_media_accel_prefix(compose):
    prefix = environment(compose["services"]["web"])["AFFECTLOOP_MEDIA_ACCEL_PREFIX"]
    assert prefix.startswith("/") and prefix.endswith("/")
    locations = _nginx_locations(NGINX_CONF.read_text())
    assert prefix in locations, f"nginx.conf has no location {prefix}; it has {sorted(locations)}"
    body = locations[prefix]
    assert re.search(r"^\s*internal;", body, re.MULTILINE), f"location {prefix} must be internal"
    alias = re.search(r"alias\s+(\S+);", body).group(1)
    media_root = environment(compose["services"]["web"])["AFFECTLOOP_MEDIA_ROOT"]
    assert alias == media_root.rstrip("/") + "/"
    nginx_mounts = compose["services"]["nginx"]["volumes"]
    assert any(v.startswith("media:" + media_root.rstrip("/") + ":") for v in nginx_mounts), nginx_mounts
    assert "X-Content-Type-Options nosniff" in body


def test_nginx_upload_cap_matches_the_app_default(compose):
    upload_mb = environment(compose["services"]["web"])["AFFECTLOOP_MAX_UPLOAD_MB"]
    default = re.fullmatch(r"\$\{AFFECTLOOP_MAX_UPLOAD_MB:-(\d+)\}", str(upload_mb)).group(1)
    cap = re.search(r"client_max_body_size\s+(\d+)m;", NGINX_CONF.read_text()).group(1)
    assert cap == default


def test_every_process_that_loads_models_mounts_the_model_directory(compose):
    """Model files are needed exactly where models are loaded or registered: the gpu and train queues. The
    web server, beat and the media worker decide from the registry in the database alone."""
    for name, service in compose["services"].items():
        command = " ".join(map(str, service.get("command") or []))
        queues = command.split("-Q", 1)[1].split()[0].split(",") if " -Q " in f" {command} " else []
        mounts = {str(v).split(":", 1)[1] for v in service.get("volumes") or [] if ":" in str(v)}
        if {"gpu", "train"} & set(queues):
            assert "/data/models" in mounts, name
            assert environment(service).get("AFFECTLOOP_MODEL_DIR") == "/data/models", name
