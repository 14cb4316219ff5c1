"""Account security: a password someone else chose must be replaced at the next login."""

from django import forms
from django.contrib import messages
from django.contrib.auth import views as auth_views
from django.contrib.auth.forms import PasswordChangeForm
from django.contrib.auth.signals import user_logged_in
from django.db import transaction
from django.dispatch import receiver
from django.shortcuts import redirect
from django.http import HttpResponse
from django.urls import Resolver404, resolve, reverse

from .models import AccountFlags
from .services import audit

SESSION_KEY = "affectloop_must_change_password"


def require_password_change(user, *, actor=None) -> None:
    with transaction.atomic():
        AccountFlags.objects.update_or_create(user=user, defaults={"must_change_password": True})
        audit.record("account.password_change_required", user, actor=actor)


@receiver(user_logged_in, dispatch_uid="affectloop-password-change-required")
def _flag_session(sender, request, user, **kwargs):
    if request is not None and AccountFlags.objects.filter(user=user, must_change_password=True).exists():
        request.session[SESSION_KEY] = True


class PasswordChangeRequiredMiddleware:
    """While the session's user must change their password, every page but the change form and logout
    redirects there (static files are served before Django)."""

    def __init__(self, get_response):
        self.get_response = get_response

    ALLOWED = {"password-change", "logout", "healthz"}

    def __call__(self, request):
        if request.user.is_authenticated and request.session.get(SESSION_KEY):
            try:
                name = resolve(request.path_info).url_name  # path_info: no SCRIPT_NAME prefix, unlike reverse()
            except Resolver404:
                name = None
            if name == "upload-gate":
                return HttpResponse(status=403)  # nginx's auth subrequest: no upload until the password is new
            if name not in self.ALLOWED:
                return redirect("password-change")
        return self.get_response(request)


class NewPasswordForm(PasswordChangeForm):
    def clean(self):
        cleaned = super().clean()
        new = cleaned.get("new_password1")
        if new and self.user.check_password(new):
            self.add_error("new_password1", forms.ValidationError("Choose a password different from the current one."))
        return cleaned


class PasswordChangeView(auth_views.PasswordChangeView):
    template_name = "registration/password_change.html"
    form_class = NewPasswordForm

    def get_success_url(self):
        return reverse("annotations:project-list")

    def form_valid(self, form):
        with transaction.atomic():
            response = super().form_valid(form)
            AccountFlags.objects.filter(user=self.request.user).update(must_change_password=False)
            audit.record("account.password_changed", self.request.user, actor=self.request.user)
        self.request.session.pop(SESSION_KEY, None)
        messages.success(self.request, "Password changed.")
        return response

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        context["forced"] = bool(self.request.session.get(SESSION_KEY))
        return context
