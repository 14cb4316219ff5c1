"""Links to the operator tools (Flower, Prometheus, Grafana) that a deployment names in its settings."""

from django import template
from django.conf import settings

register = template.Library()

TOOLS = (
    ("Flower (tasks and workers)", "FLOWER_URL"),
    ("Prometheus", "PROMETHEUS_URL"),
    ("Grafana", "GRAFANA_URL"),
)


@register.simple_tag
def operations_links() -> list[dict]:
    """[{label, url}] for each tool whose AFFECTLOOP_*_URL is set; empty on the embedded default."""
    return [{"label": label, "url": url} for label, name in TOOLS if (url := getattr(settings, name, ""))]
