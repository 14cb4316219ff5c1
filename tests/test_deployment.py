"""The deployment files hold together: docker-compose.yml is valid Compose and consistent with itself,
with the Dockerfiles and with nginx.conf, and platform/ never shadows the standard library.

Docker cannot run here, so these are static checks; `docker compose config` on a real host is the
next step up.
"""

import os
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


def dockerfile_requirements(extras: str) -> list[str]:
    """What platform/Dockerfile.web's requirements step writes for the EXTRAS build argument: its own
    command, taken from the file and run here on pyproject.toml."""
    text = (ROOT / "platform" / "Dockerfile.web").read_text()
    code = re.search(r'RUN python -c "(.*?)" \\\n\s*> /tmp/requirements.txt', text).group(1)
    env = {**os.environ, "EXTRAS": extras}
    out = subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=60)
    return out.stdout.split("\n")[:-1]


def test_the_web_image_carries_the_label_studio_client_compose_runs_it_for(compose):
    """The web and the media worker push to and pull from the Label Studio of the `label-studio` profile: their
    image gets the `labelstudio` extra by default, and never the `ml` one (no torch in the web image)."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    base, extras = project["dependencies"], project["optional-dependencies"]
    users = {name for name, s in compose["services"].items() if s.get("image") == "affectloop-web:latest"}
    assert {"web", "worker-media", "beat", "migrate"} <= users and "label-studio" in compose["services"]
    args = {effective(compose["services"][name]["build"]["args"]["EXTRAS"]) for name in users}
    assert args == {"labelstudio"}
    assert dockerfile_requirements("labelstudio") == base + extras["labelstudio"]
    assert dockerfile_requirements("") == base
    assert not any(r.startswith("torch") for r in dockerfile_requirements("labelstudio"))


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


def _nginx_tree(conf: str) -> list:
    """nginx.conf → [(directive, [args], children or None)], quotes kept out of the args."""
    tokens = re.findall(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|#[^\n]*|[{};]|[^\s{};"\'#]+', conf)
    stack: list[list] = [[]]
    words: list[str] = []
    for token in tokens:
        if token.startswith("#"):
            continue
        if token == "{":
            block: list = []
            stack[-1].append((words[0], words[1:], block))
            stack.append(block)
            words = []
        elif token == "}":
            stack.pop()
        elif token == ";":
            stack[-1].append((words[0], words[1:], None))
            words = []
        else:
            words.append(token[1:-1] if token[0] in "\"'" else token)
    assert len(stack) == 1 and not words, "unbalanced nginx.conf"
    return stack[0]


def _directives(block: list, name: str) -> list[list[str]]:
    return [args for directive, args, _ in block if directive == name]


@pytest.fixture(scope="module")
def nginx() -> dict:
    """The http block, the server block and its locations ("/static/", "= /_auth/upload", "~ ^/p/...")."""
    tree = _nginx_tree(NGINX_CONF.read_text())
    http = next(children for name, _, children in tree if name == "http")
    server = next(children for name, _, children in http if name == "server")
    locations = {" ".join(args): children for name, args, children in server if name == "location"}
    return {"http": http, "server": server, "locations": locations}


UPLOAD_LOCATION = "~ ^/(p/[^/]+/upload/|api/v1/projects/[^/]+/clips/)$"


def test_nginx_internal_location_matches_media_accel_prefix(compose, nginx):
    prefix = environment(compose["services"]["web"])["AFFECTLOOP_MEDIA_ACCEL_PREFIX"]
    assert prefix.startswith("/") and prefix.endswith("/")
    locations = nginx["locations"]
    assert prefix in locations, f"nginx.conf has no location {prefix}; it has {sorted(locations)}"
    body = locations[prefix]
    assert _directives(body, "internal") == [[]], f"location {prefix} must be internal"
    [[alias]] = _directives(body, "alias")
    media_root = environment(compose["services"]["web"])["AFFECTLOOP_MEDIA_ROOT"]
    assert alias == media_root.rstrip("/") + "/"
    nginx_mounts = compose["services"]["nginx"]["volumes"]
    assert any(v.startswith("media:" + media_root.rstrip("/") + ":") for v in nginx_mounts), nginx_mounts


def test_nginx_media_location_sets_the_protective_headers_itself(nginx):
    """X-Accel-Redirect drops most of the app's headers; `always` keeps them on 206 and error answers too."""
    media = nginx["locations"]["/protected-media/"]
    headers = {args[0]: args[1:] for args in _directives(media, "add_header")}
    assert headers["X-Content-Type-Options"] == ["nosniff", "always"]
    assert headers["Content-Security-Policy"] == ["sandbox", "always"]
    assert headers["X-Frame-Options"] == ["DENY", "always"]
    assert headers["Referrer-Policy"] == ["same-origin", "always"]
    # nginx keeps the app's own Cache-Control on the redirect: added only where the app sent none.
    assert headers["Cache-Control"] == ["$media_cache_control", "always"]
    [cache_map] = [children for name, args, children in nginx["http"]
                   if name == "map" and args == ["$upstream_http_cache_control", "$media_cache_control"]]
    assert {d: args[0] for d, args, _ in cache_map} == {"": "private, no-store", "default": ""}


