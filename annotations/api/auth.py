"""API authentication: knox tokens (stored as digests, expiring, revocable) next to the session.

- POST auth/login/ with a username and password answers a new token (shown once) and its expiry. The
  password goes through django.contrib.auth.authenticate with the request, so django-axes counts failures and
  locks out exactly as on the login page; the `login` throttle scope limits attempts per client too.
- POST auth/logout/ revokes the token that made the request; auth/logout-all/ every token of the user.
- TokenUserMiddleware sets request.user from a token for /api/ requests before any view runs: the upload
  route's body gate (annotations.request_limits, and nginx's /_auth/upload subrequest) decides on
  request.user before the body is read.
"""

from __future__ import annotations

from django.contrib.auth import authenticate
from django.contrib.auth.signals import user_logged_out
from django.utils.functional import SimpleLazyObject
from drf_spectacular.utils import extend_schema, inline_serializer
from knox.auth import TokenAuthentication
from knox.views import LoginView as KnoxLoginView
from rest_framework import exceptions, serializers, status
from rest_framework.permissions import AllowAny, IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from ..models import AccountFlags


def _for_api(request) -> bool:
    """An API request, or nginx's body-gate subrequest (views.upload_gate) for one."""
    if request.path_info.startswith("/api/"):
        return True
    return request.path_info == "/_auth/upload" and "/api/" in request.headers.get("X-Original-URI", "")


class TokenUserMiddleware:
    """For API requests without a session user, the user of a valid `Authorization: Token ...` header."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if request.headers.get("Authorization", "").startswith("Token ") and _for_api(request):
            session_user = request.user

            def user():
                if session_user.is_authenticated:
                    return session_user
                try:
                    found = TokenAuthentication().authenticate(request)
                except exceptions.AuthenticationFailed:
                    found = None
                return found[0] if found else session_user

            request.user = SimpleLazyObject(user)
        return self.get_response(request)


class LoginSerializer(serializers.Serializer):
    username = serializers.CharField(max_length=150)
    password = serializers.CharField(max_length=4096, style={"input_type": "password"}, trim_whitespace=False)


TokenSerializer = inline_serializer("Token", {"token": serializers.CharField(),
                                              "expiry": serializers.DateTimeField()})


class LoginView(KnoxLoginView):
    authentication_classes = []
    permission_classes = [AllowAny]
    throttle_scope = "login"

    @extend_schema(request=LoginSerializer, responses={200: TokenSerializer}, auth=[], tags=["auth"],
                   summary="Exchange a username and password for a token")
    def post(self, request, format=None):
        data = LoginSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        # The Django request, as axes needs it: it counts failures by username and client address.
        user = authenticate(request._request, username=data.validated_data["username"],
                            password=data.validated_data["password"])
        if getattr(request._request, "axes_locked_out", False):
            return Response({"error": "Too many failed logins: this account is locked for a while."},
                            status=status.HTTP_403_FORBIDDEN)
        if user is None or not user.is_active:
            return Response({"error": "Wrong username or password."}, status=status.HTTP_401_UNAUTHORIZED,
                            headers={"WWW-Authenticate": "Token"})
        if AccountFlags.objects.filter(user=user, must_change_password=True).exists():
            # As on the web: a password someone else chose is replaced before anything else is done.
            return Response({"error": "Change your password on the web first (it was set by someone else)."},
                            status=status.HTTP_403_FORBIDDEN)
        request.user = user
        return super().post(request, format=format)


class LogoutView(APIView):
    authentication_classes = [TokenAuthentication]
    permission_classes = [IsAuthenticated]

    @extend_schema(request=None, responses={204: None}, tags=["auth"], summary="Revoke this token")
    def post(self, request, format=None):
        request.auth.delete()
        user_logged_out.send(sender=request.user.__class__, request=request, user=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)


class LogoutAllView(APIView):
    authentication_classes = [TokenAuthentication]
    permission_classes = [IsAuthenticated]

    @extend_schema(request=None, responses={204: None}, tags=["auth"], summary="Revoke every token of this user")
    def post(self, request, format=None):
        request.user.auth_token_set.all().delete()
        user_logged_out.send(sender=request.user.__class__, request=request, user=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)
