"""The API's routes, under /api/: version 1 at v1/, the OpenAPI schema at schema/ and Swagger UI at docs/.

Swagger UI comes from drf-spectacular-sidecar's static files and its start-up script from a second request
to the same view (SpectacularSwaggerSplitView), so the page runs under the site's CSP (script-src 'self', no
inline script, no CDN) unchanged. Both need a login (session or token), like the rest of the API.
"""

from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from .. import token_views
from . import auth, views

app_name = "api"

v1 = [
    path("auth/login/", auth.LoginView.as_view(), name="login"),
    path("auth/logout/", auth.LogoutView.as_view(), name="logout"),
    path("auth/logout-all/", auth.LogoutAllView.as_view(), name="logout-all"),
    path("projects/", views.ProjectList.as_view(), name="projects"),
    path("projects/<slug:slug>/", views.ProjectDetail.as_view(), name="project"),
    path("projects/<slug:slug>/clips/", views.clip_list_view(), name="clips"),
    path("projects/<slug:slug>/predictions/", views.ProjectPredictions.as_view(), name="project-predictions"),
    path("projects/<slug:slug>/vocabulary/", views.Vocabulary.as_view(), name="vocabulary"),
    path("projects/<slug:slug>/model-versions/", views.ModelVersions.as_view(), name="model-versions"),
    path("projects/<slug:slug>/training-runs/", views.TrainingRuns.as_view(), name="training-runs"),
    path("projects/<slug:slug>/snapshots/", views.Snapshots.as_view(), name="snapshots"),
    path("projects/<slug:slug>/exports/", views.Exports.as_view(), name="exports"),
    path("clips/<int:clip_id>/", views.ClipDetail.as_view(), name="clip"),
    path("clips/<int:clip_id>/predictions/", views.ClipPredictions.as_view(), name="clip-predictions"),
    path("clips/<int:clip_id>/annotation/", views.MyAnnotation.as_view(), name="annotation"),
    path("clips/<int:clip_id>/annotation/submit/", views.SubmitAnnotation.as_view(), name="annotation-submit"),
    path("clips/<int:clip_id>/submissions/", views.ReviewQueue.as_view(), name="submissions"),
    path("clips/<int:clip_id>/reviews/", views.ClipReviews.as_view(), name="reviews"),
    path("model-versions/<int:pk>/", views.ModelVersionDetail.as_view(), name="model-version"),
    path("training-runs/<int:pk>/", views.TrainingRunDetail.as_view(), name="training-run"),
    path("training-runs/<int:pk>/cancel/", views.TrainingRunCancel.as_view(), name="training-run-cancel"),
    path("snapshots/<int:pk>/", views.SnapshotDetail.as_view(), name="snapshot"),
    path("exports/<int:pk>/", views.ExportDetail.as_view(), name="export"),
    path("exports/<int:pk>/download/", views.ExportDownload.as_view(), name="export-download"),
]

urlpatterns = [
    path("v1/", include(v1)),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path("docs/", SpectacularSwaggerSplitView.as_view(url_name="api:schema"), name="docs"),
    path("tokens/", token_views.api_tokens, name="tokens"),  # a web page: one's own tokens
]