def _max_request_mb() -> int:
    from django.conf import settings

    if os.environ.get("AFFECTLOOP_MAX_REQUEST_MB"):
        pytest.skip("AFFECTLOOP_MAX_REQUEST_MB is set: the default is not what settings hold")
    return settings.MAX_REQUEST_BYTES // (1024 * 1024)


def test_nginx_body_limits_match_the_app_defaults(compose, nginx):
    """2 MB everywhere (AFFECTLOOP_MAX_REQUEST_MB), the upload cap only on the upload route."""
    assert _directives(nginx["http"], "client_max_body_size") == [[f"{_max_request_mb()}m"]]
    assert _directives(nginx["server"], "client_max_body_size") == []
    upload_mb = environment(compose["services"]["web"])["AFFECTLOOP_MAX_UPLOAD_MB"]
    default = re.fullmatch(r"\$\{AFFECTLOOP_MAX_UPLOAD_MB:-(\d+)\}", str(upload_mb)).group(1)
    large = {name: _directives(body, "client_max_body_size") for name, body in nginx["locations"].items()}
    assert large.pop(UPLOAD_LOCATION) == [[f"{default}m"]]
    # The gate subrequest never reads a body; 0 keeps it from re-checking the upload's Content-Length.
    assert large.pop("= /_auth/upload") == [["0"]]
    assert all(v == [] for v in large.values()), large


def test_nginx_upload_location_matches_the_app_route():
    from django.urls import reverse

    pattern = UPLOAD_LOCATION.split(" ", 1)[1]
    for upload in (reverse("annotations:clip-upload", kwargs={"slug": "some-project"}),
                   reverse("api:clips", kwargs={"slug": "some-project"})):  # the API's upload route
        assert re.search(pattern, upload), upload
        assert not re.search(pattern, upload + "x")
    assert not re.search(pattern, "/p/a/b/upload/") and not re.search(pattern, "/api/v1/projects/a/b/clips/")
    assert not re.search(pattern, "/api/v1/projects/a/snapshots/")


def test_nginx_asks_the_app_before_it_accepts_an_upload_body(nginx):
    locations = nginx["locations"]
    upload = locations[UPLOAD_LOCATION]
    assert _directives(upload, "auth_request") == [["/_auth/upload"]]
    gate = locations["= /_auth/upload"]
    assert _directives(gate, "internal") == [[]]
    [[target]] = _directives(gate, "proxy_pass")
    assert target.endswith("/_auth/upload")
    assert _directives(gate, "proxy_pass_request_body") == [["off"]]
    headers = {args[0]: args[1] if len(args) > 1 else "" for args in _directives(gate, "proxy_set_header")}
    assert headers["Content-Length"] == ""
    assert headers["X-Original-URI"] == "$request_uri"
    main = {args[0]: args[1] for args in _directives(locations["/"], "proxy_set_header")}
    for name in ("Host", "X-Forwarded-For", "X-Forwarded-Proto"):
        assert headers[name] == main[name], name
    # Cookies (the session) go with the subrequest: nothing may turn request headers off.
    assert _directives(gate, "proxy_pass_request_headers") in ([], [["on"]])
    assert not any(args[0].lower() == "cookie" for args in _directives(gate, "proxy_set_header"))
    # The upload itself is proxied like every other request.
    uploads = {args[0]: args[1] for args in _directives(upload, "proxy_set_header")}
    assert uploads == main


