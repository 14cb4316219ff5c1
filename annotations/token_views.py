"""A logged-in user's API tokens, on a page: create one (shown once, never stored in clear), revoke one or all.

Thin: knox's AuthToken manager makes the token (its sha512 digest is what is stored) and its expiry
(REST_KNOX TOKEN_TTL); a token is named on the page by its first characters (knox's token_key), which
identify it but cannot be used to authenticate."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods
from knox.models import AuthToken
from knox.settings import knox_settings


@login_required
@require_http_methods(["GET", "POST"])
@never_cache
def api_tokens(request):
    created = None
    if request.method == "POST":
        action = request.POST.get("action")
        if action == "create":
            live = request.user.auth_token_set.filter(expiry__gt=timezone.now()).count()
            limit = knox_settings.TOKEN_LIMIT_PER_USER
            if limit is not None and live >= limit:
                messages.error(request, f"You already have {live} tokens; revoke one first.")
                return redirect("api:tokens")
            created = AuthToken.objects.create(user=request.user)[1]  # shown once, on this answer only
        elif action == "revoke":
            n, _ = request.user.auth_token_set.filter(token_key=request.POST.get("key", "")).delete()
            messages.success(request, "Token revoked." if n else "That token was already gone.")
            return redirect("api:tokens")
        elif action == "revoke-all":
            n, _ = request.user.auth_token_set.all().delete()
            messages.success(request, f"Revoked {n} token{'s' if n != 1 else ''}.")
            return redirect("api:tokens")
        else:
            messages.error(request, "Unknown action.")
            return redirect("api:tokens")
    tokens = request.user.auth_token_set.order_by("-created")
    return render(request, "annotations/api_tokens.html", {
        "tokens": tokens, "created": created, "now": timezone.now(),
        "ttl_days": knox_settings.TOKEN_TTL.days if knox_settings.TOKEN_TTL else None,
    })
