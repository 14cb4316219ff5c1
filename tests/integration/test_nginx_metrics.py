"""platform/nginx.conf run for real: /metrics never goes through nginx, even with the right token, and the
container's health location answers from inside only (test_nginx_config.py's nginx in front of Django)."""

import pytest
import requests

from tests.integration.test_nginx_config import Nginx, from_nginx, through_nginx  # noqa: F401  (fixture)

TOKEN = "metrics-" + "t" * 32


@pytest.mark.django_db(transaction=True)
def test_metrics_are_refused_through_nginx_but_answer_on_the_app(through_nginx):  # noqa: F811
    nginx = through_nginx(METRICS_TOKEN=TOKEN)
    upstream = nginx.conf.read_text().split("set $web_upstream ", 1)[1].split(";", 1)[0]
    auth = {"Authorization": f"Bearer {TOKEN}"}
    direct = requests.get(upstream + "/metrics", headers=auth, timeout=10)
    assert direct.status_code == 200 and "affectloop_broker_up" in direct.text
    for path in ("/metrics", "/metrics/", "/%6Detrics", "/metrics?x=1", "//metrics"):
        response = requests.get(nginx.url + path, headers=auth, timeout=10)
        assert response.status_code == 404 and from_nginx(response), path


@pytest.mark.django_db(transaction=True)
def test_the_health_location_answers_on_loopback(through_nginx):  # noqa: F811
    nginx: Nginx = through_nginx()
    response = requests.get(nginx.url + "/nginx-health", timeout=10)
    assert response.status_code == 200 and response.text == "ok\n"