def test_nginx_passes_the_tls_proxys_scheme_on(nginx):
    """Overwriting X-Forwarded-Proto with nginx's $scheme (http) broke HSTS and AFFECTLOOP_SSL_REDIRECT."""
    [forwarded] = [children for name, args, children in nginx["http"]
                   if name == "map" and args == ["$http_x_forwarded_proto", "$forwarded_proto"]]
    values = {d: args[0] for d, args, _ in forwarded}
    assert values == {"default": "$http_x_forwarded_proto", "": "$scheme"}
    proxied = [body for body in nginx["locations"].values() if _directives(body, "proxy_pass")]
    assert len(proxied) == 3
    for body in proxied:
        protos = [args[1] for args in _directives(body, "proxy_set_header") if args[0] == "X-Forwarded-Proto"]
        assert protos == ["$forwarded_proto"]


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


# --- compose: database roles, Redis, networks, exposure, container hardening --------------------------------
INIT_ROLES = ROOT / "platform" / "postgres" / "init-roles.sh"
APP_SERVICES = {"migrate", "web", "worker-media", "worker-gpu", "worker-train", "beat"}
APP_DB_URL = "postgres://affectloop_app@postgres:5432/affectloop"
OWNER_DB_URL = "postgres://affectloop_owner@postgres:5432/affectloop"


def networks_of(service: dict) -> set[str]:
    nets = service.get("networks", ["default"])
    return set(nets)


def mount_targets(service: dict) -> set[str]:
    targets = set(service.get("tmpfs") or [])
    for volume in service.get("volumes") or []:
        targets.add(volume["target"] if isinstance(volume, dict) else volume.split(":")[1])
    return targets


def test_app_services_are_the_ones_that_reach_the_database(compose):
    reaching = {name for name, s in compose["services"].items() if "DATABASE_URL" in environment(s)}
    assert reaching == APP_SERVICES


def test_postgres_superuser_only_initialises_and_the_init_script_makes_the_roles(compose):
    postgres = compose["services"]["postgres"]
    env = environment(postgres)
    assert env["POSTGRES_USER"] == "postgres"
    assert env["POSTGRES_PASSWORD_FILE"] == "/run/secrets/postgres_password"
    assert "POSTGRES_DB" not in env, "init-roles.sh creates the database, owned by affectloop_owner"
    init = [v for v in postgres["volumes"] if ":/docker-entrypoint-initdb.d/" in v]
    assert init == ["./platform/postgres/init-roles.sh:/docker-entrypoint-initdb.d/10-init-roles.sh:ro"]
    assert INIT_ROLES.is_file() and os.access(INIT_ROLES, os.X_OK)
    assert set(names(postgres["secrets"])) == {"postgres_password", "postgres_owner_password",
                                               "postgres_app_password"}
    assert postgres["healthcheck"]["test"][-4:] == ["-U", "postgres", "-d", "affectloop"]
    holders = {n for n, s in compose["services"].items() if "postgres_password" in names(s.get("secrets"))}
    assert holders == {"postgres"}, "only the database container may see the superuser's password"


def test_only_migrate_connects_as_the_owner(compose):
    services = compose["services"]
    migrate = services["migrate"]
    env = environment(migrate)
    assert effective(env["DATABASE_URL"]) == OWNER_DB_URL
    assert env["DATABASE_PASSWORD_FILE"] == "/run/secrets/postgres_owner_password"
    assert env["AFFECTLOOP_DB_APP_ROLE"] == "affectloop_app"
    steps = ["python manage.py migrate --noinput", "python manage.py grant_app_privileges",
             "python manage.py collectstatic --noinput"]
    assert migrate["command"] == ["sh", "-c", " && ".join(steps)]
    assert "postgres_owner_password" in names(migrate["secrets"])
    assert "postgres_app_password" not in names(migrate["secrets"])
    for name in APP_SERVICES - {"migrate"}:
        env = environment(services[name])
        assert effective(env["DATABASE_URL"]) == APP_DB_URL, name
        assert env["DATABASE_PASSWORD_FILE"] == "/run/secrets/postgres_app_password", name
        assert "postgres_app_password" in names(services[name]["secrets"]), name
        assert "postgres_owner_password" not in names(services[name]["secrets"]), name
        assert "AFFECTLOOP_DB_APP_ROLE" not in env, name


