"""Label Studio routes, included by annotations/urls.py: the managers' buttons and the per-project ML backend."""

from django.urls import path

from . import labelstudio_views as ls

urlpatterns = [
    path("p/<slug:slug>/labelstudio/push", ls.push, name="labelstudio-push"),
    path("p/<slug:slug>/labelstudio/pull", ls.pull, name="labelstudio-pull"),
    # The ML backend's URL in Label Studio is .../ls/<slug>; it appends these paths itself.
    path("ls/<slug:slug>/", ls.health, name="ls-root"),
    path("ls/<slug:slug>/health", ls.health, name="ls-health"),
    path("ls/<slug:slug>/setup", ls.setup, name="ls-setup"),
    path("ls/<slug:slug>/predict", ls.predict, name="ls-predict"),
    path("ls/<slug:slug>/webhook", ls.webhook, name="ls-webhook"),
    path("ls/<slug:slug>/metrics", ls.metrics, name="ls-metrics"),
]
