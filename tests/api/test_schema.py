"""The OpenAPI schema: generated without warnings or errors, valid OpenAPI 3, and served with Swagger UI from
our own static files (no CDN, no inline script under the site's CSP)."""

import re

import pytest
import yaml
from django.core.management import call_command
from openapi_spec_validator import validate

pytestmark = pytest.mark.django_db


def test_the_schema_generates_with_no_warnings_and_validates(tmp_path):
    out = tmp_path / "schema.yaml"
    # --fail-on-warn: any warning or error of drf-spectacular fails the command
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(out))
    schema = yaml.safe_load(out.read_text())
    validate(schema)
    paths = schema["paths"]
    for resource in ("projects/", "projects/{slug}/clips/", "clips/{clip_id}/predictions/",
                     "clips/{clip_id}/annotation/", "clips/{clip_id}/reviews/", "projects/{slug}/vocabulary/",
                     "projects/{slug}/model-versions/", "projects/{slug}/training-runs/",
                     "projects/{slug}/snapshots/", "projects/{slug}/exports/", "auth/login/"):
        assert f"/api/v1/{resource}" in paths, resource
    assert "knoxApiToken" in schema["components"]["securitySchemes"]


def test_the_schema_is_served_to_members(api, project, client):
    response = api.alice.get("/api/schema/?format=json")
    assert response.status_code == 200
    validate(response.json())
    assert client.get("/api/schema/").status_code in (401, 403)


def test_the_docs_page_loads_only_our_own_scripts(client, annotator):
    client.force_login(annotator)
    response = client.get("/api/docs/")
    assert response.status_code == 200
    html = response.content.decode()
    scripts = re.findall(r"<script[^>]*>", html)
    assert scripts and all(re.search(r'\bsrc="/', tag) for tag in scripts), scripts  # no inline, no host
    assert not re.search(r'(src|href)="(https?:)?//', html)
    policy = response["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "unsafe" not in policy.split("script-src")[1].split(";")[0]
    from django.conf import settings
    from django.contrib.staticfiles import finders

    for src in re.findall(r'<script src="([^"]+)"', html):
        src = src.replace("&amp;", "&")
        if src.startswith(settings.STATIC_URL):  # Swagger UI itself, from the sidecar package's static files
            assert finders.find(src.removeprefix(settings.STATIC_URL)), src
        else:  # its start-up script, from the same view: JavaScript, not an inline block
            start = client.get(src)
            assert start.status_code == 200 and start["Content-Type"].startswith("application/javascript")
            assert "/api/schema/" in start.content.decode()