def test_redis_requires_a_password_kept_off_command_lines(compose):
    services = compose["services"]
    redis = services["redis"]
    assert names(redis["secrets"]) == ["redis_password"]
    shell, flags, script = redis["command"]
    assert (shell, flags) == ("sh", "-ec")
    assert "requirepass" in script and "appendonly yes" in script
    # `$$` is Compose's escape for `$`: unescaped, Compose would try to substitute it itself.
    assert '"$$(cat /run/secrets/redis_password)" > /tmp/redis.conf' in script
    assert script.rstrip().endswith("exec redis-server /tmp/redis.conf")
    assert "/tmp" in redis["tmpfs"]
    health = redis["healthcheck"]["test"]
    assert health[0] == "CMD-SHELL"
    assert health[1].startswith('REDISCLI_AUTH="$$(cat /run/secrets/redis_password)" redis-cli ping')
    for name in APP_SERVICES:
        env = environment(services[name])
        assert env["REDIS_PASSWORD_FILE"] == "/run/secrets/redis_password", name
        assert effective(env["CELERY_BROKER_URL"]) == "redis://redis:6379/0", name
        assert effective(env["AFFECTLOOP_CACHE_URL"]) == "redis://redis:6379/1", name
        assert "redis_password" in names(services[name]["secrets"]), name


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_redis_command_runs_a_server_that_refuses_clients_without_the_password(compose, tmp_path):
    """The compose command and healthcheck, run by the local redis-server with the container's paths moved."""
    import secrets as secrets_module
    import time

    redis_server, redis_cli = shutil.which("redis-server"), shutil.which("redis-cli")
    if not redis_server or not redis_cli:
        pytest.skip("redis-server / redis-cli not installed: the Redis command is only checked statically")
    redis = pytest.importorskip("redis")
    password = secrets_module.token_urlsafe(32)
    secret = tmp_path / "redis_password"
    secret.write_text(password + "\n")
    port = _free_port()

    def local(text: str) -> str:
        """What Compose hands the container ($$ → $), with the secret file and /tmp moved into tmp_path."""
        return (text.replace("$$", "$").replace("/run/secrets/redis_password", str(secret))
                .replace("/tmp/redis.conf", str(tmp_path / "redis.conf")))

    script = local(compose["services"]["redis"]["command"][2])
    started = f"exec redis-server {tmp_path / 'redis.conf'}"
    assert started in script
    script = script.replace(started, f"{started} --port {port} --bind 127.0.0.1 --dir {tmp_path} --save ''")
    proc = subprocess.Popen(["sh", "-ec", script.replace("exec redis-server", f"exec {redis_server}")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                redis.Redis(port=port, password=password, socket_timeout=2).ping()
                break
            except redis.exceptions.ConnectionError:
                assert proc.poll() is None and time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.05)
        assert (tmp_path / "redis.conf").stat().st_mode & 0o077 == 0
        assert password not in Path(f"/proc/{proc.pid}/cmdline").read_bytes().decode(errors="replace")
        with pytest.raises(redis.exceptions.RedisError, match="(?i)auth"):
            redis.Redis(port=port, socket_timeout=2).ping()
        health = local(compose["services"]["redis"]["healthcheck"]["test"][1])
        health = health.replace("redis-cli", f"{redis_cli} -p {port}")
        assert subprocess.run(["sh", "-c", health], timeout=30, check=False).returncode == 0
        secret.write_text("wrong\n")
        refused = subprocess.run(["sh", "-c", health], timeout=30, check=False, capture_output=True)
        assert refused.returncode != 0
    finally:
        proc.terminate()
        proc.wait(10)


def test_networks_keep_postgres_and_redis_internal(compose):
    services, nets = compose["services"], compose["networks"]
    assert nets["backend"] == {"internal": True}
    on_backend = {n for n, s in services.items() if "backend" in networks_of(s)}
    assert on_backend == {"postgres", "redis", "flower", *APP_SERVICES}
    assert networks_of(services["postgres"]) == networks_of(services["redis"]) == {"backend"}
    for name in APP_SERVICES:
        assert {"backend", "default"} <= networks_of(services[name]), name
    assert networks_of(services["label-studio"]) == {"default"}
    assert not services["postgres"].get("ports") and not services["redis"].get("ports")


def test_gunicorn_trusts_forwarded_headers_only_from_the_network_it_shares_with_nginx(compose, monkeypatch):
    import ipaddress
    import runpy

    services, nets = compose["services"], compose["networks"]
    assert {n for n, s in services.items() if "edge" in networks_of(s)} == {"nginx", "web"}
    # nginx on edge alone: on a second shared network web would see it from an address outside the subnet.
    assert networks_of(services["nginx"]) == {"edge"}
    [subnet] = [entry["subnet"] for entry in nets["edge"]["ipam"]["config"]]
    assert subnet == "${AFFECTLOOP_EDGE_SUBNET:-172.30.240.0/24}"
    ipaddress.ip_network(effective(subnet))
    assert environment(services["web"])["GUNICORN_FORWARDED_ALLOW_IPS"] == subnet
    # Outside compose, loopback only (gunicorn's own default), never "*".
    monkeypatch.delenv("GUNICORN_FORWARDED_ALLOW_IPS", raising=False)
    conf = runpy.run_path(str(ROOT / "platform" / "gunicorn.conf.py"))
    assert conf["forwarded_allow_ips"] == "127.0.0.1,::1"


PUBLISHED = re.compile(r"^\$\{(?P<bind>\w+):-(?P<addr>[^}]+)\}:\$\{\w+:-\d+\}:\d+$")


def test_published_ports_listen_on_loopback_by_default(compose):
    published = {name: s["ports"] for name, s in compose["services"].items() if s.get("ports")}
    assert set(published) == {"nginx", "label-studio", "flower"}
    binds = {}
    for name, ports in published.items():
        for port in ports:
            m = PUBLISHED.match(str(port))
            assert m, f"{name}: {port} must name its host address, ${{VAR:-127.0.0.1}}:${{PORT:-n}}:n"
            assert m["addr"] == "127.0.0.1", name
            binds[name] = m["bind"]
    assert binds == {"nginx": "AFFECTLOOP_HTTP_BIND", "label-studio": "LABEL_STUDIO_BIND",
                     "flower": "FLOWER_BIND"}


# Capabilities a service may add back, and why (docker-compose.yml says so too).
# postgres: its entrypoint fixes the data directory's ownership as root, then switches user.
CAPS_ADDED = {"postgres": {"CHOWN", "DAC_OVERRIDE", "FOWNER", "SETGID", "SETUID"}}
WRITABLE_ROOT = {"label-studio"}  # writes inside its image in places not pinned down


def test_every_container_drops_capabilities_and_runs_on_a_read_only_root(compose):
    for name, service in compose["services"].items():
        assert service.get("cap_drop") == ["ALL"], name
        assert "no-new-privileges:true" in (service.get("security_opt") or []), name
        assert set(service.get("cap_add") or []) == CAPS_ADDED.get(name, set()), name
        if name in WRITABLE_ROOT:
            assert not service.get("read_only"), name
            continue
        assert service.get("read_only") is True, name
        assert "/tmp" in mount_targets(service), f"{name}: /tmp must be writable (tmpfs or volume)"
    services = compose["services"]
    assert "/var/cache/nginx" in services["nginx"]["tmpfs"]
    assert "/var/run/postgresql" in services["postgres"]["tmpfs"]
    # Uploads are spooled to /tmp: on disk in web, not in a memory-backed tmpfs.
    assert {"type": "volume", "target": "/tmp"} in services["web"]["volumes"]
    assert not services["web"].get("tmpfs")


def test_nginx_writes_only_under_tmp(nginx):
    tree = _nginx_tree(NGINX_CONF.read_text())
    assert _directives(tree, "pid") == [["/tmp/nginx.pid"]]
    for directive in ("client_body_temp_path", "proxy_temp_path", "fastcgi_temp_path", "uwsgi_temp_path",
                      "scgi_temp_path"):
        [[where]] = _directives(nginx["http"], directive)
        assert where.startswith("/tmp/"), directive


def test_every_secret_file_has_a_generation_command_in_the_operator_notes(compose):
    readme = (ROOT / "platform" / "README.md").read_text()
    for name, secret in compose["secrets"].items():
        assert secret["file"] == f"./platform/secrets/{name}", name
        assert f"> platform/secrets/{name}\n" in readme, f"platform/README.md does not say how to make {name}"


# --- platform/postgres/init-roles.sh against a real PostgreSQL ----------------------------------------------
def _admin_params() -> dict:
    url = os.environ.get("DATABASE_URL", "")
    if url.startswith(("postgres://", "postgresql://")):
        import dj_database_url

        db = dj_database_url.parse(url)
        return {"host": db["HOST"] or "127.0.0.1", "port": str(db["PORT"] or 5432), "user": db["USER"],
                "password": db["PASSWORD"] or ""}
    return {"host": "127.0.0.1", "port": "5432", "user": "postgres", "password": ""}


def _password_matches(verifier: str, role: str, password: str) -> bool:
    import base64
    import hashlib
    import hmac

    if verifier.startswith("md5"):
        return verifier == "md5" + hashlib.md5((password + role).encode()).hexdigest()
    m = re.fullmatch(r"SCRAM-SHA-256\$(\d+):([^$]+)\$([^:]+):(.+)", verifier)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), base64.b64decode(m[2]), int(m[1]))
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    return base64.b64encode(hashlib.sha256(client_key).digest()).decode() == m[3]


