from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.templatetags.static import static
from django.urls import include, path
from django.views.generic import RedirectView

from annotations import accounts, metrics, views as annotation_views

class FaviconRedirect(RedirectView):
    def get_redirect_url(self, *args, **kwargs):
        return static("annotations/favicon.svg")


admin.site.site_header = "Affectloop administration"
admin.site.site_title = "Affectloop"

urlpatterns = [
    path("healthz", annotation_views.healthz, name="healthz"),
    # Prometheus: a bearer token or loopback (annotations/metrics.py); nginx refuses it from outside.
    path("metrics", metrics.metrics_view, name="metrics"),
    # Browsers ask for /favicon.ico whatever the page says. Resolved per request: the hashed name exists only
    # after collectstatic, and importing the URLconf must not need it.
    path("favicon.ico", FaviconRedirect.as_view(permanent=True)),
    path("admin/", admin.site.urls),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("accounts/password/", accounts.PasswordChangeView.as_view(), name="password-change"),
    # nginx's auth_request asks this before it accepts an upload body (platform/nginx.conf).
    path("_auth/upload", annotation_views.upload_gate, name="upload-gate"),
    path("api/", include("annotations.api.urls")),  # /api/v1/, the schema and its docs
    path("", include("annotations.urls")),
]