@pytest.mark.services
def test_init_roles_script_creates_the_roles_and_upgrades_a_superuser_owned_database(tmp_path):
    import secrets as secrets_module

    psycopg = pytest.importorskip("psycopg")
    from psycopg import sql

    if not shutil.which("psql"):
        pytest.skip("psql is not installed: platform/postgres/init-roles.sh not run")
    params = _admin_params()
    connect_args = {k: v for k, v in params.items() if v}
    try:
        admin = psycopg.connect(dbname="postgres", autocommit=True, connect_timeout=5, **connect_args)
    except psycopg.OperationalError as exc:
        pytest.skip(f"no PostgreSQL at {params['host']}:{params['port']} as {params['user']}: {exc}")
    suffix = secrets_module.token_hex(4)
    db, old_db = f"t_affectloop_{suffix}", f"t_affectloop_old_{suffix}"
    owner, app, legacy = f"t_owner_{suffix}", f"t_app_{suffix}", f"t_legacy_{suffix}"
    passwords = {owner: secrets_module.token_urlsafe(24), app: secrets_module.token_urlsafe(24),
                 legacy: secrets_module.token_urlsafe(24)}
    files = {role: tmp_path / role for role in (owner, app)}

    def run_script(database: str, as_user: str, password: str) -> subprocess.CompletedProcess:
        for role, path in files.items():
            path.write_text(passwords[role] + "\n")
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("PG")},
               "PGHOST": params["host"], "PGPORT": params["port"], "PGUSER": as_user, "PGPASSWORD": password,
               "AFFECTLOOP_DB_NAME": database, "AFFECTLOOP_DB_OWNER_ROLE": owner,
               "AFFECTLOOP_DB_APP_ROLE": app,
               "AFFECTLOOP_DB_OWNER_PASSWORD_FILE": str(files[owner]),
               "AFFECTLOOP_DB_APP_PASSWORD_FILE": str(files[app])}
        return subprocess.run(["bash", str(INIT_ROLES)], env=env, capture_output=True, text=True, timeout=60,
                              check=False)

    def q(conn, query, *args):
        return conn.execute(query, args).fetchall()

    def check_database(database: str):
        [(db_owner,)] = q(admin, "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s",
                          database)
        assert db_owner == owner
        assert q(admin, "SELECT has_database_privilege(%s, %s, 'CONNECT')", app, database) == [(True,)]
        public = q(admin, "SELECT a.privilege_type FROM pg_database d, aclexplode(d.datacl) a "
                          "WHERE d.datname = %s AND a.grantee = 0", database)
        assert public == [], "PUBLIC may not connect"
        with psycopg.connect(dbname=database, autocommit=True, **connect_args) as conn:
            assert q(conn, "SELECT pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname = 'public'") == [
                (owner,)]
            assert q(conn, "SELECT has_schema_privilege(%s, 'public', 'CREATE'), "
                           "has_schema_privilege(%s, 'public', 'USAGE')", app, app) == [(False, True)]
            others = q(conn, "SELECT c.relname, pg_get_userbyid(c.relowner) FROM pg_class c "
                             "JOIN pg_namespace n ON n.oid = c.relnamespace "
                             "WHERE n.nspname = 'public' AND c.relowner <> %s::regrole", owner)
            functions = q(conn, "SELECT proname FROM pg_proc p JOIN pg_namespace n ON n.oid = pronamespace "
                                "WHERE n.nspname = 'public' AND p.proowner <> %s::regrole", owner)
            assert others == [] and functions == []
            rows = q(conn, "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                           "WHERE n.nspname = 'public' ORDER BY 1")
            return [name for (name,) in rows]

    def check_roles():
        rows = q(admin, "SELECT rolname, rolsuper, rolcreatedb, rolcreaterole, rolcanlogin, rolbypassrls, "
                        "rolpassword FROM pg_authid WHERE rolname IN (%s, %s)", owner, app)
        assert len(rows) == 2
        for role, superuser, createdb, createrole, login, bypassrls, verifier in rows:
            flags = (superuser, createdb, createrole, login, bypassrls)
            assert flags == (False, False, False, True, False), role
            assert _password_matches(verifier, role, passwords[role]), f"{role}: password is not the file's"

    try:
        if not q(admin, "SELECT rolsuper FROM pg_roles WHERE rolname = current_user")[0][0]:
            pytest.skip(f"{params['user']} is not a superuser: cannot create throwaway roles")
        # A fresh cluster, as the image's init runs it.
        result = run_script(db, params["user"], params["password"])
        assert result.returncode == 0, result.stdout + result.stderr
        check_roles()
        assert check_database(db) == []
        # Again, after a password rotation: idempotent, and the new password is set.
        passwords[app] = secrets_module.token_urlsafe(24)
        result = run_script(db, params["user"], params["password"])
        assert result.returncode == 0, result.stdout + result.stderr
        check_roles()

        # The old layout: one superuser owned the database and everything in it.
        admin.execute(sql.SQL("CREATE ROLE {} SUPERUSER LOGIN PASSWORD {}").format(
            sql.Identifier(legacy), sql.Literal(passwords[legacy])))
        admin.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(old_db),
                                                                    sql.Identifier(legacy)))
        with psycopg.connect(dbname=old_db, autocommit=True, **connect_args) as conn:
            conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(legacy)))
            conn.execute("CREATE TABLE events (id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY)")
            conn.execute("CREATE TABLE legacy_serial (id serial PRIMARY KEY)")
            conn.execute("CREATE SEQUENCE loose_counter")
            conn.execute("CREATE VIEW recent AS SELECT * FROM events")
            conn.execute("CREATE FUNCTION no_truncate() RETURNS trigger LANGUAGE plpgsql AS "
                         "$$ BEGIN RAISE EXCEPTION 'no'; END; $$")
            conn.execute("CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON events "
                         "FOR EACH STATEMENT EXECUTE FUNCTION no_truncate()")
        result = run_script(old_db, legacy, passwords[legacy])
        assert result.returncode == 0, result.stdout + result.stderr
        assert check_database(old_db) == ["events", "events_id_seq", "events_pkey", "legacy_serial",
                                          "legacy_serial_id_seq", "legacy_serial_pkey", "loose_counter",
                                          "recent"]
        check_roles()
    finally:
        for database in (db, old_db):
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database)))
        for role in (owner, app, legacy):
            admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
        admin.close()


# --- health checks, metrics, Flower ----------------------------------------------------------------------------
# Run once and exit: a health check would have nothing to watch (web waits for it to complete instead).
ONE_SHOT = {"migrate"}
HEARTBEAT_SERVICES = {"worker-media", "worker-gpu", "worker-train", "beat"}


def test_every_long_running_service_has_a_health_check(compose):
    services = compose["services"]
    for name, service in services.items():
        if name in ONE_SHOT:
            assert service.get("restart") == "no", f"{name} is one-shot only if it is never restarted"
            assert any((s.get("depends_on") or {}).get(name) == {"condition": "service_completed_successfully"}
                       for s in services.values()), name
            continue
        check = service.get("healthcheck")
        assert check, f"{name} has no healthcheck"
        assert not check.get("disable"), name
        assert check["test"][0] in ("CMD", "CMD-SHELL"), name
        for key in ("interval", "timeout", "retries"):
            assert key in check, f"{name}: healthcheck without {key}"


def test_workers_and_beat_are_checked_by_their_heartbeat_file(compose):
    services = compose["services"]
    checks = {name: services[name]["healthcheck"] for name in HEARTBEAT_SERVICES}
    assert len({str(c) for c in checks.values()}) == 1, "one shared check (x-heartbeat-check)"
    test = checks["beat"]["test"]
    assert test[:3] == ["CMD", "python", "-c"] and "AFFECTLOOP_HEARTBEAT_FILE" in test[3]
    for name in HEARTBEAT_SERVICES:
        assert environment(services[name])["AFFECTLOOP_HEARTBEAT_FILE"].startswith("/tmp/"), name
        assert "/tmp" in mount_targets(services[name]), name


def test_the_heartbeat_check_passes_on_a_fresh_file_and_fails_on_a_stale_or_missing_one(compose, tmp_path):
    test = compose["services"]["worker-gpu"]["healthcheck"]["test"]
    beat = tmp_path / "heartbeat"

    def check() -> int:
        env = {**os.environ, "AFFECTLOOP_HEARTBEAT_FILE": str(beat)}
        return subprocess.run([sys.executable, *test[2:]], env=env, timeout=30, check=False).returncode

    assert check() != 0
    beat.touch()
    assert check() == 0
    os.utime(beat, (beat.stat().st_atime - 120, beat.stat().st_mtime - 120))
    assert check() != 0


def test_nginx_and_web_health_checks_ask_locations_that_exist(compose, nginx):
    services = compose["services"]
    nginx_test = services["nginx"]["healthcheck"]["test"]
    assert nginx_test[-1] == "http://127.0.0.1/nginx-health"
    health = nginx["locations"]["= /nginx-health"]
    assert _directives(health, "allow") == [["127.0.0.1"]] and _directives(health, "deny") == [["all"]]
    assert _directives(health, "return")[0][0] == "200" and not _directives(health, "proxy_pass")
    assert "http://127.0.0.1:8000/healthz" in " ".join(services["web"]["healthcheck"]["test"])


def test_nginx_never_passes_metrics_on(nginx):
    """Prometheus scrapes web:8000 on the compose network; a prefix location that wins over the regex ones
    answers everything under /metrics itself."""
    locations = nginx["locations"]
    metrics = locations["^~ /metrics"]
    assert _directives(metrics, "return") == [["404"]]
    assert not _directives(metrics, "proxy_pass")
    assert not any(name.startswith("= /metrics") for name in locations)


def test_web_runs_django_prometheus_in_multiprocess_mode(compose):
    env = environment(compose["services"]["web"])
    assert env["PROMETHEUS_MULTIPROC_DIR"].startswith("/tmp/"), "the root is read-only; /tmp is writable"
    assert INTERPOLATED.match(env["AFFECTLOOP_METRICS_TOKEN"]), "the token comes from outside the file"
    assert compose["services"]["web"]["command"][:3] == ["gunicorn", "-c", "platform/gunicorn.conf.py"]
    conf = (ROOT / "platform" / "gunicorn.conf.py").read_text()
    assert "def child_exit(" in conf and "mark_process_dead" in conf and "def on_starting(" in conf


def test_gpu_workers_serve_their_metrics_on_the_compose_networks_only(compose):
    for name in ("worker-gpu", "worker-train"):
        service = compose["services"][name]
        env = environment(service)
        assert effective(env["AFFECTLOOP_WORKER_METRICS_PORT"]).isdigit(), name
        assert not service.get("ports"), f"{name} publishes nothing"


def test_flower_runs_under_the_ops_profile_with_basic_auth_from_a_secret(compose):
    flower = compose["services"]["flower"]
    assert flower["profiles"] == ["ops"]
    assert set(names(flower["secrets"])) == {"redis_password", "flower_basic_auth"}
    script = flower["command"][0]
    assert 'FLOWER_BASIC_AUTH="$$(cat /run/secrets/flower_basic_auth)"' in script
    assert '"redis://:$$(cat /run/secrets/redis_password)@redis:6379/0"' in script
    assert script.rstrip().splitlines()[-1].startswith("exec celery flower ")
    assert "DATABASE_URL" not in environment(flower), "Flower needs the broker only"
    assert "edge" not in networks_of(flower)
